"""`Gateway`: the dependencies every gateway shares, the aio server factory, readiness and the
artifact janitor. A domain's `__main__` builds a Gateway, adds its servicer, and calls `serve`.

    gw = Gateway.from_settings("ocr", settings)
    server, port = gw.create_server("127.0.0.1:0")
    add_OcrServiceServicer_to_server(OcrServicer(gw), server)
    await gw.start(server, services=["jobmesh.ocr.v1.OcrService"])
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from shared import metrics
from shared.auth import KeyRing
from shared.config import Settings
from shared.jobs.celery_app import make_celery
from shared.jobs.coalescer import Coalescer
from shared.jobs.dispatcher import JobDispatcher
from shared.jobs.records import ARTIFACT_EXPIRY_KEY
from shared.jobs.store import JobStore
from shared.models.registry import ModelRegistry
from shared.server.interceptors import AuthInterceptor, ErrorInterceptor
from shared.server.quotas import QuotaInterceptor
from shared.server.tls import server_credentials
from shared.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps for one queue: priority 0 under the queue's own name, the
    other steps (3, 6, 9; batch chunks use 9) under `<queue>\\x06\\x16<step>`."""
    return [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]


@dataclass
class Gateway:
    domain: str
    settings: Settings
    keyring: KeyRing
    redis: aioredis.Redis
    store: JobStore
    dispatcher: JobDispatcher
    artifacts: ArtifactStore
    registry: ModelRegistry
    coalescer: Coalescer | None = None
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    queue_services: list[str] = field(default_factory=list)  # NOT_SERVING without consumers
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _sync_store: object = None

    @classmethod
    def from_settings(cls, domain: str, settings: Settings) -> Gateway:
        keyring = KeyRing.load(settings.api_keys_file, settings.api_keys)
        if not len(keyring):
            raise ValueError("no API keys configured: set JOBMESH_API_KEYS_FILE or "
                             "JOBMESH_API_KEYS")
        # Connections that died with a Redis restart are retried on a fresh one (and checked
        # before use when idle), so a restart costs the calls made while Redis was down, not
        # every pooled connection's next call afterwards (tests/chaos).
        client = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=10, health_check_interval=5,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError])
        store = JobStore(client, settings.retention_s)
        celery = make_celery(f"jobmesh-{domain}-gateway", settings)
        dispatcher = JobDispatcher(celery, store, devices=settings.queue_devices(),
                                   consumer_ttl_s=settings.consumer_ttl_s)
        artifacts = ArtifactStore.from_settings(settings)
        coalescer = Coalescer(dispatcher, max_batch=settings.coalesce_max_batch,
                              max_delay_s=settings.coalesce_delay_ms / 1000)
        return cls(domain, settings, keyring, client, store, dispatcher, artifacts,
                   ModelRegistry(artifacts, settings.models_bucket), coalescer)

    def create_server(self, address: str) -> tuple[grpc.aio.Server, int]:
        """Builds the server with interceptors, size limits, JobService, ModelService, health
        and reflection; returns it with the bound port (bind port 0 in tests). The port speaks
        TLS (mTLS with a client CA) when the settings name a certificate, else plaintext."""
        from jobmesh.jobs.v1 import batch_service_pb2_grpc, job_service_pb2_grpc
        from jobmesh.models.v1 import model_service_pb2_grpc

        from shared.batch.service import BatchServicer
        from shared.jobs.service import JobServicer
        from shared.models.service import ModelServicer

        limit = self.settings.max_message_bytes
        server = grpc.aio.server(
            # Outermost first: errors wrap everything; limits need the caller auth found.
            interceptors=[ErrorInterceptor(), AuthInterceptor(self.keyring),
                          QuotaInterceptor(self.redis, self.settings)],
            options=[("grpc.max_receive_message_length", limit),
                     ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0)])
        job_service_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(self), server)
        batch_service_pb2_grpc.add_BatchServiceServicer_to_server(BatchServicer(self), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        credentials = server_credentials(self.settings)  # None: plaintext (local default)
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
        if port == 0:
            raise OSError(f"cannot bind {address}")
        return server, port

    async def start(self, server: grpc.aio.Server, services: list[str]) -> None:
        """Enables reflection, starts serving, and starts readiness and janitor loops.
        `services` are the domain services that need a live worker to be SERVING."""
        names = [*services, "jobmesh.jobs.v1.JobService", "jobmesh.jobs.v1.BatchService",
                 "jobmesh.models.v1.ModelService", health.SERVICE_NAME,
                 reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)
        self.queue_services = list(services)
        for name in ("jobmesh.jobs.v1.JobService", "jobmesh.jobs.v1.BatchService",
                     "jobmesh.models.v1.ModelService"):
            await self.health.set(name, SERVING)
        await self._update_readiness()
        await server.start()
        self._tasks = [asyncio.create_task(self._readiness_loop()),
                       asyncio.create_task(self._janitor_loop())]

    async def stop(self, server: grpc.aio.Server) -> None:
        for name in [*self.queue_services, ""]:
            await self.health.set(name, NOT_SERVING)
        for t in self._tasks:
            t.cancel()
        await server.stop(self.settings.shutdown_grace_s)
        await self.redis.aclose()

    async def _update_readiness(self) -> None:
        try:
            live = await self.dispatcher.live(self.domain, max_age_s=0)
            for queue in self.dispatcher.queues(self.domain):
                depth = sum([await self.redis.llen(name) for name in priority_lists(queue)])
                metrics.QUEUE_DEPTH.labels(queue=queue).set(depth)
            for state, n in (await self.store.counts(self.domain)).items():
                metrics.JOBS.labels(domain=self.domain, state=state).set(n)
        except Exception as exc:  # Redis down: not ready, and say why once per poll
            log.warning("readiness check failed", extra={"error": str(exc)})
            live = 0
        status = SERVING if live else NOT_SERVING
        for name in self.queue_services:
            await self.health.set(name, status)
        # The server-wide entry ("") reflects whether the domain can do work at all.
        await self.health.set("", status)

    async def _readiness_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.readiness_poll_s)
            await self._update_readiness()

    async def _janitor_loop(self) -> None:
        """Deletes artifacts whose jobs passed their retention (S3 servers without lifecycle
        rules, like rclone, need this; MinIO lifecycle rules would also do), and ends batches
        whose completion window passed."""
        while True:
            await asyncio.sleep(self.settings.janitor_interval_s)
            try:
                await self.expire_batches()
            except Exception as exc:
                log.warning("batch expiry failed", extra={"error": str(exc)})
            try:
                await self.fail_undispatched()
            except Exception as exc:
                log.warning("undispatched sweep failed", extra={"error": str(exc)})
            try:
                await self.fail_lost_messages()
            except Exception as exc:
                log.warning("lost-message sweep failed", extra={"error": str(exc)})
            try:
                expired = await self.redis.zrangebyscore(ARTIFACT_EXPIRY_KEY, "-inf",
                                                         time.time(), start=0, num=100)
                for member in expired:
                    bucket, _, key = member.decode().partition("/")
                    await asyncio.to_thread(self.artifacts.delete, bucket, key)
                    await self.redis.zrem(ARTIFACT_EXPIRY_KEY, member)
            except Exception as exc:
                log.warning("artifact janitor failed", extra={"error": str(exc)})


    async def fail_undispatched(self) -> int:
        """FAILS the jobs created more than `dispatch_grace_s` ago whose task is not known to
        have reached the broker and that no worker has started; returns how many. The state
        transition is validated, so a job a worker did start, or another gateway already
        failed, is left alone."""
        from shared.errors import Unavailable
        from shared.jobs.records import UNDISPATCHED_KEY, State

        due = await self.redis.zrangebyscore(UNDISPATCHED_KEY, "-inf",
                                             time.time() - self.settings.dispatch_grace_s,
                                             start=0, num=100)
        failed = 0
        for member in due:
            job = await self.store.get(member.decode(), None)
            if job is not None and job.state is State.QUEUED and job.deliveries == 0:
                err = Unavailable("the job was not queued: the job store or broker failed "
                                  "while it was submitted; submit it again",
                                  retry_after_s=1.0)
                failed += await self.store.fail(job.id, err.to_dict())
                log.warning("undispatched job failed", extra={"job_id": job.id})
            await self.redis.zrem(UNDISPATCHED_KEY, member)
        return failed

    async def fail_lost_messages(self) -> int:
        """FAILS (WORKER_LOST) the jobs QUEUED over `lost_message_grace_s` whose task message
        is on the broker no more; returns how many (shared/jobs/lost_messages.py)."""
        from shared.jobs.lost_messages import fail_lost

        return await fail_lost(self.redis, self.store, priority_lists,
                               self.settings.lost_message_grace_s)

    async def expire_batches(self) -> int:
        """FAILS (reason EXPIRED) the batches past their completion window, keeping the lines
        already recorded; returns how many it ended. Any gateway may do it: the state
        transition is validated, so two gateways racing end a batch once."""
        from shared.batch.runner import finalize
        from shared.jobs.records import BATCH_DEADLINES_KEY
        from shared.jobs.worker_store import WorkerJobStore

        due = await self.redis.zrangebyscore(BATCH_DEADLINES_KEY, "-inf", time.time(),
                                             start=0, num=20)
        if not due:
            return 0
        if self._sync_store is None:  # finalize is the worker's synchronous code
            import redis as sync_redis

            self._sync_store = WorkerJobStore(sync_redis.Redis.from_url(self.settings.redis_url))
        ended = 0
        for member in due:
            job_id = member.decode()
            ended += await asyncio.to_thread(finalize, self._sync_store, self.artifacts,
                                             self.settings, job_id, expired=True)
            await self.redis.zrem(BATCH_DEADLINES_KEY, member)
        return ended


async def serve(gw: Gateway, server: grpc.aio.Server, port: int, services: list[str]) -> None:
    """Runs until SIGINT/SIGTERM, then drains in-flight calls for `shutdown_grace_s`."""
    await gw.start(server, services)
    log.info("gateway serving", extra={"domain": gw.domain, "port": port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway draining", extra={"grace_s": gw.settings.shutdown_grace_s})
    await gw.stop(server)
