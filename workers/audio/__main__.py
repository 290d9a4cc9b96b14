"""Run an audio worker: `python -m workers.audio [--concurrency N]` consuming `audio.<device>`.

YAMNet and the VAD run one tiny window per call (batch 1, ~0.7 ms for a YAMNet patch, ~0.2 ms
for a VAD window): a second intra-op thread only adds synchronisation (measured: YAMNet 2x
slower with 2 threads). So each child takes one thread, and cores are used by running more
children (`--concurrency`) instead.

The same holds for numpy's OpenBLAS (the YAMNet log-mel front end's matrix product). At its
default of one thread per core, tagging the bench's clips kept 1.93 cores busy for 1161.8
windows/s; at one thread, 1.0 core for 1180.2 (foreign load 0.41 and 0.24 cores; `python -m
bench.audio --rebatch-only --no-write` without and with OPENBLAS_NUM_THREADS=1). Under 1.1-1.4
cores of foreign load the default was 2.5-3.6x slower in-process and 2.1-2.5x slower through
the mesh (K concurrent Tag calls: 43.0-51.6 against 89.8-120.5 windows/s; bench/results/
audio_rebatch.md). So OPENBLAS_NUM_THREADS is 1 unless the environment sets it. It must be
set before numpy loads, hence here and not in shared/config.py."""

import os

# Before anything loads numpy: the prefork children inherit the library as loaded here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from shared.jobs.worker_entry import worker_main  # noqa: E402  (after the OpenBLAS setting)

if __name__ == "__main__":
    os.environ.setdefault("JOBMESH_ORT_THREADS", "1")
    raise SystemExit(worker_main("audio", "workers.audio.tasks",
                                 "jobmesh audio worker (YAMNet tagging, silero VAD)."))
