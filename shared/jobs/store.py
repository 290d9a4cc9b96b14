"""`JobStore`: the gateway's asyncio view of job records in Redis (create, get, list, cancel,
delete, wait, watch). Workers use `WorkerJobStore`, which shares the key layout and Lua scripts.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from shared import metrics
from shared.errors import InvalidArgument, NotFound
from shared.jobs import records as r
from shared.jobs.quota import ActiveJobs, active_job_limit, active_key
from shared.jobs.records import JobRecord, State

MAX_PAGE = 1000
DEFAULT_PAGE = 50


class JobStore:
    def __init__(self, redis: aioredis.Redis, retention_s: int):
        self.redis = redis
        self.retention_s = retention_s
        self._transition = redis.register_script(r.TRANSITION_LUA)
        self.active = ActiveJobs(redis, retention_s)

    async def create(self, *, tenant: str, domain: str, method: str, queue: str,
                     request_id: str = "", kind: str = "SINGLE",
                     batch: r.BatchInfo | None = None, max_active: int | None = None
                     ) -> tuple[JobRecord, bool]:
        """Creates a QUEUED job; returns (job, created). With a `request_id` already used by this
        tenant, returns the first job and created=False (AIP-155), even at the quota. A new job
        over the tenant's active-job quota (`max_active`, by default the calling RPC's limit)
        raises QUOTA_EXCEEDED."""
        job_id = uuid.uuid4().hex
        idem = r.idempotency_key(tenant, request_id) if request_id else ""
        if request_id:
            if not await self.redis.set(idem, job_id, nx=True, ex=self.retention_s):
                first = await self.redis.get(idem)
                existing = await self.get(r._s(first), tenant) if first else None
                if existing:
                    return existing, False
                await self.redis.set(idem, job_id, ex=self.retention_s)  # first one expired
        try:
            await self.active.admit(tenant, job_id,
                                    active_job_limit.get() if max_active is None else max_active)
        except Exception:
            # The request_id must not point at a job that was never written.
            if idem and r._s(await self.redis.get(idem) or b"") == job_id:
                await self.redis.delete(idem)
            raise
        t = r.now()
        job = JobRecord(id=job_id, tenant=tenant, domain=domain, method=method, queue=queue,
                        kind=kind, request_id=request_id, create_time=t, update_time=t,
                        expire_time=t + self.retention_s,
                        transitions=[(State.QUEUED.value, t)], batch=batch)
        key = r.job_key(job_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(key, mapping=job.to_hash())
            p.expire(key, self.retention_s)
            p.zadd(r.tenant_index_key(tenant), {job_id: t})
            p.hincrby(r.counts_key(domain), State.QUEUED.value, 1)
            p.zadd(r.UNDISPATCHED_KEY, {job_id: t})
            p.zadd(r.NOT_STARTED_KEY, {job_id: t})
            await p.execute()
        return job, True

    async def dispatched(self, job_ids: list[str]) -> None:
        """The jobs' tasks are on the broker: the janitor must not fail them."""
        if job_ids:
            await self.redis.zrem(r.UNDISPATCHED_KEY, *job_ids)

    async def get(self, job_id: str, tenant: str | None) -> JobRecord | None:
        """The job, or None when missing or owned by another tenant (None: any tenant)."""
        h = await self.redis.hgetall(r.job_key(job_id))
        if not h:
            return None
        job = JobRecord.from_hash(h)
        if tenant is not None and job.tenant != tenant:
            return None
        return job

    async def require(self, job_id: str, tenant: str | None) -> JobRecord:
        job = await self.get(job_id, tenant)
        if job is None:
            raise NotFound(f"job {job_id} not found", metadata={"job": job_id})
        return job

    async def fail(self, job_id: str, error: dict,
                   sources: tuple[State, ...] | None = None) -> bool:
        """FAILS the job unless it already ended (or, with `sources`, unless it is in none of
        them); True when this call moved it."""
        domain = r._s(await self.redis.hget(r.job_key(job_id), "domain") or "unknown")
        res = await self._transition(
            keys=[r.job_key(job_id), r.events_key(job_id), r.counts_key(domain)],
            args=r.transition_args(State.FAILED, {"error": error}, sources))
        if res[0]:
            metrics.job_finished(domain, State.FAILED.value, error)
        return bool(res[0])

    async def cancel(self, job_id: str, tenant: str) -> JobRecord:
        """QUEUED -> CANCELLED at once; RUNNING -> CANCELLING (the worker finishes the cancel)."""
        job = await self.require(job_id, tenant)
        keys = [r.job_key(job_id), r.events_key(job_id), r.counts_key(job.domain)]
        err = {"code": 1, "message": "cancelled by the client", "reason": "CANCELLED"}
        if job.state is State.QUEUED and (await self._transition(
                keys=keys, args=r.transition_args(State.CANCELLED, {"error": err})))[0]:
            metrics.job_finished(job.domain, State.CANCELLED.value, err)
        if (await self.require(job_id, tenant)).state is State.RUNNING:
            await self._transition(keys=keys, args=r.transition_args(State.CANCELLING))
        return await self.require(job_id, tenant)

    async def delete(self, job_id: str, tenant: str) -> JobRecord:
        job = await self.require(job_id, tenant)
        async with self.redis.pipeline(transaction=True) as p:
            p.delete(r.job_key(job_id), r.events_key(job_id), r.chunks_done_key(job_id),
                     r.chunk_deliveries_key(job_id))
            p.zrem(r.tenant_index_key(tenant), job_id)
            p.zrem(r.BATCH_DEADLINES_KEY, job_id)
            p.zrem(active_key(tenant), job_id)
            if job.request_id:
                p.delete(r.idempotency_key(tenant, job.request_id))
            p.hincrby(r.counts_key(job.domain), job.state.value, -1)
            await p.execute()
        return job

    async def list(self, tenant: str, *, page_size: int = 0, page_token: str = "",
                   states: set[State] | None = None, domain: str = "", kind: str = ""
                   ) -> tuple[list[JobRecord], str]:
        """Newest first. The token is a cursor (create time, id) bound to the filter, so a page
        never repeats or skips jobs created meanwhile."""
        if page_size < 0:
            raise InvalidArgument.for_field("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        filt = json.dumps([sorted(s.value for s in states or ()), domain, kind])
        cursor = _decode_token(page_token, filt) if page_token else None
        index = r.tenant_index_key(tenant)
        # Drop index entries whose records expired (the index itself has no per-member TTL).
        await self.redis.zremrangebyscore(index, "-inf", time.time() - self.retention_s)
        out: list[JobRecord] = []
        max_score: str | float = "+inf" if cursor is None else cursor[0]
        while len(out) < size + 1:
            chunk = await self.redis.zrevrangebyscore(index, max_score, "-inf", start=0,
                                                      num=4 * size + 10, withscores=True)
            chunk = [(r._s(m), s) for m, s in chunk]
            if cursor is not None:
                chunk = [(m, s) for m, s in chunk if s < cursor[0] or m < cursor[1]]
            if not chunk:
                break
            for job_id, score in chunk:
                job = await self.get(job_id, tenant)
                cursor = (score, job_id)
                if job is None or (states and job.state not in states) or \
                        (domain and job.domain != domain) or (kind and job.kind != kind):
                    continue
                out.append(job)
                if len(out) == size + 1:
                    break
            max_score = cursor[0]
        if len(out) > size:
            last = out[size - 1]
            return out[:size], _encode_token((last.create_time, last.id), filt)
        return out, ""

    async def last_event_id(self, job_id: str) -> str:
        last = await self.redis.xrevrange(r.events_key(job_id), count=1)
        return r._s(last[0][0]) if last else "0-0"

    async def events(self, job_id: str, after: str, block_ms: int) -> tuple[str, list[str]]:
        """Event types after stream id `after`, waiting up to block_ms; returns (new id, types).
        Token deltas are not job events here (see `entries`)."""
        after, entries = await self.entries(job_id, after, block_ms)
        return after, [e["type"] for e in entries if e.get("type") != "delta"]

    async def entries(self, job_id: str, after: str, block_ms: int) -> tuple[str, list[dict]]:
        """Raw stream entries (`type` = state | progress | delta, plus their fields) after
        stream id `after`, waiting up to block_ms; returns (new id, entries)."""
        res = await self.redis.xread({r.events_key(job_id): after}, block=block_ms, count=500)
        if not res:
            return after, []
        entries = res[0][1]
        out = [{r._s(k): r._s(v) for k, v in fields.items()} for _, fields in entries]
        return r._s(entries[-1][0]), out

    async def watch(self, job_id: str, tenant: str, deadline: float
                    ) -> AsyncIterator[tuple[str, JobRecord]]:
        """Yields ("snapshot", job), then ("state"|"progress", job) per event until done or the
        deadline (monotonic). Reads the stream position before the snapshot so nothing is lost."""
        after = await self.last_event_id(job_id)
        job = await self.require(job_id, tenant)
        yield "snapshot", job
        while not job.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            after, types = await self.events(job_id, after, int(min(remaining, 2.0) * 1000) or 1)
            if not types:  # nothing, or only token deltas
                # No event: re-read anyway so an expired/deleted job ends the stream.
                job = await self.require(job_id, tenant)
                continue
            job = await self.require(job_id, tenant)
            yield ("state" if "state" in types else "progress"), job

    async def wait(self, job_id: str, tenant: str, deadline: float) -> JobRecord:
        """The job once done, or as it is when the deadline (monotonic) passes."""
        last = None
        async for _, job in self.watch(job_id, tenant, deadline):
            last = job
        return last

    async def counts(self, domain: str) -> dict[str, int]:
        h = await self.redis.hgetall(r.counts_key(domain))
        return {r._s(k): int(v) for k, v in h.items()}


def _encode_token(cursor: tuple[float, str], filt: str) -> str:
    raw = json.dumps({"c": list(cursor), "f": filt}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, filt: str) -> tuple[float, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        score, job_id = float(data["c"][0]), str(data["c"][1])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidArgument.for_field("page_token", "is not a token from this API") from exc
    if data.get("f") != filt:
        raise InvalidArgument.for_field("page_token", "was issued for a different filter")
    return score, job_id
