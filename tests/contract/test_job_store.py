"""JobStore and WorkerJobStore against the real Redis: idempotency, validated transitions,
pagination, wait/watch. (No gateway or worker: the store's contract on its own.)"""

from __future__ import annotations

import asyncio
import time

import redis
import redis.asyncio as aioredis

from shared.config import Settings
from shared.jobs.records import BatchInfo, State
from shared.jobs.store import JobStore
from shared.jobs.worker_kit import JobContext
from shared.jobs.worker_store import WorkerJobStore


def run(coro):
    return asyncio.run(coro)


async def _store(url) -> JobStore:
    return JobStore(aioredis.Redis.from_url(url), retention_s=3600)


async def _queued_job(redis_url):
    store = await _store(redis_url)
    job, _ = await store.create(tenant="t1", domain="ocr", method="m", queue="q")
    return job


def test_create_is_idempotent_per_tenant_and_request_id(redis_url):
    async def go():
        store = await _store(redis_url)
        kw = dict(domain="ocr", method="m", queue="ocr.cpu", request_id="r-1")
        a, created_a = await store.create(tenant="t1", **kw)
        b, created_b = await store.create(tenant="t1", **kw)
        c, _ = await store.create(tenant="t2", **kw)
        return a, created_a, b, created_b, c

    a, created_a, b, created_b, c = run(go())
    assert created_a and not created_b and a.id == b.id and c.id != a.id


def test_late_duplicate_never_moves_a_finished_job(redis_url):
    job = run(_queued_job(redis_url))
    w = WorkerJobStore(redis.Redis.from_url(redis_url))
    assert w.transition(job, State.RUNNING)
    assert w.transition(job, State.SUCCEEDED, {"result": {"ok": True}})
    # A duplicate delivery tries to start and fail it again: refused both times.
    assert not w.transition(job, State.RUNNING)
    assert not w.transition(job, State.FAILED, {"error": {"code": 13}})
    after = w.get(job.id)
    assert after.state is State.SUCCEEDED and after.result == {"ok": True}
    assert [s for s, _ in after.transitions] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    w.progress(job.id, 5, 10, "late")  # progress after the end is ignored
    assert w.get(job.id).progress_done == 0


def test_cancel_queued_is_immediate_running_goes_through_cancelling(redis_url):
    async def go():
        store = await _store(redis_url)
        q, _ = await store.create(tenant="t1", domain="ocr", method="m", queue="q")
        r_, _ = await store.create(tenant="t1", domain="ocr", method="m", queue="q")
        WorkerJobStore(redis.Redis.from_url(redis_url)).transition(r_, State.RUNNING)
        return (await store.cancel(q.id, "t1")).state, (await store.cancel(r_.id, "t1")).state

    assert run(go()) == (State.CANCELLED, State.CANCELLING)


async def _queued_batch(store: JobStore):
    job, _ = await store.create(tenant="t1", domain="ocr", method="m", queue="q", kind="BATCH",
                                batch=BatchInfo({"chunks": 2}, "IN_PROGRESS", total=20))
    return job


def test_a_batch_cancelled_before_any_chunk_started_is_done(redis_url):
    """No worker will finalize it, so its phase says DONE at once (no files: no line ran)."""
    async def go():
        store = await _store(redis_url)
        return await store.cancel((await _queued_batch(store)).id, "t1")

    job = run(go())
    assert job.state is State.CANCELLED
    assert job.batch.phase == "DONE" and job.batch.completed == job.batch.failed == 0


def test_a_batch_failed_before_any_chunk_started_is_done(redis_url):
    """The janitor's sweeps (undispatched, lost message) fail a QUEUED batch: DONE as well."""
    async def go():
        store = await _store(redis_url)
        job = await _queued_batch(store)
        assert await store.fail(job.id, {"code": 14, "reason": "WORKER_LOST"},
                                sources=(State.QUEUED,))
        return await store.get(job.id, "t1")

    job = run(go())
    assert job.state is State.FAILED and job.batch.phase == "DONE"


def test_list_pages_cover_everything_once_with_filters(redis_url):
    async def go():
        store = await _store(redis_url)
        ids = []
        for i in range(7):
            job, _ = await store.create(tenant="pager", domain="ocr" if i % 2 else "audio",
                                        method="m", queue="q")
            ids.append(job.id)
        seen, token = [], ""
        while True:
            page, token = await store.list("pager", page_size=3, page_token=token)
            seen += [j.id for j in page]
            if not token:
                break
        ocr_only, _ = await store.list("pager", domain="ocr", page_size=100)
        return ids, seen, ocr_only

    ids, seen, ocr_only = run(go())
    assert seen == list(reversed(ids))  # newest first, no repeats, none skipped
    assert len(ocr_only) == 3 and all(j.domain == "ocr" for j in ocr_only)


def test_wait_returns_when_the_job_finishes(redis_url):
    async def go():
        store = await _store(redis_url)
        job, _ = await store.create(tenant="t1", domain="ocr", method="m", queue="q")

        async def finish_later():
            await asyncio.sleep(0.3)
            w = WorkerJobStore(redis.Redis.from_url(redis_url))
            w.transition(job, State.RUNNING)
            w.transition(job, State.SUCCEEDED, {"result": {}})

        t0 = time.monotonic()
        task = asyncio.create_task(finish_later())
        done = await store.wait(job.id, "t1", time.monotonic() + 10)
        await task
        return done, time.monotonic() - t0

    done, took = run(go())
    assert done.state is State.SUCCEEDED and took < 3


def test_a_job_whose_task_never_reached_the_broker_fails_after_the_grace(redis_url):
    """The gateway lost Redis between creating the record and queueing the task: the janitor
    fails the record (BACKEND_UNAVAILABLE) instead of leaving it QUEUED forever; a dispatched
    job, and one a worker started, are left alone."""
    from types import SimpleNamespace

    from shared.jobs.records import UNDISPATCHED_KEY
    from shared.server.gateway import Gateway

    async def go():
        store = await _store(redis_url)
        kw = dict(tenant="t1", domain="ocr", method="m", queue="ocr.cpu")
        orphan, _ = await store.create(**kw)
        queued, _ = await store.create(**kw)
        await store.dispatched([queued.id])
        started, _ = await store.create(**kw)
        await store.redis.hset(f"jobmesh:job:{started.id}", "deliveries", 1)
        sweeper = SimpleNamespace(redis=store.redis, store=store,
                                  settings=SimpleNamespace(dispatch_grace_s=0.0))
        failed = await Gateway.fail_undispatched(sweeper)
        states = [(await store.get(j.id, None)) for j in (orphan, queued, started)]
        left = await store.redis.zcard(UNDISPATCHED_KEY)
        return failed, states, left

    failed, (orphan, queued, started), left = run(go())
    assert failed >= 1 and left == 0  # (earlier tests' undispatched records count too)
    assert orphan.state is State.FAILED and orphan.error["reason"] == "BACKEND_UNAVAILABLE"
    assert queued.state is State.QUEUED and started.state is State.QUEUED


def test_work_stops_once_its_job_ended_elsewhere(redis_url):
    """A chunk still running when its batch expired (FAILED by the janitor) stops at its next
    check instead of computing lines nobody will read."""
    job = run(_queued_job(redis_url))
    w = WorkerJobStore(redis.Redis.from_url(redis_url))
    assert w.transition(job, State.RUNNING)
    ctx = JobContext(w.get(job.id), w, Settings(), lambda: None)
    assert not ctx.should_stop()
    assert w.transition(w.get(job.id), State.FAILED, {"error": {"code": 4, "reason": "EXPIRED"}})
    time.sleep(0.15)  # the state is re-read at most every 100 ms
    assert ctx.should_stop()
