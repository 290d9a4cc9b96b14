"""`Coalescer`: cross-request dynamic batching at the gateway (as Triton's dynamic batcher).

Concurrent sync requests for the same task are gathered for up to `max_delay_s` (or until
`max_batch` are waiting) and sent as ONE Celery task carrying every job: the worker then runs
all their crops together. Each request still has its own job (idempotency, status, cancel), so
results and errors come back per request. Batching happens here, where requests meet, not
inside a prefork child, so the kill -9 recovery of single tasks holds for batches too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from shared import metrics, tracing
from shared.errors import Unavailable
from shared.jobs.dispatcher import JobDispatcher
from shared.jobs.records import JobRecord

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    queue: str
    items: list[tuple[JobRecord, dict, float]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    # Trace context of the first request: the batch's task span continues its trace.
    headers: dict[str, str] = field(default_factory=dict)


class Coalescer:
    def __init__(self, dispatcher: JobDispatcher, *, max_batch: int, max_delay_s: float):
        self.dispatcher = dispatcher
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._sending: set[asyncio.Task] = set()

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1

    async def submit(self, *, tenant: str, domain: str, task: str, request: dict) -> JobRecord:
        """Creates the job now and queues it with whatever else arrives within the delay."""
        queue = await self.dispatcher.route(domain)
        job, _ = await self.dispatcher.store.create(tenant=tenant, domain=domain, method=task,
                                                    queue=queue)
        key = (domain, task)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(queue, headers=tracing.inject())
            pending.timer = asyncio.get_running_loop().call_later(
                self.max_delay_s, self._flush_soon, key)
        pending.items.append((job, request, time.monotonic()))
        if len(pending.items) >= self.max_batch:
            await self._flush(key)
        return job

    def _flush_soon(self, key: tuple[str, str]) -> None:
        t = asyncio.ensure_future(self._flush(key))
        self._sending.add(t)  # keep a reference until it is done
        t.add_done_callback(self._sending.discard)

    async def _flush(self, key: tuple[str, str]) -> None:
        pending = self._pending.pop(key, None)
        if pending is None or not pending.items:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        domain, task = key
        now = time.monotonic()
        metrics.BATCH_SIZE.labels(model=task).observe(len(pending.items))
        for _, _, t0 in pending.items:
            metrics.COALESCE_DELAY.labels(domain=domain).observe(now - t0)
        envelope = {"jobs": [{"job_id": job.id, "request": req}
                             for job, req, _ in pending.items]}
        try:
            await asyncio.to_thread(self.dispatcher.celery.send_task, task, args=[envelope],
                                    queue=pending.queue, headers=pending.headers)
        except Exception as exc:  # every waiter sees its job FAIL instead of hanging
            err = Unavailable(f"could not queue the job: {exc.__class__.__name__}",
                              retry_after_s=1.0)
            for job, _, _ in pending.items:
                await self.dispatcher.store.fail(job.id, err.to_dict())
            log.warning("batch not queued", extra={"task": task, "error": str(exc)})
            return
        await self.dispatcher.store.dispatched([job.id for job, _, _ in pending.items])
