"""Container health probe for a jobmesh worker: exits 0 while THIS container's worker beats.

    python /opt/jobmesh/worker_healthcheck.py DOMAIN        (e.g. `ocr`)

A worker's main process beats into the Redis sorted set `jobmesh:consumers:<domain>.<device>`
(member `<celery node name>:<pid>`, score = time; see shared/jobs/consumers.py). That beat is what
gateways count for readiness, so probing it checks the same thing the mesh relies on: the Celery
worker finished starting, reaches Redis, and its heartbeat thread is alive. The member whose node
name's host part equals this container's hostname (Celery's `%h` in `--name ocr@%h`) and whose
score is fresher than JOBMESH_CONSUMER_TTL_S counts.

Exit codes: 0 healthy, 1 no fresh beat from this host (or Redis unreachable), 2 usage.
Only `shared.config` and `shared.jobs.records` are imported, so a probe costs tens of
milliseconds, not a model load.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterable


def node_host(member: bytes | str) -> str:
    """`ocr@host-1:123` -> `host-1` (the host part of the Celery node name, pid dropped)."""
    text = member.decode() if isinstance(member, bytes) else member
    node = text.rsplit(":", 1)[0]
    return node.split("@", 1)[-1]


def beating_here(members: Iterable[tuple[bytes | str, float]], hostname: str, now: float,
                 ttl_s: float) -> bool:
    """True when some (member, score) of this host beat within `ttl_s` of `now`."""
    return any(node_host(m) == hostname and now - score <= ttl_s for m, score in members)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: worker_healthcheck.py DOMAIN", file=sys.stderr)
        return 2
    import redis

    from shared.config import Settings
    from shared.jobs.records import consumers_key

    settings = Settings()
    queue = settings.queue(args[0])
    now = time.time()
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)
        members = client.zrangebyscore(consumers_key(queue), now - settings.consumer_ttl_s,
                                       "+inf", withscores=True)
    except redis.RedisError as exc:
        print(f"UNHEALTHY: redis unreachable ({exc})")
        return 1
    host = socket.gethostname()
    if beating_here(members, host, now, settings.consumer_ttl_s):
        print(f"HEALTHY: {host} consumes {queue}")
        return 0
    print(f"UNHEALTHY: no heartbeat from {host} on {queue} within {settings.consumer_ttl_s}s")
    return 1


if __name__ == "__main__":
    sys.exit(main())
