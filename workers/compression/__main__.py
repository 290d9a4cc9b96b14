"""Run a compression worker: `python -m workers.compression` consuming `compression.<device>`.

Recipes on a language model quantize or prune ~650 MB graphs and evaluate both versions, which
takes minutes on a CPU: this domain's task time limit defaults to 30 minutes (other domains
keep 5)."""

import os

from shared.jobs.worker_entry import worker_main

if __name__ == "__main__":
    os.environ.setdefault("JOBMESH_TASK_TIME_LIMIT_S", "1800")
    raise SystemExit(worker_main("compression", "workers.compression.tasks",
                                 "jobmesh model compression worker (INT8, FP16, 2:4, TensorRT)."))
