"""Run an audio worker: `python -m workers.audio [--concurrency N]` consuming `audio.<device>`."""

from shared.jobs.worker_entry import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main("audio", "workers.audio.tasks",
                                 "jobmesh audio worker (YAMNet tagging, silero VAD)."))
