"""The job record: Redis key layout, field encoding and the state machine, shared by the gateway's
asyncio `JobStore` and the workers' `WorkerJobStore`.

A job is a Redis hash `jobmesh:job:<id>` plus an event stream `jobmesh:job:<id>:events`. Every
state change goes through one Lua script that checks the current state against the allowed
sources, so a late duplicate delivery can never move a finished job (SUCCEEDED stays SUCCEEDED).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum

PREFIX = "jobmesh"


class State(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})

# target state -> the states it may be entered from. RUNNING -> RUNNING is a redelivery after a
# worker died mid-job: the task starts again and the history shows both starts.
ALLOWED_FROM: dict[State, tuple[State, ...]] = {
    State.RUNNING: (State.QUEUED, State.RUNNING),
    State.SUCCEEDED: (State.RUNNING, State.CANCELLING),
    State.FAILED: (State.QUEUED, State.RUNNING, State.CANCELLING),
    State.CANCELLING: (State.RUNNING,),
    State.CANCELLED: (State.QUEUED, State.CANCELLING),
}


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def tenant_index_key(tenant: str) -> str:
    return f"{PREFIX}:jobs:{tenant}"


def idempotency_key(tenant: str, request_id: str) -> str:
    return f"{PREFIX}:idem:{tenant}:{request_id}"


def counts_key(domain: str) -> str:
    return f"{PREFIX}:jobcounts:{domain}"


def dead_letter_key(queue: str) -> str:
    return f"{PREFIX}:deadletter:{queue}"


def consumers_key(queue: str) -> str:
    return f"{PREFIX}:consumers:{queue}"


def chunks_done_key(job_id: str) -> str:
    """Set of a batch's chunk indexes whose lines are all recorded."""
    return f"{PREFIX}:job:{job_id}:chunks"


def chunk_deliveries_key(job_id: str) -> str:
    """Hash chunk index -> how many times a worker received that chunk's task."""
    return f"{PREFIX}:job:{job_id}:chunk-deliveries"


ARTIFACT_EXPIRY_KEY = f"{PREFIX}:artifacts:expiry"
# Batches by the end of their completion window (score): the gateway janitor expires them.
BATCH_DEADLINES_KEY = f"{PREFIX}:batches:deadline"
# Jobs created but whose task is not yet known to be on the broker (job id -> create time). A
# gateway that loses Redis between the two leaves a record no task will ever run; the janitor
# fails those after `dispatch_grace_s` instead of leaving them QUEUED forever.
UNDISPATCHED_KEY = f"{PREFIX}:jobs:undispatched"
# Jobs not yet started by a worker (job id -> create time): added with the record, removed by the
# worker's move to RUNNING (and lazily by the janitor for jobs that ended otherwise). A worker
# `kill -9`ed between kombu's BRPOP and its unacked write loses the task message; the janitor
# fails such a job after `lost_message_grace_s` (shared/jobs/lost_messages.py).
NOT_STARTED_KEY = f"{PREFIX}:jobs:not-started"
# Events kept per job: token deltas of a long generation must outlive a slow reader.
EVENTS_MAXLEN = 20_000

# KEYS: job hash, events stream, per-domain counts. ARGV: target, allowed sources (comma list),
# now (epoch s), JSON object of extra fields to set. Returns {1|0, previous state}.
# A batch that ends while QUEUED (cancelled, failed by the janitor) never had a chunk start, so
# no worker will finalize it: its phase becomes DONE here, with no files.
TRANSITION_LUA = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
local ok = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == cur then ok = true end end
if not ok then return {0, cur} end
local tr = cjson.decode(redis.call('HGET', KEYS[1], 'transitions') or '[]')
tr[#tr + 1] = {ARGV[1], tonumber(ARGV[3])}
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'update_time', ARGV[3],
           'transitions', cjson.encode(tr))
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], k, v) end
local terminal = ARGV[1] == 'SUCCEEDED' or ARGV[1] == 'FAILED' or ARGV[1] == 'CANCELLED'
local batch = redis.call('HGET', KEYS[1], 'batch')
if cur == 'QUEUED' and terminal and batch and batch ~= '' then
  redis.call('HSET', KEYS[1], 'batch_phase', 'DONE')
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 20000, '*', 'type', 'state', 'state', ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('HINCRBY', KEYS[3], cur, -1)
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return {1, cur}
"""

# KEYS: job hash, events stream. ARGV: done, total, message, now. Progress of a finished job is
# ignored (a slow duplicate must not rewrite history).
PROGRESS_LUA = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur ~= 'RUNNING' and cur ~= 'CANCELLING' then return 0 end
redis.call('HSET', KEYS[1], 'progress_done', ARGV[1], 'progress_total', ARGV[2],
           'progress_message', ARGV[3], 'update_time', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 20000, '*', 'type', 'progress')
return 1
"""

# A batch chunk's lines are recorded. KEYS: job hash, events stream, chunks-done set.
# ARGV: chunk index, lines completed, lines failed, now. Counts each chunk once, however often
# its task ran; returns {1|0 (counted now), chunks done}.
CHUNK_DONE_LUA = """
if not redis.call('HGET', KEYS[1], 'state') then return {0, 0} end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return {0, redis.call('SCARD', KEYS[3])} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
local c = redis.call('HINCRBY', KEYS[1], 'batch_completed', ARGV[2])
local f = redis.call('HINCRBY', KEYS[1], 'batch_failed', ARGV[3])
redis.call('HSET', KEYS[1], 'progress_done', c + f, 'update_time', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 20000, '*', 'type', 'progress')
return {1, redis.call('SCARD', KEYS[3])}
"""


@dataclass
class BatchInfo:
    """What a job of kind BATCH adds. `meta` holds the fields fixed at creation (service,
    method, task, deadline, chunks, input_file) and the files once written (output_file,
    error_file); the phase and counts are hash fields of their own so workers update them
    atomically."""

    meta: dict
    phase: str = "VALIDATING"
    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_hash(self) -> dict[str, str]:
        return {"batch": json.dumps(self.meta), "batch_phase": self.phase,
                "batch_total": str(self.total), "batch_completed": str(self.completed),
                "batch_failed": str(self.failed)}

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> BatchInfo | None:
        if not h.get("batch"):
            return None
        return cls(json.loads(h["batch"]), h.get("batch_phase", "VALIDATING"),
                   int(h.get("batch_total", 0)), int(h.get("batch_completed", 0)),
                   int(h.get("batch_failed", 0)))


@dataclass
class JobRecord:
    """A job as stored. Times are epoch seconds; `result` is the domain's JSON result."""

    id: str
    tenant: str
    domain: str
    method: str
    queue: str
    kind: str = "SINGLE"
    state: State = State.QUEUED
    request_id: str = ""
    create_time: float = 0.0
    update_time: float = 0.0
    expire_time: float = 0.0
    transitions: list[tuple[str, float]] = field(default_factory=list)
    deliveries: int = 0
    progress_done: int = 0
    progress_total: int = 0
    progress_message: str = ""
    error: dict | None = None
    result: dict | None = None
    artifacts: list[dict] = field(default_factory=list)
    batch: BatchInfo | None = None

    @property
    def done(self) -> bool:
        return self.state.terminal

    @property
    def name(self) -> str:
        return f"jobs/{self.id}"

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id, "tenant": self.tenant, "domain": self.domain, "method": self.method,
            "queue": self.queue, "kind": self.kind, "state": self.state.value,
            "request_id": self.request_id, "create_time": repr(self.create_time),
            "update_time": repr(self.update_time), "expire_time": repr(self.expire_time),
            "transitions": json.dumps(self.transitions), "deliveries": str(self.deliveries),
            "progress_done": str(self.progress_done), "progress_total": str(self.progress_total),
            "progress_message": self.progress_message,
            "artifacts": json.dumps(self.artifacts),
            **(self.batch.to_hash() if self.batch is not None else {}),
        }

    @classmethod
    def from_hash(cls, h: dict) -> JobRecord:
        h = {_s(k): _s(v) for k, v in h.items()}
        return cls(
            id=h["id"], tenant=h["tenant"], domain=h["domain"], method=h["method"],
            queue=h.get("queue", ""), kind=h.get("kind", "SINGLE"), state=State(h["state"]),
            request_id=h.get("request_id", ""), create_time=float(h.get("create_time", 0)),
            update_time=float(h.get("update_time", 0)),
            expire_time=float(h.get("expire_time", 0)),
            transitions=[tuple(t) for t in json.loads(h.get("transitions", "[]"))],
            deliveries=int(h.get("deliveries", 0)),
            progress_done=int(h.get("progress_done", 0)),
            progress_total=int(h.get("progress_total", 0)),
            progress_message=h.get("progress_message", ""),
            error=json.loads(h["error"]) if h.get("error") else None,
            result=json.loads(h["result"]) if h.get("result") else None,
            artifacts=json.loads(h.get("artifacts", "[]")),
            batch=BatchInfo.from_hash(h),
        )


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def now() -> float:
    return time.time()


def transition_args(target: State, extra: dict | None = None,
                    sources: tuple[State, ...] | None = None) -> list[str]:
    """ARGV for TRANSITION_LUA; `extra` values are JSON-encoded unless already strings.
    `sources` narrows the states the move is allowed from (default: all of ALLOWED_FROM)."""
    fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()}
    allowed = [s for s in ALLOWED_FROM[target] if sources is None or s in sources]
    return [target.value, ",".join(s.value for s in allowed), repr(now()), json.dumps(fields)]
