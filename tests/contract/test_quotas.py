"""Per-tenant limits against the real Redis: the GCRA rate limiter's Lua script, and the
active-job quota under every way a job ends (no gateway: the scripts' contract on their own)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from shared.errors import ResourceExhausted, Unavailable
from shared.jobs import quota
from shared.jobs.dispatcher import JobDispatcher
from shared.jobs.records import State, job_key
from shared.jobs.store import JobStore
from shared.jobs.worker_store import WorkerJobStore
from shared.server.quotas import RateLimiter, TenantLimits


def run_with(url, use):
    async def go():
        client = aioredis.Redis.from_url(url)
        try:
            return await use(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_rate_limiter_admits_the_burst_then_refuses_for_one_period(redis_url):
    async def use(client):
        limiter = RateLimiter(client)
        waits = [await limiter.wait_s("t-rate", rate_per_s=10, burst=3) for _ in range(5)]
        other = await limiter.wait_s("t-other", rate_per_s=10, burst=3)
        await asyncio.sleep(max(waits))
        after = await limiter.wait_s("t-rate", rate_per_s=10, burst=3)
        return waits, other, after

    waits, other, after = run_with(redis_url, use)
    assert waits[:3] == [0, 0, 0]
    # The 4th and 5th calls come within a few ms: each waits about one period (0.1 s), and a
    # refused call is not counted, so the 5th waits no longer than the 4th.
    assert 0.05 < waits[3] <= 0.1 and 0.05 < waits[4] <= waits[3]
    assert other == 0 and after == 0  # another tenant has its own bucket; the wait was right


def test_rate_limiter_refusal_is_resource_exhausted_with_retry(redis_url):
    async def use(client):
        limiter = RateLimiter(client)
        limits = TenantLimits(rate_per_s=1, burst=1)
        await limiter.check("t-check", limits)
        with pytest.raises(ResourceExhausted) as e:
            await limiter.check("t-check", limits)
        await limiter.check("t-unlimited", TenantLimits())  # 0 = off: no Redis state at all
        return e.value, await client.exists("jobmesh:rate:t-unlimited")

    err, exists = run_with(redis_url, use)
    assert err.reason == "RATE_LIMITED" and 0.5 < err.retry_after_s <= 1.0
    assert err.code.name == "RESOURCE_EXHAUSTED" and not exists


def test_quota_counts_active_jobs_and_every_ending_frees_a_slot(redis_url):
    worker = WorkerJobStore(redis.Redis.from_url(redis_url))
    kw = dict(tenant="t-quota", domain="ocr", method="m", queue="ocr.cpu", max_active=2)

    async def use(client):
        store = JobStore(client, 3600)
        ended = []

        async def full() -> ResourceExhausted:
            with pytest.raises(ResourceExhausted) as e:
                await store.create(**kw)
            return e.value

        a, _ = await store.create(**kw, request_id="first")
        b, _ = await store.create(**kw)
        err = await full()
        # A repeated request_id returns the first job even at the quota.
        again, created = await store.create(**kw, request_id="first")
        assert again.id == a.id and not created
        # The refused request_id does not point at a job that was never written.
        with pytest.raises(ResourceExhausted):
            await store.create(**kw, request_id="refused")
        assert await client.get("jobmesh:idem:t-quota:refused") is None
        # Another tenant is not limited by this one.
        await store.create(**{**kw, "tenant": "t-quota-other"})

        endings = {
            "succeeded": lambda j: _finish(worker, j, State.SUCCEEDED),
            "failed (worker)": lambda j: _finish(worker, j, State.FAILED),
            "failed (janitor, batch expiry)": lambda j: store.fail(j.id, {"code": 14}),
            "cancelled": lambda j: store.cancel(j.id, "t-quota"),
            "deleted": lambda j: store.delete(j.id, "t-quota"),
        }
        for name, end in endings.items():
            result = end(a)
            if asyncio.iscoroutine(result):
                await result
            a, _ = await store.create(**kw)  # the freed slot is taken at once
            ended.append(name)
            await full()
        return err, ended, b

    err, ended, b = run_with(redis_url, use)
    assert err.reason == "QUOTA_EXCEEDED" and err.retry_after_s == quota.RETRY_AFTER_S
    assert err.metadata == {"active_jobs": "2", "max_active_jobs": "2"}
    assert len(ended) == 5


def _finish(worker: WorkerJobStore, job, state: State) -> None:
    assert worker.transition(job, State.RUNNING)
    assert worker.transition(job, state, {"error": {"code": 13}} if state is State.FAILED
                             else {"result": {}})


def test_quota_frees_a_job_whose_record_expired_but_keeps_one_being_created(redis_url):
    sync = redis.Redis.from_url(redis_url)
    kw = dict(tenant="t-gone", domain="ocr", method="m", queue="ocr.cpu", max_active=1)

    async def use(client):
        store = JobStore(client, 3600)
        job, _ = await store.create(**kw)
        # A member with no record, admitted just now: a concurrent creation, still counted.
        sync.delete(job_key(job.id))
        with pytest.raises(ResourceExhausted):
            await store.create(**kw)
        # The same, admitted longer ago than the grace: a record that expired. Freed.
        sync.zadd(quota.active_key("t-gone"), {job.id: time.time() - quota.PENDING_GRACE_S - 5})
        return await store.create(**kw)

    job, created = run_with(redis_url, use)
    assert created and sync.zcard(quota.active_key("t-gone")) == 1


class _BrokenCelery:
    def send_task(self, *a, **kw):
        raise ConnectionError("broker down")


def test_quota_slot_of_a_job_that_failed_to_dispatch_is_freed(redis_url):
    async def use(client):
        store = JobStore(client, 3600)
        disp = JobDispatcher(_BrokenCelery(), store)
        token = quota.active_job_limit.set(1)  # as the gateway's interceptor does per call
        try:
            with pytest.raises(Unavailable):
                await disp.submit(tenant="t-disp", domain="ocr", task="x", request={})
            job, created = await store.create(tenant="t-disp", domain="ocr", method="m",
                                              queue="ocr.cpu")
        finally:
            quota.active_job_limit.reset(token)
        return created

    assert run_with(redis_url, use)


def test_quota_off_keeps_no_state(redis_url):
    async def use(client):
        store = JobStore(client, 3600)
        for _ in range(3):
            await store.create(tenant="t-free", domain="ocr", method="m", queue="q")
        return await client.exists(quota.active_key("t-free"))

    assert run_with(redis_url, use) == 0
