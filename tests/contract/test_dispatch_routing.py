"""JobDispatcher's queue choice against the real Redis: GPU while a GPU worker beats, else CPU."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from shared.errors import Unavailable
from shared.jobs.dispatcher import JobDispatcher
from shared.jobs.records import consumers_key
from shared.jobs.store import JobStore


def test_routes_to_gpu_only_while_a_gpu_worker_is_live(redis_url):
    sync = redis.Redis.from_url(redis_url)

    async def route() -> str:
        client = aioredis.Redis.from_url(redis_url)
        d = JobDispatcher(celery=None, store=JobStore(client, 3600), consumer_ttl_s=3)
        try:
            return await d.route("ocr")
        finally:
            await client.aclose()

    async def require() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await JobDispatcher(None, JobStore(client, 3600)).require_consumers("ocr")
        finally:
            await client.aclose()

    with pytest.raises(Unavailable):
        asyncio.run(require())
    assert asyncio.run(route()) == "ocr.cpu"  # nobody live: async work waits on CPU
    sync.zadd(consumers_key("ocr.cpu"), {"cpu-worker": time.time()})
    assert asyncio.run(route()) == "ocr.cpu"
    sync.zadd(consumers_key("ocr.gpu"), {"gpu-worker": time.time()})
    assert asyncio.run(route()) == "ocr.gpu"
    sync.zadd(consumers_key("ocr.gpu"), {"gpu-worker": time.time() - 60})  # stopped beating
    assert asyncio.run(route()) == "ocr.cpu"
    asyncio.run(require())
