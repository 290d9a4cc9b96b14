"""The `python -m workers.<domain>` entry point every worker shares: a prefork Celery worker
(prefetch 1, late acks) on `<domain>.<JOBMESH_DEVICE>`, with multiprocess /metrics and the cores
split between children."""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile


def worker_main(domain: str, tasks_module: str, description: str,
                argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m workers.{domain}", description=(
        f"{description} A prefork Celery worker (prefetch 1, late acks) on queue "
        f"{domain}.<JOBMESH_DEVICE>, loading models from the registry."))
    parser.add_argument("--concurrency", type=int, help="child processes (default "
                        "JOBMESH_WORKER_CONCURRENCY or 1)")
    parser.add_argument("--name", default=f"{domain}@%h", help="Celery node name")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (default "
                        "JOBMESH_METRICS_PORT or the domain's 92xx port; 0 disables)")
    args = parser.parse_args(argv)

    # Children write their samples to files that the main process's /metrics aggregates; the
    # folder must exist before prometheus_client is imported anywhere.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        import atexit
        import shutil

        folder = tempfile.mkdtemp(prefix=f"jobmesh-{domain}-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, True)

    from shared import logs, metrics
    from shared.config import WORKER_METRICS_PORTS

    tasks = importlib.import_module(tasks_module)
    app, settings = tasks.app, tasks.settings
    children = args.concurrency or settings.worker_concurrency
    # Split the cores between prefork children instead of letting each take them all.
    os.environ.setdefault("JOBMESH_ORT_THREADS", str(max(1, (os.cpu_count() or 1) // children)))

    logs.configure(settings.log_level, settings.log_json)
    port = args.metrics_port if args.metrics_port is not None else (
        WORKER_METRICS_PORTS[domain] if settings.metrics_port < 0 else settings.metrics_port)
    metrics.serve_multiprocess(port)
    app.worker_main([
        "worker", "-Q", settings.queue(domain), "-n", args.name, "--pool", "prefork",
        "-c", str(children), "--loglevel", settings.log_level, "--without-gossip",
        "--without-mingle", "--without-heartbeat",
    ])
    return 0
