"""`WorkerJobStore`: what a worker does to a job record (count a delivery, start, report
progress, finish, dead-letter). Synchronous, because Celery prefork children are."""

from __future__ import annotations

import json
import time

import redis

from shared import metrics
from shared.jobs import records as r
from shared.jobs.records import JobRecord, State


class WorkerJobStore:
    def __init__(self, client: redis.Redis):
        self.redis = client
        self._transition = client.register_script(r.TRANSITION_LUA)
        self._progress = client.register_script(r.PROGRESS_LUA)
        self._chunk_done = client.register_script(r.CHUNK_DONE_LUA)

    def get(self, job_id: str) -> JobRecord | None:
        h = self.redis.hgetall(r.job_key(job_id))
        return JobRecord.from_hash(h) if h else None

    def state(self, job_id: str) -> State | None:
        s = self.redis.hget(r.job_key(job_id), "state")
        return State(r._s(s)) if s else None

    def count_delivery(self, job_id: str) -> int:
        """Increments and returns how many times a worker has received this job's task."""
        return int(self.redis.hincrby(r.job_key(job_id), "deliveries", 1))

    def transition(self, job: JobRecord, target: State, extra: dict | None = None) -> bool:
        """Moves the job if its current state allows it; False means someone got there first
        (cancelled, or a duplicate delivery already finished it). An applied terminal move is
        counted in `jobmesh_jobs_finished_total`, so each job is counted once."""
        keys = [r.job_key(job.id), r.events_key(job.id), r.counts_key(job.domain)]
        res = self._transition(keys=keys, args=r.transition_args(target, extra))
        if res[0] and target is State.RUNNING:  # started: its task message was not lost
            self.redis.zrem(r.NOT_STARTED_KEY, job.id)
        if res[0] and target.terminal:
            metrics.job_finished(job.domain, target.value, (extra or {}).get("error"))
        return bool(res[0])

    def progress(self, job_id: str, done: int, total: int, message: str = "") -> None:
        self._progress(keys=[r.job_key(job_id), r.events_key(job_id)],
                       args=[done, total, message, repr(r.now())])

    def publish_delta(self, job_id: str, text: str, token_ids: list[int]) -> None:
        """Streams newly decoded text to whoever watches the job (GenerateStream)."""
        self.redis.xadd(r.events_key(job_id), {"type": "delta", "text": text,
                                               "token_ids": json.dumps(token_ids)},
                        maxlen=r.EVENTS_MAXLEN, approximate=True)

    # -- batches ---------------------------------------------------------------------------
    def count_chunk_delivery(self, job_id: str, chunk: int) -> int:
        """Increments and returns how many times a worker has received this chunk's task."""
        key = r.chunk_deliveries_key(job_id)
        n = int(self.redis.hincrby(key, str(chunk), 1))
        ttl = self.redis.pttl(r.job_key(job_id))
        if ttl > 0:
            self.redis.pexpire(key, ttl)
        return n

    def chunk_recorded(self, job_id: str, chunk: int) -> bool:
        return bool(self.redis.sismember(r.chunks_done_key(job_id), str(chunk)))

    def chunks_recorded(self, job_id: str) -> int:
        return int(self.redis.scard(r.chunks_done_key(job_id)))

    def recorded_chunks(self, job_id: str) -> set[int]:
        return {int(r._s(m)) for m in self.redis.smembers(r.chunks_done_key(job_id))}

    def record_chunk(self, job_id: str, chunk: int, completed: int, failed: int) -> bool:
        """Counts the chunk's lines once; False when it was already counted."""
        res = self._chunk_done(keys=[r.job_key(job_id), r.events_key(job_id),
                                     r.chunks_done_key(job_id)],
                               args=[chunk, completed, failed, repr(r.now())])
        return bool(res[0])

    def set_batch_phase(self, job_id: str, phase: str) -> None:
        self.redis.hset(r.job_key(job_id), "batch_phase", phase)

    def finish_batch(self, job_id: str, meta: dict, counts: dict) -> None:
        """Records the result files and the final counts (phase DONE) before the state moves,
        so whoever sees the terminal state also sees the files."""
        if not self.redis.exists(r.job_key(job_id)):
            return  # deleted meanwhile: do not recreate a partial record
        self.redis.hset(r.job_key(job_id), mapping={
            "batch": json.dumps(meta), "batch_phase": "DONE",
            "batch_completed": counts["completed"], "batch_failed": counts["failed"],
            "progress_done": counts["completed"] + counts["failed"]})
        self.redis.zrem(r.BATCH_DEADLINES_KEY, job_id)

    def dead_letter(self, queue: str, job_id: str, task: str, envelope: dict) -> None:
        """Parks the message for an operator; kept as long as job records are."""
        entry = json.dumps({"job_id": job_id, "task": task, "time": time.time(),
                            "envelope": envelope})
        self.redis.lpush(r.dead_letter_key(queue), entry)
        metrics.DEAD_LETTERS.labels(queue=queue).inc()

    def track_artifact_expiry(self, bucket: str, key: str, expire_at: float) -> None:
        self.redis.zadd(r.ARTIFACT_EXPIRY_KEY, {f"{bucket}/{key}": expire_at})
