"""The worker side of a batch: run one chunk's lines, record them once, and finalize the batch
when its last chunk is recorded.

Exactly once per line: a chunk's output file is keyed by chunk index (a rerun overwrites it)
and the chunk is counted through one Lua script that adds it to the batch's done-set, so a
chunk redelivered after a worker died, or a late duplicate, never counts twice. A worker crash
re-runs only the chunk it held (late acks); recorded chunks are never run again. A chunk whose
task keeps killing its worker fails its lines with WORKER_LOST after `max_deliveries`.

Finalizing merges the chunk outputs, in manifest order, into `output.jsonl` (responses) and
`errors.jsonl` (errors), then ends the batch: SUCCEEDED, CANCELLED (cancelled while running;
finished lines kept) or FAILED with reason EXPIRED (the completion window passed; finished
lines kept). Whoever records the last chunk finalizes; a crash while finalizing is repaired by
the redelivered task, which finds every chunk recorded and finalizes again (idempotent)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from celery.exceptions import SoftTimeLimitExceeded
from google.protobuf import json_format
from google.protobuf.message import Message

from shared.batch import files
from shared.config import Settings
from shared.errors import JobCancelled, JobmeshError
from shared.jobs.records import JobRecord, State
from shared.jobs.worker_store import WorkerJobStore
from shared.storage.artifacts import ArtifactRef, ArtifactStore, tenant_key

log = logging.getLogger(__name__)

CHUNK_TASK = "jobmesh.batch.v1.run_chunk"


@dataclass(frozen=True)
class LineFunction:
    """A domain's batch function and how its result dict becomes the method's response."""

    run: Callable  # (ctxs, requests) -> [result dict | JobmeshError]
    response: Callable[[dict], Message] | None


def line_error(code: grpc.StatusCode, reason: str, message: str) -> dict:
    return {"code": code.name, "reason": reason, "message": message}


def error_of(exc: BaseException) -> dict:
    if isinstance(exc, JobmeshError):
        return line_error(exc.code, exc.reason, exc.message)
    if isinstance(exc, JobCancelled):
        return line_error(grpc.StatusCode.CANCELLED, "CANCELLED", "the batch was cancelled")
    if isinstance(exc, SoftTimeLimitExceeded):
        return line_error(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED",
                          "the chunk exceeded the task time limit")
    return line_error(grpc.StatusCode.INTERNAL, "INTERNAL",
                      f"worker error: {exc.__class__.__name__}")


def read(artifacts: ArtifactStore, bucket: str, key: str) -> bytes:
    """An object we wrote ourselves (its sha256 was recorded at upload and is verified)."""
    return artifacts.get_bytes(ArtifactRef(bucket, key, "", 0, ""))


def response_json(fn: LineFunction, result: dict) -> dict:
    if fn.response is None:
        return result
    return json_format.MessageToDict(fn.response(result))


class ChunkRunner:
    def __init__(self, store: WorkerJobStore, artifacts: ArtifactStore, settings: Settings,
                 make_context: Callable[[JobRecord], object]):
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.make_context = make_context  # one per line: the batch's record, no progress

    def run(self, envelope: dict, functions: dict[str, LineFunction]) -> None:
        job = self.store.get(str(envelope.get("job_id", "")))
        if job is None or job.batch is None:
            log.warning("batch record missing (deleted or expired); dropping chunk")
            return
        if job.done:
            return
        chunk = int(envelope.get("chunk", -1))
        meta = job.batch.meta
        if self.store.chunk_recorded(job.id, chunk):
            self._maybe_finalize(job)
            return
        deliveries = self.store.count_chunk_delivery(job.id, chunk)
        if job.state is State.QUEUED:
            self.store.transition(job, State.RUNNING)
            job = self.store.get(job.id) or job
        items = json.loads(read(self.artifacts, self.settings.artifacts_bucket,
                                files.chunk_input(job.tenant, job.id, chunk)))
        fn = functions.get(meta.get("task", ""))
        if deliveries > self.settings.max_deliveries:
            outcomes = [JobmeshError(f"the worker died {deliveries - 1} times running this "
                                     "chunk; giving up", reason="WORKER_LOST",
                                     code=grpc.StatusCode.ABORTED)] * len(items)
        elif job.state in (State.CANCELLING, State.CANCELLED):
            outcomes = [_cancelled()] * len(items)
        elif time.time() > float(meta.get("deadline", float("inf"))):
            outcomes = [_expired()] * len(items)
        elif fn is None:
            outcomes = [JobmeshError(f"this worker has no batch function {meta.get('task')}",
                                     reason="UNIMPLEMENTED",
                                     code=grpc.StatusCode.UNIMPLEMENTED)] * len(items)
        else:
            outcomes = self._run_lines(job, fn, items, isolate=deliveries > 1)
        lines, completed, failed = [], 0, 0
        for item, outcome in zip(items, outcomes, strict=True):
            entry = {"custom_id": item["custom_id"], "line": item["line"]}
            if isinstance(outcome, BaseException):
                entry["error"] = error_of(outcome)
                failed += 1
            else:
                entry["response"] = response_json(fn, outcome)
                completed += 1
            lines.append(json.dumps(entry, ensure_ascii=False))
        ref = self.artifacts.put_bytes(self.settings.artifacts_bucket,
                                       files.chunk_output(job.tenant, job.id, chunk),
                                       ("\n".join(lines) + "\n").encode(), files.JSONL)
        self.store.track_artifact_expiry(ref.bucket, ref.key, job.expire_time)
        self.store.record_chunk(job.id, chunk, completed, failed)
        self._maybe_finalize(job)

    def _run_lines(self, job: JobRecord, fn: LineFunction, items: list[dict], isolate: bool
                   ) -> list:
        """All lines in one batch call; after a crash (a redelivery), one at a time, so a
        poison line fails alone instead of taking its chunk down again."""
        groups = [[i] for i in range(len(items))] if isolate else [list(range(len(items)))]
        outcomes: list = [None] * len(items)
        for group in groups:
            ctxs = [self.make_context(job) for _ in group]
            try:
                got = fn.run(ctxs, [items[i]["request"] for i in group])
            except Exception as exc:  # noqa: BLE001 - recorded per line, never lost
                if not isinstance(exc, JobCancelled | SoftTimeLimitExceeded | JobmeshError):
                    log.exception("batch lines crashed")
                got = [exc] * len(group)
            for i, outcome in zip(group, got, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _maybe_finalize(self, job: JobRecord) -> None:
        chunks = int(job.batch.meta.get("chunks", 0))
        if self.store.chunks_recorded(job.id) >= chunks:
            finalize(self.store, self.artifacts, self.settings, job.id)


def finalize(store: WorkerJobStore, artifacts: ArtifactStore, settings: Settings, job_id: str,
             *, expired: bool = False) -> bool:
    """Merges the recorded chunks' outputs and ends the batch. `expired`: called because the
    completion window passed (lines of unrecorded chunks become EXPIRED errors). Returns
    whether this call ended the batch."""
    job = store.get(job_id)
    if job is None or job.batch is None or job.done:
        return False
    store.set_batch_phase(job.id, "FINALIZING")
    meta = dict(job.batch.meta)
    bucket = settings.artifacts_bucket
    recorded = store.recorded_chunks(job.id)
    entries: list[dict] = []
    for chunk in range(int(meta.get("chunks", 0))):
        if chunk in recorded:
            data = read(artifacts, bucket, files.chunk_output(job.tenant, job.id, chunk))
            entries += [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        elif expired:
            items = json.loads(read(artifacts, bucket,
                                    files.chunk_input(job.tenant, job.id, chunk)))
            entries += [{"custom_id": i["custom_id"], "line": i["line"],
                         "error": error_of(_expired())} for i in items]
    entries.sort(key=lambda e: e["line"])
    ok = [e for e in entries if "response" in e]
    bad = [e for e in entries if "error" in e]
    refs = {}
    for name, rows in ((files.OUTPUT_NAME, ok), (files.ERRORS_NAME, bad)):
        key = tenant_key(job.tenant, "jobs", job.id, name)
        body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in rows).encode()
        ref = artifacts.put_bytes(bucket, key, body, files.JSONL)
        store.track_artifact_expiry(ref.bucket, ref.key, job.expire_time)
        refs[name] = ref.to_dict()
    meta["output_file"], meta["error_file"] = refs[files.OUTPUT_NAME], refs[files.ERRORS_NAME]
    counts = {"total": job.batch.total, "completed": len(ok), "failed": len(bad)}
    store.finish_batch(job.id, meta, counts)
    current = store.get(job.id)
    if current is None or current.done:
        return False
    reasons = {e["error"].get("reason") for e in bad}
    if current.state is State.CANCELLING:
        ended = store.transition(current, State.CANCELLED, {"error": {
            "code": grpc.StatusCode.CANCELLED.value[0], "reason": "CANCELLED",
            "message": "cancelled by the client; finished lines are in the output file"}})
    elif expired or "EXPIRED" in reasons:
        ended = store.transition(current, State.FAILED, {"error": {
            "code": grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "reason": "EXPIRED",
            "message": "the batch did not finish within its completion window; finished "
                       "lines are in the output file",
            "metadata": {k: str(v) for k, v in counts.items()}}})
    else:
        if current.state is State.QUEUED:
            store.transition(current, State.RUNNING)
            current = store.get(job.id) or current
        ended = store.transition(current, State.SUCCEEDED, {
            "result": {"request_counts": counts},
            "artifacts": [refs[files.OUTPUT_NAME], refs[files.ERRORS_NAME]]})
    if ended:
        log.info("batch finished", extra={"job_id": job.id, **counts})
    return ended


def _cancelled() -> JobmeshError:
    return JobmeshError("the batch was cancelled before this line ran", reason="CANCELLED",
                        code=grpc.StatusCode.CANCELLED)


def _expired() -> JobmeshError:
    return JobmeshError("the batch's completion window passed before this line ran",
                        reason="EXPIRED", code=grpc.StatusCode.DEADLINE_EXCEEDED)
