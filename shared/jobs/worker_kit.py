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

from shared import logs, metrics
from shared.config import Settings
from shared.errors import DeadlineExceeded, Internal, JobmeshError
from shared.jobs.consumers import Heartbeat
from shared.jobs.records import JobRecord, State
from shared.jobs.worker_store import WorkerJobStore
from shared.storage.artifacts import ArtifactRef, ArtifactStore, tenant_key

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised by a job function at a batch boundary once the job is CANCELLING."""


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
        """True once a client asked to cancel; checked at most every 100 ms (one HGET)."""
        if not self._stop and time.monotonic() - self._last_check > 0.1:
            self._last_check = time.monotonic()
            self._stop = self.store.state(self.job.id) in (State.CANCELLING, State.CANCELLED,
                                                           None)
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


JobFunction = Callable[[JobContext, dict], dict]


class WorkerKit:
    """One per worker app. Redis and S3 clients are created lazily per process (after fork)."""

    def __init__(self, app: Celery, domain: str, settings: Settings):
        self.app = app
        self.domain = domain
        self.settings = settings
        self.queues = [settings.queue(domain)]
        self._pid = -1
        self._store: WorkerJobStore | None = None
        self._artifacts: ArtifactStore | None = None
        self._heartbeat: Heartbeat | None = None
        signals.worker_ready.connect(self._on_ready, weak=False)
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
                return self.run(name, fn, envelope)

            return _task

        return register

    def run(self, name: str, fn: JobFunction, envelope: dict) -> None:
        store = self.store()
        job_id = str(envelope.get("job_id", ""))
        job = store.get(job_id) if job_id else None
        if job is None:
            log.warning("job record missing (deleted or expired); dropping task",
                        extra={"task": name, "job_id": job_id})
            return
        logs.job_id_var.set(job.id)
        logs.tenant_var.set(job.tenant)
        deliveries = store.count_delivery(job.id)
        if job.done:
            log.info("late duplicate of a finished job ignored", extra={"state": job.state})
            return
        if deliveries > self.settings.max_deliveries:
            self._give_up(job, name, envelope, deliveries)
            return
        if job.state is State.CANCELLING:
            store.transition(job, State.CANCELLED, {"error": _cancelled()})
            return
        if not store.transition(job, State.RUNNING):
            log.info("job not startable", extra={"state": str(store.state(job.id))})
            return
        if deliveries == 1:
            metrics.QUEUE_DURATION.labels(queue=job.queue).observe(time.time() - job.create_time)
        ctx = JobContext(job, store, self.settings, self.artifacts)
        try:
            result = fn(ctx, envelope.get("request", {}))
        except JobCancelled:
            store.transition(job, State.CANCELLED, {"error": _cancelled()})
            log.info("job cancelled at a batch boundary")
            return
        except SoftTimeLimitExceeded:
            err = DeadlineExceeded(f"task exceeded its {self.settings.task_time_limit_s}s limit")
            store.transition(job, State.FAILED, {"error": err.to_dict()})
            return
        except JobmeshError as exc:
            store.transition(job, State.FAILED, {"error": exc.to_dict()})
            log.info("job failed", extra={"reason": exc.reason, "error": exc.message})
            return
        except Exception as exc:
            err = Internal(f"worker error: {exc.__class__.__name__}")
            store.transition(job, State.FAILED, {"error": err.to_dict()})
            log.exception("job crashed")
            raise
        finished = store.transition(job, State.SUCCEEDED, {
            "result": result or {}, "artifacts": [a.to_dict() for a in ctx.produced]})
        if not finished:  # cancelled or already finished by a duplicate: nothing to undo
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


def _cancelled() -> dict:
    return {"code": 1, "message": "cancelled by the client", "reason": "CANCELLED"}
