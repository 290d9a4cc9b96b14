"""The lost-message sweep: FAILS jobs whose task message vanished from the broker.

kombu 5.7's Redis transport takes a message off a queue list with BRPOP and records it in its
`unacked` hash afterwards, in Python; a worker `kill -9`ed in between takes the message with it,
and nothing redelivers it. Its job would stay QUEUED forever. This sweep looks at jobs not
started (`NOT_STARTED_KEY`) for longer than a grace, and for those still QUEUED looks for their
job id in every message of their queue's lists and of the `unacked` hash. A job whose id is in
none, twice over, FAILS with WORKER_LOST, through a transition allowed from QUEUED only, so a
job a worker started meanwhile is untouched.

Failing, not re-publishing: the record does not keep the request (it travels in the message
only), so the task cannot be rebuilt; the client may resubmit.

Batches are covered alike: each chunk message carries `{"job_id", "chunk"}`, so any chunk still
on the broker keeps a QUEUED batch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Callable, Iterable

import grpc
import redis.asyncio as aioredis

from shared.errors import JobmeshError
from shared.jobs import records as r
from shared.jobs.records import State
from shared.jobs.store import JobStore

log = logging.getLogger(__name__)

# kombu.transport.redis.Channel.unacked_key (no global_keyprefix is configured).
UNACKED_KEY = "unacked"
# Jobs looked at per sweep, and messages read per list: a list longer than this is not read in
# full, so its queue's jobs are left for a later sweep rather than failed on a partial view.
MAX_JOBS = 100
MAX_SCAN = 10_000
# A live worker holds a message in neither place between its BRPOP and its unacked write (a
# few ms); a job missing in two views this far apart is not in that window.
CONFIRM_S = 1.0

_JOB_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")  # uuid4().hex


def lost_error() -> dict:
    return JobmeshError(
        "the job's queued task was lost (a worker died while taking it off the queue); it "
        "never ran: submit it again", reason="WORKER_LOST", retry_after_s=1.0,
        code=grpc.StatusCode.UNAVAILABLE).to_dict()


def job_ids(raw: bytes | str) -> set[str]:
    """Job ids in one kombu message as stored in a queue list (the envelope) or in `unacked`
    ([envelope, exchange, routing key]). Searches the decoded Celery body; when it cannot be
    decoded, the raw text (a wrong guess only keeps a job QUEUED)."""
    text = r._s(raw)
    try:
        doc = json.loads(text)
        msg = doc[0] if isinstance(doc, list) else doc
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode("utf-8", "replace")
        text = body if isinstance(body, str) else text
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        pass
    return set(_JOB_ID.findall(text))


async def on_broker(redis: aioredis.Redis, lists: dict[str, list[str]]
                    ) -> tuple[set[str], set[str]]:
    """One atomic view (MULTI) of the given queues' lists and of `unacked`: returns (job ids in
    some message, queues too long to read in full)."""
    names = [(q, n) for q, ns in lists.items() for n in ns]
    async with redis.pipeline(transaction=True) as p:
        for _, n in names:
            p.llen(n)
            p.lrange(n, -MAX_SCAN, -1)  # the oldest end: BRPOP takes from the right
        p.hvals(UNACKED_KEY)
        res = await p.execute()
    found: set[str] = set()
    partial: set[str] = set()
    for i, (queue, _) in enumerate(names):
        if res[2 * i] > MAX_SCAN:
            partial.add(queue)
        for raw in res[2 * i + 1]:
            found |= job_ids(raw)
    for raw in res[-1]:
        found |= job_ids(raw)
    return found, partial


async def fail_lost(redis: aioredis.Redis, store: JobStore,
                    lists_for: Callable[[str], list[str]], grace_s: float) -> int:
    """FAILS (WORKER_LOST) the jobs created over `grace_s` ago, still QUEUED, already on the
    broker by the gateway's account, whose message is on the broker no more; returns how many.
    Reads the broker only when some job is past the grace."""
    due = await redis.zrangebyscore(r.NOT_STARTED_KEY, "-inf", time.time() - grace_s,
                                    start=0, num=MAX_JOBS)
    queued: dict[str, str] = {}  # job id -> queue
    undispatched: list[str] = []  # fail_undispatched's to end; not in the way of the others
    for member in due:
        job = await store.get(r._s(member), None)
        if job is None or job.state is not State.QUEUED:
            await redis.zrem(r.NOT_STARTED_KEY, member)  # ended some other way
        elif await redis.zscore(r.UNDISPATCHED_KEY, job.id) is None:
            queued[job.id] = job.queue
        else:
            undispatched.append(job.id)
    await _recheck_later(redis, undispatched)
    if not queued:
        return 0
    lists = {q: lists_for(q) for q in set(queued.values())}
    missing = await _missing(redis, queued, lists)
    if missing:
        await asyncio.sleep(CONFIRM_S)
        missing &= await _missing(redis, queued, lists)
    failed = 0
    for job_id in missing:
        moved = await store.fail(job_id, lost_error(), sources=(State.QUEUED,))
        if moved:
            failed += 1
            log.warning("lost task message: job failed", extra={"job_id": job_id})
        await redis.zrem(r.NOT_STARTED_KEY, job_id)
    # Still on the broker (or not known): look again one grace from now, not every sweep.
    await _recheck_later(redis, (j for j in queued if j not in missing))
    return failed


async def _missing(redis: aioredis.Redis, queued: dict[str, str],
                   lists: dict[str, list[str]]) -> set[str]:
    found, partial = await on_broker(redis, lists)
    return {j for j, q in queued.items() if j not in found and q not in partial}


async def _recheck_later(redis: aioredis.Redis, job_ids_: Iterable[str]) -> None:
    later = {j: time.time() for j in job_ids_}
    if later:
        await redis.zadd(r.NOT_STARTED_KEY, later, xx=True)
