"""Per-tenant limits at the gateway: a request rate (GCRA, in Redis so every replica shares it)
and the active-job quota's limit for the call (enforced where jobs are created,
`shared.jobs.quota`).

`QuotaInterceptor` runs inside `AuthInterceptor`, so it sees the caller's `Principal`; calls
without one (health) pass untouched. It is an interceptor of its own rather than part of
`AuthInterceptor` because it needs Redis and the settings, which identifying the caller does
not, and a gateway without limits configured makes no Redis call here at all.

A refusal is RESOURCE_EXHAUSTED, ErrorInfo reason `RATE_LIMITED`, RetryInfo the time until the
tenant's bucket admits one more call; the error interceptor records it in
`requests_total{code="RESOURCE_EXHAUSTED"}` like any other error.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.auth import Principal
from shared.config import Settings
from shared.errors import ResourceExhausted
from shared.jobs.quota import active_job_limit
from shared.jobs.records import PREFIX
from shared.server.interceptors import _wrap, caller

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantLimits:
    """The limits one call is held to; 0 = unlimited."""

    rate_per_s: float = 0.0
    burst: int = 0
    max_active_jobs: int = 0


def limits_for(principal: Principal, settings: Settings) -> TenantLimits:
    """The key's own values where its YAML entry sets them, else the gateway's defaults. The
    burst defaults to one second's worth of calls, at least 1."""
    rate = principal.rate_per_s if principal.rate_per_s is not None else \
        settings.tenant_rate_per_s
    burst = principal.rate_burst if principal.rate_burst is not None else \
        settings.tenant_rate_burst
    active = principal.max_active_jobs if principal.max_active_jobs is not None else \
        settings.tenant_max_active_jobs
    return TenantLimits(rate, burst or max(1, math.ceil(rate)), active)


def rate_key(tenant: str) -> str:
    return f"{PREFIX}:rate:{tenant}"


# GCRA (a token bucket kept as one number: the theoretical arrival time, TAT, in µs of Redis's
# clock, so replicas with skewed clocks agree). KEYS: the tenant's TAT. ARGV: µs per call,
# burst. Returns {1, 0} when admitted, {0, µs until a call would be}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + period
local allow_at = new_tat - tonumber(ARGV[2]) * period
if allow_at > now then return {0, allow_at - now} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           math.floor((new_tat - now) / 1000) + 1)
return {1, 0}
"""


class RateLimiter:
    """One round trip per call."""

    def __init__(self, redis: aioredis.Redis):
        self._gcra = redis.register_script(GCRA_LUA)

    async def wait_s(self, tenant: str, rate_per_s: float, burst: int) -> float:
        """0 when the call is admitted (and counted), else seconds until one would be."""
        if rate_per_s <= 0:
            return 0.0
        ok, wait_us = await self._gcra(keys=[rate_key(tenant)],
                                       args=[round(1e6 / rate_per_s), max(1, burst)])
        return 0.0 if ok else int(wait_us) / 1e6

    async def check(self, tenant: str, limits: TenantLimits) -> None:
        """Raises RATE_LIMITED when the tenant is over its rate. If Redis cannot answer, the
        call goes through (logged): the limiter must not turn a Redis hiccup into an outage
        of calls that do not need Redis."""
        try:
            wait = await self.wait_s(tenant, limits.rate_per_s, limits.burst)
        except RedisError as exc:
            log.warning("rate limit not checked", extra={"error": str(exc)})
            return
        if wait > 0:
            raise ResourceExhausted(
                f"tenant {tenant} is over its rate limit of {limits.rate_per_s:g} calls/s "
                f"(burst {limits.burst}); retry in {wait:.3f} s", reason="RATE_LIMITED",
                retry_after_s=wait,
                metadata={"rate_per_s": f"{limits.rate_per_s:g}", "burst": str(limits.burst)})


class QuotaInterceptor(grpc.aio.ServerInterceptor):
    """Applies the caller's rate limit and sets its active-job limit for the call."""

    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self.settings = settings
        self.limiter = RateLimiter(redis)

    async def _enter(self) -> None:
        principal = caller()
        if principal is None:  # an open method (health)
            return
        limits = limits_for(principal, self.settings)
        await self.limiter.check(principal.tenant, limits)
        active_job_limit.set(limits.max_active_jobs)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler

        def unary(fn):
            async def call(request, context):
                await self._enter()
                return await fn(request, context)
            return call

        def stream(fn):
            async def call(request, context):
                await self._enter()
                async for item in fn(request, context):
                    yield item
            return call

        return _wrap(handler, unary, stream)
