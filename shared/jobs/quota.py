"""The per-tenant active-job quota: at most N of a tenant's jobs (batches included) may be
QUEUED, RUNNING or CANCELLING at once; `JobStore.create` refuses one more with
RESOURCE_EXHAUSTED / QUOTA_EXCEEDED.

The tenant's active jobs are a Redis sorted set `jobmesh:active:<tenant>` (job id -> admitted
at), shared by every gateway replica. Admission is one Lua script: below the limit it adds the
new id at once; at the limit it first drops the members that are no longer active, judged by
the job records themselves (terminal state, or record gone: deleted or past retention), and
only then decides. So whatever ends a job (a worker's success or failure, a cancel, batch
expiry, the undispatched-job janitor, a dispatch failure) frees its slot without any of those
paths knowing about quotas, and a crash between admission and writing the record cannot leak a
slot for longer than `PENDING_GRACE_S`. Stale members only over-count, and the set is checked
before any refusal, so a refusal is always exact.

The script reads the job hashes by name (keys it is not passed): fine on the single Redis the
mesh uses, not on Redis Cluster.
"""

from __future__ import annotations

import contextvars

import redis.asyncio as aioredis

from shared.errors import ResourceExhausted
from shared.jobs.records import PREFIX, TERMINAL, job_key

# The calling tenant's limit for the RPC being served (0 = none), set by the gateway's quota
# interceptor from the API key and the settings; `JobStore.create` reads it.
active_job_limit: contextvars.ContextVar[int] = contextvars.ContextVar("active_job_limit",
                                                                       default=0)

# A member without a job record is a job being created right now; only after this long is it
# a leftover of a failed creation.
PENDING_GRACE_S = 60
# What RetryInfo says on a refusal: a job's end cannot be predicted, so a short constant.
RETRY_AFTER_S = 1.0


def active_key(tenant: str) -> str:
    return f"{PREFIX}:active:{tenant}"


# KEYS: the tenant's active set. ARGV: job id, limit, pending grace (s), set TTL (s), job hash
# key prefix. Returns {1|0 (admitted), active count including the new job when admitted}.
ADMIT_LUA = """
local now = tonumber(redis.call('TIME')[1])
local limit = tonumber(ARGV[2])
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local terminal = {TERMINAL_STATES}
  local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #members, 2 do
    local state = redis.call('HGET', ARGV[5] .. members[i], 'state')
    local lost = (not state) and tonumber(members[i + 1]) < now - tonumber(ARGV[3])
    if lost or (state and terminal[state]) then
      redis.call('ZREM', KEYS[1], members[i])
      n = n - 1
    end
  end
end
if n >= limit then return {0, n} end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1, n + 1}
""".replace("TERMINAL_STATES", ", ".join(f"{s.value} = true" for s in sorted(TERMINAL)))


class ActiveJobs:
    """Admission against the quota; one round trip per job created."""

    def __init__(self, redis: aioredis.Redis, retention_s: int):
        self.redis = redis
        self.retention_s = retention_s
        self._admit = redis.register_script(ADMIT_LUA)

    async def admit(self, tenant: str, job_id: str, limit: int) -> None:
        """Counts `job_id` as active, or raises QUOTA_EXCEEDED when `limit` (> 0) jobs of the
        tenant already are. `limit` 0 admits without counting."""
        if limit <= 0:
            return
        ok, active = await self._admit(
            keys=[active_key(tenant)],
            args=[job_id, limit, PENDING_GRACE_S, self.retention_s, job_key("")])
        if not ok:
            raise ResourceExhausted(
                f"tenant {tenant} has {active} queued or running jobs, its quota is {limit}; "
                "submit again once one ends", reason="QUOTA_EXCEEDED",
                retry_after_s=RETRY_AFTER_S,
                metadata={"active_jobs": str(active), "max_active_jobs": str(limit)})

    async def release(self, tenant: str, job_id: str) -> None:
        """Frees the slot at once (a job deleted, or never written)."""
        await self.redis.zrem(active_key(tenant), job_id)
