"""`jobmesh_jobs_finished_total` and `jobmesh_dead_letters_total` against the real Redis: a job
is counted once, by whichever store's terminal transition was applied, however often a duplicate
delivery or a second gateway tries to end it again."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from shared.jobs.records import State
from shared.jobs.store import JobStore
from shared.jobs.worker_store import WorkerJobStore

DOMAIN = "metrics-contract"  # a domain of its own: other tests' jobs do not move these series


def finished(state: str, reason: str) -> float:
    return REGISTRY.get_sample_value("jobmesh_jobs_finished_total", {
        "domain": DOMAIN, "state": state, "reason": reason}) or 0.0


def dead_letters(queue: str) -> float:
    return REGISTRY.get_sample_value("jobmesh_dead_letters_total", {"queue": queue}) or 0.0


def gateway(url: str, call):
    """Runs `call(store)` on a gateway's JobStore (one per event loop, as in a gateway)."""
    async def go():
        return await call(JobStore(aioredis.Redis.from_url(url), retention_s=3600))
    return asyncio.run(go())


def _create(url: str, n: int = 1):
    async def go(store):
        return [(await store.create(tenant="t1", domain=DOMAIN, method="m",
                                    queue=f"{DOMAIN}.cpu"))[0] for _ in range(n)]
    return gateway(url, go)


def test_a_failed_job_is_counted_once_with_its_reason(redis_url):
    [job] = _create(redis_url)
    w = WorkerJobStore(redis.Redis.from_url(redis_url))
    before = finished("FAILED", "UNDECODABLE_INPUT")
    err = {"code": 3, "reason": "UNDECODABLE_INPUT", "message": "not an image"}
    assert w.transition(job, State.RUNNING)
    assert w.transition(job, State.FAILED, {"error": err})
    # A redelivery and a gateway's janitor both try to end it again: refused, not counted.
    assert not w.transition(job, State.FAILED, {"error": err})
    assert not gateway(redis_url, lambda s: s.fail(job.id, {"reason": "BACKEND_UNAVAILABLE"}))
    assert finished("FAILED", "UNDECODABLE_INPUT") == before + 1
    assert finished("FAILED", "BACKEND_UNAVAILABLE") == 0


def test_success_cancel_and_gateway_fail_are_counted_by_the_store_that_moved_them(redis_url):
    [ok, queued, lost] = _create(redis_url, 3)
    w = WorkerJobStore(redis.Redis.from_url(redis_url))
    before = (finished("SUCCEEDED", ""), finished("CANCELLED", "CANCELLED"),
              finished("FAILED", "BACKEND_UNAVAILABLE"))
    assert w.transition(ok, State.RUNNING) and w.transition(ok, State.SUCCEEDED, {"result": {}})
    gateway(redis_url, lambda s: s.cancel(queued.id, "t1"))
    gateway(redis_url, lambda s: s.cancel(queued.id, "t1"))
    assert gateway(redis_url, lambda s: s.fail(lost.id, {"reason": "BACKEND_UNAVAILABLE"}))
    assert (finished("SUCCEEDED", ""), finished("CANCELLED", "CANCELLED"),
            finished("FAILED", "BACKEND_UNAVAILABLE")) == tuple(b + 1 for b in before)


def test_an_unknown_reason_is_counted_as_other(redis_url):
    [job] = _create(redis_url)
    w = WorkerJobStore(redis.Redis.from_url(redis_url))
    before = finished("FAILED", "OTHER")
    assert w.transition(job, State.FAILED, {"error": {"reason": "a free-form sentence"}})
    assert finished("FAILED", "OTHER") == before + 1


def test_dead_letters_are_counted_per_queue(redis_url):
    w = WorkerJobStore(redis.Redis.from_url(redis_url))
    before = dead_letters(f"{DOMAIN}.cpu")
    w.dead_letter(f"{DOMAIN}.cpu", "job-1", "jobmesh.x.v1.y", {"job_id": "job-1"})
    assert dead_letters(f"{DOMAIN}.cpu") == before + 1
