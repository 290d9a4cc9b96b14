"""Run an OCR worker: `python -m workers.ocr [--concurrency N]` consuming `ocr.<device>`."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.ocr",
        description="jobmesh OCR worker: a prefork Celery worker (prefetch 1, late acks) on "
                    "queue ocr.<JOBMESH_DEVICE>, running PP-OCR from the model registry.")
    parser.add_argument("--concurrency", type=int, help="child processes (default "
                        "JOBMESH_WORKER_CONCURRENCY or 1)")
    parser.add_argument("--name", default="ocr@%h", help="Celery node name")
    parser.add_argument("--metrics-port", type=int,
                        help="Prometheus port (default JOBMESH_METRICS_PORT or 9201; 0 disables)")
    args = parser.parse_args(argv)

    import os
    import tempfile

    # Children write their samples to files that the main process's /metrics aggregates; the
    # folder must exist before prometheus_client is imported anywhere.
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        import atexit
        import shutil

        folder = tempfile.mkdtemp(prefix="jobmesh-ocr-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, True)

    from shared import logs, metrics
    from shared.config import WORKER_METRICS_PORTS
    from workers.ocr.tasks import app, settings

    children = args.concurrency or settings.worker_concurrency
    # Split the cores between prefork children instead of letting each take them all.
    os.environ.setdefault("JOBMESH_ORT_THREADS", str(max(1, (os.cpu_count() or 1) // children)))

    logs.configure(settings.log_level, settings.log_json)
    port = args.metrics_port if args.metrics_port is not None else (
        WORKER_METRICS_PORTS["ocr"] if settings.metrics_port < 0 else settings.metrics_port)
    metrics.serve_multiprocess(port)
    app.worker_main([
        "worker", "-Q", settings.queue("ocr"), "-n", args.name, "--pool", "prefork",
        "-c", str(children),
        "--loglevel", settings.log_level, "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
