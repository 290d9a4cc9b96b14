"""`JobDispatcher`: what a gateway does to start work. It records the job, then sends the task
by *name* to `<domain>.<device>` (gateways never import worker code), and knows whether anyone
consumes that queue so sync calls can fail fast instead of hanging."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from celery import Celery

from shared import metrics, tracing
from shared.errors import JobmeshError, Unavailable
from shared.jobs.consumers import live_consumers
from shared.jobs.records import JobRecord
from shared.jobs.store import JobStore

log = logging.getLogger(__name__)


class JobDispatcher:
    def __init__(self, celery: Celery, store: JobStore, *, devices: tuple[str, ...] = ("gpu",
                 "cpu"), consumer_ttl_s: float = 6.0):
        self.celery = celery
        self.store = store
        self.devices = devices  # queue preference: the first with a live consumer wins
        self.consumer_ttl_s = consumer_ttl_s
        self._live: dict[str, tuple[int, float]] = {}

    def queues(self, domain: str) -> list[str]:
        return [f"{domain}.{d}" for d in self.devices]

    async def route(self, domain: str) -> str:
        """The preferred queue with a live consumer (GPU before CPU by default); with none
        live, the last one (CPU), where an async job waits for a worker to come."""
        queues = self.queues(domain)
        for q in queues:
            if await self.consumers(q) > 0:
                return q
        return queues[-1]

    async def consumers(self, queue: str, max_age_s: float = 1.0) -> int:
        cached = self._live.get(queue)
        if cached and time.monotonic() - cached[1] < max_age_s:
            return cached[0]
        n = await live_consumers(self.store.redis, queue, self.consumer_ttl_s)
        self._live[queue] = (n, time.monotonic())
        metrics.WORKER_UP.labels(queue=queue).set(n)
        return n

    async def live(self, domain: str, max_age_s: float = 1.0) -> int:
        return sum([await self.consumers(q, max_age_s) for q in self.queues(domain)])

    async def require_consumers(self, domain: str) -> None:
        # A cached "none" is re-read: a worker that just came up must not be refused.
        if await self.live(domain) == 0 and await self.live(domain, max_age_s=0) == 0:
            queues = ", ".join(self.queues(domain))
            raise Unavailable(f"no worker consumes {queues}; retry later", reason="NO_WORKER",
                              retry_after_s=5.0, metadata={"queues": queues})

    async def submit(self, *, tenant: str, domain: str, task: str, request: dict,
                     request_id: str = "", kind: str = "SINGLE",
                     prepare: Callable[[JobRecord, dict], Awaitable[dict]] | None = None,
                     ) -> tuple[JobRecord, bool]:
        """Creates (or, for a repeated request_id, returns) the job and queues its task.
        `prepare(job, request)` runs between the two, e.g. to upload an inline input under the
        job's id; if it fails, the job FAILS with that error and nothing is queued."""
        queue = await self.route(domain)
        job, created = await self.store.create(tenant=tenant, domain=domain, method=task,
                                               queue=queue, request_id=request_id, kind=kind)
        if not created:
            return job, False
        if prepare is not None:
            try:
                request = await prepare(job, request)
            except JobmeshError as exc:
                await self.store.fail(job.id, exc.to_dict())
                raise
        envelope = {"job_id": job.id, "request": request}
        try:
            # kombu's publish is blocking I/O; keep it off the event loop.
            await asyncio.to_thread(self.celery.send_task, task, args=[envelope], queue=queue,
                                    headers=tracing.inject())
        except Exception as exc:
            err = Unavailable(f"could not queue the job: {exc.__class__.__name__}",
                              retry_after_s=1.0)
            await self.store.fail(job.id, err.to_dict())
            raise err from exc
        await self.store.dispatched([job.id])
        return job, True
