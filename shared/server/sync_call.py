"""A sync RPC on top of the job queue: submit (coalesced when the gateway batches), wait for
the job bounded by the client's deadline, and turn the outcome into a result or a typed error.
If the client goes away, its job is cancelled so no worker computes for nobody."""

from __future__ import annotations

import asyncio
import time

from shared.errors import Cancelled, DeadlineExceeded, from_dict
from shared.jobs.records import JobRecord, State


def budget_s(context, cap_s: float) -> float:
    remaining = context.time_remaining()
    return cap_s if remaining is None else min(cap_s, max(0.0, remaining - 0.05))


async def submit_sync(gw, *, tenant: str, domain: str, task: str, batch_task: str | None,
                      request: dict) -> JobRecord:
    await gw.dispatcher.require_consumers(domain)
    if batch_task and gw.coalescer is not None and gw.coalescer.enabled:
        return await gw.coalescer.submit(tenant=tenant, domain=domain, task=batch_task,
                                         request=request)
    job, _ = await gw.dispatcher.submit(tenant=tenant, domain=domain, task=task,
                                        request=request)
    return job


async def wait_result(gw, job: JobRecord, tenant: str, context) -> dict:
    """The job's result dict once SUCCEEDED; raises the job's error otherwise."""
    deadline = time.monotonic() + budget_s(context, gw.settings.sync_timeout_s)
    try:
        done = await gw.store.wait(job.id, tenant, deadline)
    except asyncio.CancelledError:
        await gw.store.cancel(job.id, tenant)
        raise
    return outcome(done)


def outcome(job: JobRecord) -> dict:
    if not job.done:
        raise DeadlineExceeded(f"job {job.id} did not finish in time; it keeps running as "
                               f"{job.name}", metadata={"job": job.name})
    if job.state is State.SUCCEEDED:
        return job.result or {}
    if job.state is State.CANCELLED:
        raise Cancelled(f"job {job.id} was cancelled")
    raise from_dict(job.error or {"message": "job failed"})


async def call_sync(gw, context, *, tenant: str, domain: str, task: str,
                    batch_task: str | None, request: dict) -> dict:
    job = await submit_sync(gw, tenant=tenant, domain=domain, task=task,
                            batch_task=batch_task, request=request)
    return await wait_result(gw, job, tenant, context)
