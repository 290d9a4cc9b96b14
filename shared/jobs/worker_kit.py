"""`WorkerKit`: turns a pure job function into a Celery task that keeps the job record honest.

A task body receives `(ctx, request)` and returns the JSON result. Around it the kit:
counts the delivery (a task that keeps killing its worker FAILS with WORKER_LOST after
`max_deliveries` and goes to the dead-letter list), skips late duplicates of finished jobs and
jobs cancelled while queued, moves the job to RUNNING / SUCCEEDED / FAILED / CANCELLED through
validated transitions, and beats on the queue so gateways know a consumer is alive.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import redis
from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded
from opentelemetry.trace import SpanKind

from shared import logs, metrics, tracing
from shared.batch.runner import CHUNK_TASK, ChunkRunner, LineFunction
from shared.config import Settings
from shared.errors import DeadlineExceeded, Internal, JobCancelled, JobmeshError
from shared.jobs.consumers import Heartbeat
from shared.jobs.records import JobRecord, State
from shared.jobs.worker_store import WorkerJobStore
from shared.storage.artifacts import ArtifactRef, ArtifactStore, tenant_key

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    job: JobRecord
    store: WorkerJobStore
    settings: Settings
    _artifacts: Callable[[], ArtifactStore]
    _last_check: float = 0.0
    _stop: bool = False
    produced: list[ArtifactRef] = field(default_factory=list)

    @property
    def artifacts(self) -> ArtifactStore:
        return self._artifacts()

    def progress(self, done: int, total: int, message: str = "") -> None:
        self.store.progress(self.job.id, done, total, message)

    def should_stop(self) -> bool:
        """True once a client asked to cancel, or the job already ended elsewhere (a batch
        whose completion window passed, a record deleted): work for it would be thrown away.
        Checked at most every 100 ms (one HGET)."""
        if not self._stop and time.monotonic() - self._last_check > 0.1:
            self._last_check = time.monotonic()
            self._stop = self.store.state(self.job.id) not in (State.QUEUED, State.RUNNING)
        return self._stop

    def check_cancelled(self) -> None:
        if self.should_stop():
            raise JobCancelled()

    def put_artifact(self, name: str, data: bytes, content_type: str) -> ArtifactRef:
        """Writes `tenants/<tenant>/jobs/<id>/<name>`. Keyed by job id, so a redelivered task
        overwrites rather than duplicates; expires with the job."""
        key = tenant_key(self.job.tenant, "jobs", self.job.id, name)
        ref = self.artifacts.put_bytes(self.settings.artifacts_bucket, key, data, content_type)
        self.store.track_artifact_expiry(ref.bucket, ref.key, self.job.expire_time)
        self.produced.append(ref)
        return ref


class LineContext(JobContext):
    """A batch line's context: the batch's record (cancel checks see the batch), but no
    progress of its own (the batch counts recorded chunks) and no artifacts (the line's
    response goes to the batch's output file)."""

    def progress(self, done: int, total: int, message: str = "") -> None:
        pass

    def put_artifact(self, name: str, data: bytes, content_type: str) -> ArtifactRef:
        raise JobmeshError("batch lines return their response; they do not write artifacts",
                           reason="FAILED_PRECONDITION", code=grpc.StatusCode.FAILED_PRECONDITION)


class Deferred:
    """What a job function returns when it handed the job to other tasks (a fan-out, e.g. one
    task per shard): the job stays RUNNING, and the last of those tasks settles it."""


DEFERRED = Deferred()

JobFunction = Callable[[JobContext, dict], dict]
# One result dict or JobmeshError per context, in order.
BatchFunction = Callable[[list[JobContext], list[dict]], list]


def _one(fn: BatchFunction, ctx: JobContext, request: dict) -> dict:
    [outcome] = fn([ctx], [request])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class WorkerKit:
    """One per worker app. Redis and S3 clients are created lazily per process (after fork)."""

    def __init__(self, app: Celery, domain: str, settings: Settings):
        self.app = app
        self.domain = domain
        self.settings = settings
        self.queues = [settings.queue(domain)]
        for queue in self.queues:  # exposed at 0, so `increase()` in an alert sees the first one
            metrics.DEAD_LETTERS.labels(queue=queue)
        self._pid = -1
        self._store: WorkerJobStore | None = None
        self._artifacts: ArtifactStore | None = None
        self._heartbeat: Heartbeat | None = None
        # Batch functions by task name: CreateBatch chunks run their lines with them.
        self.line_functions: dict[str, LineFunction] = {}
        self._register_chunk_task()
        signals.worker_ready.connect(self._on_ready, weak=False)
        signals.worker_process_init.connect(self._on_child, weak=False)
        signals.worker_shutdown.connect(self._on_shutdown, weak=False)

    # -- per-process clients -------------------------------------------------------------
    def store(self) -> WorkerJobStore:
        if self._store is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._store = WorkerJobStore(redis.Redis.from_url(self.settings.redis_url))
            self._artifacts = None
        return self._store

    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            self._artifacts = ArtifactStore.from_settings(self.settings)
        return self._artifacts

    # -- liveness ------------------------------------------------------------------------
    def _on_ready(self, sender=None, **_):
        worker_id = f"{getattr(sender, 'hostname', socket.gethostname())}:{os.getpid()}"
        self._heartbeat = Heartbeat(redis.Redis.from_url(self.settings.redis_url), self.queues,
                                    worker_id, self.settings.consumer_ttl_s)
        self._heartbeat.start()
        log.info("worker ready", extra={"queues": ",".join(self.queues), "worker": worker_id})

    def _on_child(self, **_):
        # After the fork: an exporter's threads do not survive it.
        tracing.configure_from_settings(f"jobmesh-worker-{self.domain}", self.settings)

    def _on_shutdown(self, **_):
        if self._heartbeat:
            self._heartbeat.stop()

    # -- tasks ---------------------------------------------------------------------------
    def task(self, name: str) -> Callable[[JobFunction], object]:
        """Registers `fn(ctx, request) -> result` as the Celery task `name`; the message is the
        JSON envelope `{"job_id": ..., "request": {...}}` the dispatcher sends."""

        def register(fn: JobFunction):
            @self.app.task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True)
            def _task(task_self, envelope: dict):
                with _span(name, task_self, envelope):
                    return self.run(name, fn, envelope)

            return _task

        return register

    def batch_task(self, name: str, response: Callable | None = None
                   ) -> Callable[[BatchFunction], object]:
        """Registers `fn(ctxs, requests) -> [result | JobmeshError, ...]` as the Celery task
        `name`, for messages that carry several jobs (`{"jobs": [{"job_id", "request"}, ...]}`,
        sent by the gateway's coalescer). One result or error per job, in order. The same
        function runs the lines of batch jobs (CreateBatch) whose method names this task;
        `response(result) -> message` makes their output lines proto-JSON."""

        def register(fn: BatchFunction):
            self.line_functions[name] = LineFunction(fn, response)

            @self.app.task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True)
            def _task(task_self, envelope: dict):
                with _span(name, task_self, envelope):
                    return self.run_batch(name, fn, envelope)

            return _task

        return register

    def _register_chunk_task(self) -> None:
        @self.app.task(name=CHUNK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
        def _chunk(task_self, envelope: dict):
            with _span(CHUNK_TASK, task_self, envelope):
                self._run_chunk(envelope)

    def _run_chunk(self, envelope: dict) -> None:
        store = self.store()
        logs.job_id_var.set(str(envelope.get("job_id", "")))
        runner = ChunkRunner(store, self.artifacts(), self.settings,
                             lambda job: LineContext(job, store, self.settings, self.artifacts))
        runner.run(envelope, self.line_functions)

    def run(self, name: str, fn: JobFunction, envelope: dict) -> None:
        job = self._admit(name, str(envelope.get("job_id", "")), envelope)
        if job is None:
            return
        ctx = JobContext(job, self.store(), self.settings, self.artifacts)
        try:
            outcome: dict | BaseException = fn(ctx, envelope.get("request", {}))
        except (JobCancelled, SoftTimeLimitExceeded, JobmeshError) as exc:
            outcome = exc
        except Exception as exc:
            self._settle(ctx, exc)
            log.exception("job crashed")
            raise
        self._settle(ctx, outcome)

    def run_batch(self, name: str, fn: BatchFunction, envelope: dict) -> None:
        """First delivery: every job runs in one batch. A redelivery means the batch killed its
        worker, so the jobs run one by one: a poison input then fails only its own job, and the
        ones finished before it are not run again."""
        items = [i for i in envelope.get("jobs", []) if isinstance(i, dict)]
        store = self.store()
        records = [store.get(str(i.get("job_id", ""))) for i in items]
        if any(r is not None and r.deliveries > 0 for r in records):
            log.info("batch redelivered; isolating its jobs", extra={"jobs": len(items)})
            for item in items:
                self.run(name, lambda ctx, req: _one(fn, ctx, req), item)
            return
        admitted = [(job, item.get("request", {})) for job, item in
                    ((self._admit(name, str(i.get("job_id", "")), i), i) for i in items)
                    if job is not None]
        if not admitted:
            return
        ctxs = [JobContext(job, store, self.settings, self.artifacts) for job, _ in admitted]
        logs.job_id_var.set(",".join(c.job.id for c in ctxs))
        try:
            outcomes: list = fn(ctxs, [req for _, req in admitted])
        except (JobCancelled, SoftTimeLimitExceeded, JobmeshError) as exc:
            outcomes = [exc] * len(ctxs)
        except Exception as exc:
            for ctx in ctxs:
                self._settle(ctx, exc)
            log.exception("batch crashed")
            raise
        for ctx, outcome in zip(ctxs, outcomes, strict=True):
            self._settle(ctx, outcome)

    def _admit(self, name: str, job_id: str, envelope: dict) -> JobRecord | None:
        """Counts the delivery and moves the job to RUNNING; None when it must not run (gone,
        finished, cancelled, or a poison message given up on)."""
        store = self.store()
        job = store.get(job_id) if job_id else None
        if job is None:
            log.warning("job record missing (deleted or expired); dropping task",
                        extra={"task": name, "job_id": job_id})
            return None
        logs.job_id_var.set(job.id)
        logs.tenant_var.set(job.tenant)
        if job.done:
            log.info("late duplicate of a finished job ignored", extra={"state": job.state})
            return None
        deliveries = store.count_delivery(job.id)
        if deliveries > self.settings.max_deliveries:
            self._give_up(job, name, envelope, deliveries)
            return None
        if job.state is State.CANCELLING:
            store.transition(job, State.CANCELLED, {"error": _cancelled()})
            return None
        if not store.transition(job, State.RUNNING):
            log.info("job not startable", extra={"state": str(store.state(job.id))})
            return None
        if deliveries == 1:
            metrics.QUEUE_DURATION.labels(queue=job.queue).observe(time.time() - job.create_time)
        return job

    def _settle(self, ctx: JobContext, outcome: dict | BaseException) -> None:
        """Records how a job ended; a refused transition means a cancel or a duplicate got
        there first, and there is nothing to undo."""
        store, job = self.store(), ctx.job
        if isinstance(outcome, Deferred):
            return
        if isinstance(outcome, JobCancelled) or (isinstance(outcome, dict) and ctx._stop):
            store.transition(job, State.CANCELLED, {"error": _cancelled()})
        elif isinstance(outcome, SoftTimeLimitExceeded):
            err = DeadlineExceeded(f"task exceeded its {self.settings.task_time_limit_s}s limit")
            store.transition(job, State.FAILED, {"error": err.to_dict()})
        elif isinstance(outcome, JobmeshError):
            store.transition(job, State.FAILED, {"error": outcome.to_dict()})
            log.info("job failed", extra={"reason": outcome.reason, "error": outcome.message})
        elif isinstance(outcome, BaseException):
            err = Internal(f"worker error: {outcome.__class__.__name__}")
            store.transition(job, State.FAILED, {"error": err.to_dict()})
        elif not store.transition(job, State.SUCCEEDED, {
                "result": outcome or {}, "artifacts": [a.to_dict() for a in ctx.produced]}):
            log.info("result not recorded", extra={"state": str(store.state(job.id))})

    def _give_up(self, job: JobRecord, name: str, envelope: dict, deliveries: int) -> None:
        err = JobmeshError(
            f"the worker died {deliveries - 1} times running this job; giving up",
            reason="WORKER_LOST", metadata={"deliveries": str(deliveries - 1)},
            code=grpc.StatusCode.ABORTED)
        if self.store().transition(job, State.FAILED, {"error": err.to_dict()}):
            self.store().dead_letter(job.queue, job.id, name, envelope)
            log.error("poison message dead-lettered", extra={"task": name,
                                                               "deliveries": deliveries - 1})


def _span(name: str, task_self, envelope: dict):
    """The task's CONSUMER span, a child of the context the gateway put in the headers."""
    headers = getattr(task_self.request, "headers", None) or {}
    job = envelope.get("job_id") or ",".join(
        str(j.get("job_id", "")) for j in envelope.get("jobs", []) if isinstance(j, dict))
    return tracing.tracer().start_as_current_span(
        f"task {name}", context=tracing.extract(headers), kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "celery", "jobmesh.job_id": str(job)})


def _cancelled() -> dict:
    return {"code": 1, "message": "cancelled by the client", "reason": "CANCELLED"}
