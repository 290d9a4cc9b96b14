"""A SubmitTranscribe job longer than `JOBMESH_AUDIO_CHUNK_SECONDS`, as one task per chunk, so no
task runs past the domain's time limit and no task holds more than one chunk's samples.

1. The job's own task (`start`) decodes the file once, streamed, into a loudness profile (RMS
   per 100 ms: bounded memory, ~4 bytes per 100 ms), cuts it at quiet moments into chunks
   (`chunking.plan_chunks`), writes the plan next to the job's artifacts, queues one
   `transcribe_chunk` task per chunk without a result yet, and returns DEFERRED: the job stays
   RUNNING. A redelivered job task reuses the plan and queues only the chunks left.
2. A chunk task decodes only its stretch (`decode.iter_blocks(start_s=, end_s=)`), finds its
   speech with silero VAD, transcribes that, moves the times to the recording's, and writes its
   part (the completion marker: written last, keyed by job and chunk, so a redelivery
   overwrites it). It then counts the chunk once (a Redis set) and reports progress in
   seconds of audio. A chunk that kills its worker `max_deliveries` times, a decoding error or
   a crash records an error for the chunk instead.
3. Whoever counts the last chunk finishes: the parts in chunk order make one transcript
   (SUCCEEDED), or the first chunk error fails the job, or a cancel cancels it. Transitions are
   validated, so two finishers record one outcome.

The same fan-out shape as the curation worker's shards, on the same kit: `DEFERRED`,
`count_chunk_delivery`, validated transitions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from shared import logs
from shared.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    JobmeshError,
    NotFound,
)
from shared.jobs.records import JobRecord, State
from shared.jobs.worker_kit import DEFERRED, JobContext, WorkerKit
from shared.storage.artifacts import ArtifactRef, tenant_key
from workers.audio.chunking import loudness, merge_transcripts, offset_transcript, plan_chunks
from workers.audio.decode import AudioError, AudioInfo, AudioLimits, iter_blocks
from workers.audio.streaming import vad_segments

log = logging.getLogger(__name__)

CHUNK_TASK = "jobmesh.audio.v1.transcribe_chunk"
RATE = 16_000
BLOCK_SECONDS = 30.0
VAD_OPTIONS = {"threshold": 0.5, "min_speech_ms": 250, "min_silence_ms": 100}


class ChunkedTranscription:
    """Registers the chunk task on ``kit``'s app. ``transcriber()`` and ``vad()`` return
    ``(model, "name@version")`` for what the registry serves now."""

    def __init__(self, kit: WorkerKit, limits: AudioLimits, transcriber: Callable,
                 vad: Callable):
        self.kit = kit
        self.settings = kit.settings
        self.limits = limits
        self.transcriber = transcriber
        self.vad = vad

        @kit.app.task(name=CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
        def _chunk(task_self, envelope: dict) -> None:
            self.run_chunk(str(envelope.get("job_id", "")), int(envelope.get("chunk", -1)))

    # -- keys --------------------------------------------------------------------------------
    def _plan_key(self, job: JobRecord) -> str:
        return tenant_key(job.tenant, "jobs", job.id, "transcript", "plan.json")

    def _part_key(self, job: JobRecord, index: int) -> str:
        return tenant_key(job.tenant, "jobs", job.id, "transcript", f"part-{index:05d}.json")

    @staticmethod
    def _done_key(job_id: str) -> str:
        return f"jobmesh:audio:{job_id}:chunks_done"

    @staticmethod
    def _failed_key(job_id: str) -> str:
        return f"jobmesh:audio:{job_id}:chunks_failed"

    def _get_json(self, key: str):
        try:
            return json.loads(self.kit.artifacts().get_bytes(
                ArtifactRef(self.settings.artifacts_bucket, key)))
        except NotFound:
            return None

    def _put_json(self, job: JobRecord, key: str, value) -> None:
        self.kit.artifacts().put_bytes(self.settings.artifacts_bucket, key,
                                       json.dumps(value).encode(), "application/json")
        self.kit.store().track_artifact_expiry(self.settings.artifacts_bucket, key,
                                               job.expire_time)

    # -- 1. the job's task ---------------------------------------------------------------------
    def start(self, ctx: JobContext, request: dict, data: bytes, field: str, info: AudioInfo,
              meta: dict):
        """Plans (or re-reads the plan), queues the chunks not done, returns DEFERRED."""
        job, store = ctx.job, ctx.store
        plan = self._get_json(self._plan_key(job))
        if plan is None:
            ref = request.get("audio_ref") or ctx.put_artifact(
                "input", data, "application/octet-stream").to_dict()
            loud = self._loudness(ctx, data, field)
            plan = {"audio_ref": ref, "options": request.get("options", {}), "info": meta,
                    "chunks": plan_chunks(loud, info.seconds,
                                          self.settings.audio_chunk_seconds)}
            self._put_json(job, self._plan_key(job), plan)
        ttl = max(60, int(job.expire_time - time.time()))
        for key in (self._done_key(job.id), self._failed_key(job.id)):
            store.redis.expire(key, ttl)
        pending = []
        for index in range(len(plan["chunks"])):
            if store.redis.sismember(self._done_key(job.id), index):
                continue
            if self.kit.artifacts().exists(self.settings.artifacts_bucket,
                                           self._part_key(job, index)):  # done before a crash
                store.redis.sadd(self._done_key(job.id), index)
                continue
            pending.append(index)
        self._progress(job, plan)
        log.info("transcription fanned out", extra={"chunks": len(plan["chunks"]),
                                                    "pending": len(pending)})
        for index in pending:
            self.kit.app.send_task(CHUNK_TASK, args=[{"job_id": job.id, "chunk": index}],
                                   queue=job.queue)
        if not pending:
            self._finish(job.id)
        return DEFERRED

    def _loudness(self, ctx: JobContext, data: bytes, field: str) -> np.ndarray:
        def blocks():
            for block in iter_blocks(data, RATE, BLOCK_SECONDS, self.limits):
                ctx.check_cancelled()
                yield block

        try:
            return loudness(blocks(), RATE)
        except AudioError as exc:
            raise InvalidArgument.for_field(field, exc.problem, reason=exc.reason) from exc

    # -- 2. a chunk's task ---------------------------------------------------------------------
    def run_chunk(self, job_id: str, index: int) -> None:
        store = self.kit.store()
        job = store.get(job_id) if job_id else None
        if job is None or job.done:
            return
        logs.job_id_var.set(job.id)
        logs.tenant_var.set(job.tenant)
        if store.redis.sismember(self._done_key(job.id), index):
            self._maybe_finish(job)
            return
        plan = self._get_json(self._plan_key(job))
        if plan is None or not 0 <= index < len(plan["chunks"]):
            return  # the job was deleted meanwhile
        start, end = plan["chunks"][index]
        meta = {"chunk": str(index), "start_seconds": f"{start:.3f}"}
        deliveries = store.count_chunk_delivery(job.id, index)
        error = None
        if deliveries > self.settings.max_deliveries:
            error = JobmeshError(f"the chunk at {start:.1f} s killed the worker "
                                 f"{deliveries - 1} times; giving up", reason="WORKER_LOST",
                                 metadata=meta)
        elif store.state(job.id) not in (State.CANCELLING, State.CANCELLED):
            try:
                self._transcribe_chunk(job, plan, index)
            except AudioError as exc:
                error = InvalidArgument.for_field("audio_ref", exc.problem, reason=exc.reason)
            except SoftTimeLimitExceeded:
                error = DeadlineExceeded(
                    f"the chunk at {start:.1f} s exceeded the task time limit "
                    f"({self.settings.task_time_limit_s} s): lower "
                    "JOBMESH_AUDIO_CHUNK_SECONDS", metadata=meta)
            except JobmeshError as exc:
                error = exc
            except Exception as exc:  # a bug fails the job; it must not leave it RUNNING
                log.exception("transcription chunk crashed", extra=meta)
                error = Internal(f"chunk at {start:.1f} s: worker error: "
                                 f"{exc.__class__.__name__}", metadata=meta)
        if error is not None:
            store.redis.hset(self._failed_key(job.id), index, json.dumps(error.to_dict()))
        store.redis.sadd(self._done_key(job.id), index)
        self._progress(job, plan)
        self._maybe_finish(job)

    def _transcribe_chunk(self, job: JobRecord, plan: dict, index: int) -> None:
        start, end = plan["chunks"][index]
        t, version = self.transcriber()
        data = self.kit.artifacts().get_bytes(ArtifactRef.from_dict(plan["audio_ref"]),
                                              max_bytes=self.settings.max_upload_bytes)
        # Only this stretch is decoded: the chunk's samples are all a task holds.
        wave = np.concatenate([np.zeros(0, np.float32), *iter_blocks(
            data, RATE, BLOCK_SECONDS, self.limits, start_s=start, end_s=end)])
        opts = plan["options"]
        speech = None
        if opts.get("vad", True):
            v, _ = self.vad()
            speech = vad_segments(v, [wave], RATE, **VAD_OPTIONS)
        out = t.transcribe(wave, speech, language=opts.get("language", "en"),
                           beam_size=int(opts.get("beam_size", 1)))
        self._put_json(job, self._part_key(job, index),
                       {**offset_transcript(out, start), "model_version": version})

    def _progress(self, job: JobRecord, plan: dict) -> None:
        done = {int(i) for i in self.kit.store().redis.smembers(self._done_key(job.id))}
        seconds = sum(b - a for i, (a, b) in enumerate(plan["chunks"]) if i in done)
        total = plan["info"]["seconds"]
        self.kit.store().progress(job.id, int(seconds), int(total + 0.999),
                                  f"seconds of audio ({len(done)} of {len(plan['chunks'])} "
                                  "chunks)")

    # -- 3. the last chunk finishes --------------------------------------------------------------
    def _maybe_finish(self, job: JobRecord) -> None:
        plan = self._get_json(self._plan_key(job))
        if plan is None or self.kit.store().redis.scard(self._done_key(job.id)) < len(
                plan["chunks"]):
            return
        try:
            self._finish(job.id)
        except Exception as exc:  # S3 gone while merging, or a bug: FAIL, never hang
            log.exception("finishing a chunked transcription failed")
            err = exc if isinstance(exc, JobmeshError) else Internal(
                f"merging the chunks failed: {exc.__class__.__name__}")
            current = self.kit.store().get(job.id)
            if current is not None and not current.done:
                self.kit.store().transition(current, State.FAILED, {"error": err.to_dict()})

    def _finish(self, job_id: str) -> None:
        store = self.kit.store()
        job = store.get(job_id)
        if job is None or job.done:
            return
        if store.state(job.id) in (State.CANCELLING, State.CANCELLED):
            store.transition(job, State.CANCELLED, {"error": {
                "code": 1, "reason": "CANCELLED", "message": "cancelled by the client"}})
            return
        failures = store.redis.hgetall(self._failed_key(job.id))
        if failures:
            store.transition(job, State.FAILED, {
                "error": json.loads(failures[sorted(failures, key=int)[0]])})
            return
        plan = self._get_json(self._plan_key(job))
        parts = [self._get_json(self._part_key(job, i)) for i in range(len(plan["chunks"]))]
        if any(p is None for p in parts):
            raise Internal("a finished chunk's transcript is missing")
        result = {**merge_transcripts(parts), "info": plan["info"],
                  "model_version": parts[-1]["model_version"], "chunks": len(parts)}
        store.transition(job, State.SUCCEEDED, {"result": result})
        log.info("chunked transcription finished", extra={"chunks": len(parts)})
