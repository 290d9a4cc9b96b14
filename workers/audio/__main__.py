"""Run an audio worker: `python -m workers.audio [--concurrency N]` consuming `audio.<device>`.

YAMNet and the VAD run one tiny window per call (batch 1, ~0.7 ms for a YAMNet patch, ~0.2 ms
for a VAD window): a second intra-op thread only adds synchronisation (measured: YAMNet 2x
slower with 2 threads). So each child takes one thread, and cores are used by running more
children (`--concurrency`) instead."""

import os

from shared.jobs.worker_entry import worker_main

if __name__ == "__main__":
    os.environ.setdefault("JOBMESH_ORT_THREADS", "1")
    raise SystemExit(worker_main("audio", "workers.audio.tasks",
                                 "jobmesh audio worker (YAMNet tagging, silero VAD)."))
