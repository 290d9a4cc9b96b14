"""Liveness of queue consumers. Each worker's main process beats into the sorted set
`jobmesh:consumers:<queue>` (score = time); a gateway counts beats fresher than the TTL. This is
cheaper and faster than Celery's broadcast `inspect`, and a worker killed with -9 simply stops
beating."""

from __future__ import annotations

import logging
import threading
import time

import redis

from shared.jobs.records import consumers_key

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, client: redis.Redis, queues: list[str], worker_id: str, ttl_s: float):
        self.client = client
        self.queues = queues
        self.worker_id = worker_id
        self.interval = max(0.2, ttl_s / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobmesh-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        now = time.time()
        with self.client.pipeline() as p:
            for q in self.queues:
                p.zadd(consumers_key(q), {self.worker_id: now})
            p.execute()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except redis.RedisError as exc:  # keep beating once Redis is back
                log.warning("heartbeat failed", extra={"error": str(exc)})

    def stop(self) -> None:
        self._stop.set()
        try:
            for q in self.queues:
                self.client.zrem(consumers_key(q), self.worker_id)
        except redis.RedisError:
            pass


async def live_consumers(client, queue: str, ttl_s: float) -> int:
    """How many workers beat on `queue` within the TTL (asyncio client)."""
    key = consumers_key(queue)
    cutoff = time.time() - ttl_s
    await client.zremrangebyscore(key, "-inf", cutoff - 3600)  # forget long-gone workers
    return int(await client.zcount(key, cutoff, "+inf"))
