"""Coalescer against the real Redis job store; Celery's publish is recorded instead of sent
(what is under test is which jobs travel together, not the broker)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from shared.jobs.coalescer import Coalescer
from shared.jobs.dispatcher import JobDispatcher
from shared.jobs.store import JobStore


class RecordingCelery:
    def __init__(self):
        self.sent: list[tuple[str, dict, str]] = []

    def send_task(self, name, args, queue, headers=None):
        self.sent.append((name, args[0], queue))


def _run(redis_url, max_batch, delay_s, n, gap_s=0.0):
    async def go():
        client = aioredis.Redis.from_url(redis_url)
        celery = RecordingCelery()
        coalescer = Coalescer(JobDispatcher(celery, JobStore(client, 3600)),
                              max_batch=max_batch, max_delay_s=delay_s)

        async def one(k):
            await asyncio.sleep(k * gap_s)
            return await coalescer.submit(tenant="t", domain="ocr", task="x.batch",
                                          request={"k": k})

        jobs = await asyncio.gather(*(one(k) for k in range(n)))
        await asyncio.sleep(delay_s + 0.05)  # let the timer flush the rest
        await client.aclose()
        return jobs, celery.sent

    return asyncio.run(go())


def test_concurrent_requests_travel_as_one_task(redis_url):
    jobs, sent = _run(redis_url, max_batch=8, delay_s=0.05, n=5)
    [(name, envelope, queue)] = sent
    assert name == "x.batch" and queue == "ocr.cpu"
    # Every job travels with its own request (arrival order may differ from call order).
    carried = {i["job_id"]: i["request"]["k"] for i in envelope["jobs"]}
    assert carried == {job.id: k for k, job in enumerate(jobs)}


def test_max_batch_splits_and_delay_flushes_the_rest(redis_url):
    jobs, sent = _run(redis_url, max_batch=3, delay_s=0.05, n=7)
    sizes = [len(e["jobs"]) for _, e, _ in sent]
    assert sizes == [3, 3, 1]
    carried = [i["job_id"] for _, e, _ in sent for i in e["jobs"]]
    assert sorted(carried) == sorted(j.id for j in jobs)  # each job exactly once


def test_requests_further_apart_than_the_delay_go_alone(redis_url):
    _, sent = _run(redis_url, max_batch=8, delay_s=0.01, n=3, gap_s=0.1)
    assert [len(e["jobs"]) for _, e, _ in sent] == [1, 1, 1]
