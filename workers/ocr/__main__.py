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
    args = parser.parse_args(argv)

    import os

    from shared import logs
    from workers.ocr.tasks import app, settings

    children = args.concurrency or settings.worker_concurrency
    # Split the cores between prefork children instead of letting each take them all.
    os.environ.setdefault("JOBMESH_ORT_THREADS", str(max(1, (os.cpu_count() or 1) // children)))

    logs.configure(settings.log_level, settings.log_json)
    app.worker_main([
        "worker", "-Q", settings.queue("ocr"), "-n", args.name, "--pool", "prefork",
        "-c", str(children),
        "--loglevel", settings.log_level, "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
