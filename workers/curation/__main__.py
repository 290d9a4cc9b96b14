"""Run a curation worker: `python -m workers.curation` consuming `curation.<device>`."""

from shared.jobs.worker_entry import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main("curation", "workers.curation.tasks",
                                 "jobmesh data curation worker (filters, dedup, reports)."))
