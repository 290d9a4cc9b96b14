"""Run a text generation worker: `python -m workers.textgen` consuming `textgen.<device>`."""

from shared.jobs.worker_entry import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main("textgen", "workers.textgen.tasks",
                                 "jobmesh text generation worker (SmolLM2 on ONNX Runtime)."))
