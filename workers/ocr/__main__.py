"""Run an OCR worker: `python -m workers.ocr [--concurrency N]` consuming `ocr.<device>`."""

from shared.jobs.worker_entry import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main("ocr", "workers.ocr.tasks",
                                 "jobmesh OCR worker (PP-OCR: images, PDFs, TIFFs)."))
