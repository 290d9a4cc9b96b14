"""The lost-message sweep against the real Redis and real kombu messages (Celery's send_task):
a QUEUED job whose message is in none of its queue's lists nor kombu's `unacked` hash FAILS
with WORKER_LOST; a message anywhere there, or a started job, keeps it as it is."""

from __future__ import annotations

import asyncio
import json

import redis
import redis.asyncio as aioredis

from shared.config import Settings
from shared.jobs import lost_messages
from shared.jobs.celery_app import make_celery
from shared.jobs.records import NOT_STARTED_KEY, State
from shared.jobs.store import JobStore
from shared.jobs.worker_store import WorkerJobStore
from shared.server.gateway import priority_lists

Q = "ocr.cpu"


def _send(url: str, args: list, priority: int | None = None) -> None:
    app = make_celery("test", Settings(redis_url=url))
    app.send_task("ocr.recognize", args=args, queue=Q, priority=priority)


def _take_into_unacked(url: str, tag: str) -> None:
    """What a worker's kombu does: BRPOP the message, then record it in `unacked`."""
    client = redis.Redis.from_url(url)
    raw = client.rpop(Q)
    client.hset(lost_messages.UNACKED_KEY, tag, json.dumps([json.loads(raw), "", Q]))


def test_a_queued_job_whose_message_vanished_fails_and_others_are_untouched(redis_url,
                                                                           monkeypatch):
    monkeypatch.setattr(lost_messages, "CONFIRM_S", 0.05)
    store = JobStore(aioredis.Redis.from_url(redis_url), retention_s=3600)
    worker = WorkerJobStore(redis.Redis.from_url(redis_url))

    async def create(n: int, **kw) -> list:
        jobs = [(await store.create(tenant="t1", domain="ocr", method="m", queue=Q, **kw))[0]
                for _ in range(n)]
        await store.dispatched([j.id for j in jobs])
        return jobs

    async def sweep(grace_s: float) -> int:
        return await lost_messages.fail_lost(store.redis, store, priority_lists, grace_s)

    async def go():
        lost, in_list, in_unacked, started, young = await create(5)
        coalesced = await create(2)  # one task for both: {"jobs": [{"job_id"...}, ...]}
        batch, = await create(1, kind="BATCH")
        _send(redis_url, [{"job_id": in_unacked.id, "request": {}}])
        _take_into_unacked(redis_url, "tag-1")
        _send(redis_url, [{"job_id": in_list.id, "request": {}}])
        raw = await store.redis.lindex(Q, 0)  # the id is found in the decoded body
        assert json.loads(raw)["properties"]["body_encoding"] == "base64"
        body = json.loads(raw)
        body["headers"] = {}
        assert lost_messages.job_ids(json.dumps(body)) == {in_list.id}
        _send(redis_url, [{"jobs": [{"job_id": j.id, "request": {}} for j in coalesced]}])
        _send(redis_url, [{"job_id": batch.id, "chunk": 3}], priority=9)  # batch priority
        assert worker.transition(started, State.RUNNING)
        assert await store.redis.zscore(NOT_STARTED_KEY, started.id) is None
        # Not past the grace: the broker is not read, nothing moves.
        assert await sweep(60.0) == 0
        assert await store.redis.zscore(NOT_STARTED_KEY, young.id) is not None
        await store.redis.zadd(NOT_STARTED_KEY, {young.id: 1e12}, xx=True)  # created "later"
        failed = await sweep(0.0)
        return failed, {name: await store.get(j.id, None) for name, j in [
            ("lost", lost), ("in_list", in_list), ("in_unacked", in_unacked),
            ("started", started), ("young", young), ("c0", coalesced[0]),
            ("c1", coalesced[1]), ("batch", batch)]}

    failed, jobs = asyncio.run(go())
    assert failed == 1
    assert jobs["lost"].state is State.FAILED
    assert jobs["lost"].error["reason"] == "WORKER_LOST"
    assert "submit it again" in jobs["lost"].error["message"]
    assert jobs["started"].state is State.RUNNING
    for name in ("in_list", "in_unacked", "young", "c0", "c1", "batch"):
        assert jobs[name].state is State.QUEUED, name


def test_a_job_started_between_the_views_is_not_failed(redis_url, monkeypatch):
    """The move to FAILED is allowed from QUEUED only: a worker that started the job while
    the sweep looked (its message just left the broker) keeps it RUNNING."""
    store = JobStore(aioredis.Redis.from_url(redis_url), retention_s=3600)
    worker = WorkerJobStore(redis.Redis.from_url(redis_url))

    async def go():
        job, _ = await store.create(tenant="t1", domain="ocr", method="m", queue=Q)
        await store.dispatched([job.id])

        real = lost_messages._missing

        async def start_meanwhile(*a):  # after the first view, before the second
            missing = await real(*a)
            if worker.get(job.id).state is State.QUEUED:
                assert worker.transition(job, State.RUNNING)
            return missing

        monkeypatch.setattr(lost_messages, "CONFIRM_S", 0.05)
        monkeypatch.setattr(lost_messages, "_missing", start_meanwhile)
        failed = await lost_messages.fail_lost(store.redis, store, priority_lists, 0.0)
        return failed, await store.get(job.id, None)

    failed, job = asyncio.run(go())
    assert failed == 0 and job.state is State.RUNNING
