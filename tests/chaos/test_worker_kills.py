"""The OCR worker `kill -9`ed every few seconds for KILL_FOR_S under a steady load of async OCR
submissions, each kill 3-5 s after the worker is working again. Kills alternate between the
prefork child alone (the Celery parent respawns it and `task_reject_on_worker_lost` requeues its
task at once) and the whole process group (a supervisor starts the worker again; its unacked
task comes back after the visibility timeout). Every accepted job must end SUCCEEDED exactly once
in effect, or FAILED with a reason (WORKER_LOST after `JOBMESH_MAX_DELIVERIES`, or WORKER_LOST
when a kill took the task message itself, after JOBMESH_LOST_MESSAGE_GRACE_S); nothing may
stay QUEUED or RUNNING."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
import redis
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from bench.soak import Periodic
from tests.chaos.conftest import VISIBILITY_TIMEOUT_S
from tests.chaos.load import (
    Load,
    check_outcomes,
    ocr_submitter,
    stuck_records,
    wait_terminal,
)
from tests.conftest import auth
from tests.integration.helpers import render

pytestmark = pytest.mark.chaos

KILL_FOR_S = float(os.environ.get("CHAOS_KILL_FOR_S", "30"))  # `make chaos`: 120
KILL_EVERY_S = (3.0, 5.0)  # a kill lands 3-5 s after the worker is working again
PACE_S = 0.5  # one SubmitRecognize every 0.5 s (a worker killed this often drains slowly)
CALL_DEADLINE_S = 5.0
SETTLE_S = VISIBILITY_TIMEOUT_S + 60  # a group kill's task is back after the visibility timeout
IMAGES = [render(f"killed worker {i}") for i in range(4)]
WORKER = "worker-ocr"


def _children(pid: int) -> list[int]:
    """The worker's prefork children (direct children of its main process)."""
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class Supervisor(Periodic):
    """What a restart policy (compose `restart: unless-stopped`, a Kubernetes Deployment) does:
    starts the worker again whenever its main process is gone. Needed beyond the group kills: a
    child killed while the pool is still starting takes the whole Celery worker down
    ("WorkerLostError: Could not start worker processes")."""

    def __init__(self, stack):
        super().__init__(0.2)
        self.stack, self.restarts = stack, 0
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            proc = self.stack.procs.get(WORKER)
            if proc is None or proc.poll() is not None:
                self.stack.procs.pop(WORKER, None)
                self.stack.start_worker("ocr")
                self.restarts += 1

    def kill(self, whole_group: bool) -> str:
        """One kill -9; returns what was killed. For a child, waits (bounded) until the worker
        has forked one (a restarted worker takes seconds to, on a busy machine)."""
        if whole_group:
            with self.lock:
                self.stack.kill(WORKER)  # main process and children, as test_recovery does
            return "group"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.lock:
                proc = self.stack.procs.get(WORKER)
                kids = _children(proc.pid) if proc is not None else []
                if kids:
                    os.kill(kids[0], signal.SIGKILL)
                    return "child"
            time.sleep(0.2)
        raise AssertionError(f"no prefork child 30 s on:\n{self.stack.log_tail(WORKER)}")


def _wait_progress(url: str, load: Load, timeout: float = 60.0) -> None:
    """Until one more of the load's jobs has SUCCEEDED than now (bounded)."""
    client = redis.Redis.from_url(url, decode_responses=True)

    def done() -> int:
        with client.pipeline() as p:
            for j in load.accepted():
                p.hget(f"jobmesh:job:{j}", "state")
            return sum(s == "SUCCEEDED" for s in p.execute())

    n0, deadline = done(), time.monotonic() + timeout
    while done() <= n0 and time.monotonic() < deadline:
        time.sleep(0.2)


def _lost_messages(client, jobs: list[str]) -> set[str]:
    """Jobs never delivered that FAILED with WORKER_LOST: their task message was lost (kombu's
    Redis transport takes a message off the list with BRPOP and records it as unacked
    afterwards, in Python; a worker killed in between takes it with it), and the gateways'
    janitor failed them after JOBMESH_LOST_MESSAGE_GRACE_S instead of leaving them QUEUED."""
    out = set()
    for j in jobs:
        h = client.hgetall(f"jobmesh:job:{j}")
        if h.get("state") == "FAILED" and int(h.get("deliveries") or 0) == 0 \
                and json.loads(h.get("error") or "{}").get("reason") == "WORKER_LOST":
            out.add(j)
    return out


def test_worker_killed_every_few_seconds_under_load(chaos_stack, chaos_channel):
    stack, env = chaos_stack, chaos_stack.env
    url = env["JOBMESH_REDIS_URL"]
    ocr = ocr_service_pb2_grpc.OcrServiceStub(chaos_channel)
    assert ocr.Recognize(pb.RecognizeRequest(image=render("warm up")), metadata=auth(),
                         timeout=60).text == "warm up"
    rng = random.Random(10)
    kills: list[str] = []
    # The supervisor outlives the load: the last kill's worker must come back too.
    with Supervisor(stack) as supervisor:
        with Load({"submit": ocr_submitter(ocr, IMAGES, CALL_DEADLINE_S)}, PACE_S) as load:
            t_end = time.monotonic() + KILL_FOR_S
            while time.monotonic() < t_end:
                # Each kill lands 3-5 s into a working worker, one that has finished a job since
                # the last kill: a restart takes seconds on a busy machine, and a kill before
                # the worker is back would only ever hit its start-up.
                _wait_progress(url, load)
                time.sleep(rng.uniform(*KILL_EVERY_S))
                kills.append(supervisor.kill(whole_group=len(kills) % 2 == 1))
        jobs = load.accepted()
        t_settle = time.monotonic()
        states = wait_terminal(url, jobs, SETTLE_S)
        settled_s = round(time.monotonic() - t_settle, 1)
    stack.wait_consumers("ocr.cpu", timeout=120)  # left running for whatever runs next

    client = redis.Redis.from_url(url, decode_responses=True)
    lost = _lost_messages(client, jobs)
    not_done = {j: s for j, s in states.items() if s not in {"SUCCEEDED", "FAILED"}}
    assert not not_done, f"jobs not terminal {SETTLE_S}s after the last kill: {not_done}"
    outcomes = check_outcomes(chaos_channel, jobs)
    deliveries = [int(client.hget(f"jobmesh:job:{j}", "deliveries") or 0) for j in jobs]
    figures = {
        "kill_for_s": KILL_FOR_S, "kills": {k: kills.count(k) for k in set(kills)},
        "worker_restarts": supervisor.restarts,
        "calls": len(load.calls), "by_outcome": load.summary(),
        "accepted": len(jobs),
        "outcomes": outcomes, "redelivered_jobs": sum(d > 1 for d in deliveries),
        "redeliveries": sum(max(0, d - 1) for d in deliveries),
        "all_terminal_after_load_s": settled_s, "lost_messages": len(lost),
    }
    print("\nfigures:", figures)
    assert stuck_records(url, within_s=1) == []
    assert len(kills) >= 2 and "group" in kills and "child" in kills
    assert jobs, "the load client got no job accepted"
    # Submits only write to Redis: the worker's deaths never reach the client.
    bad = [c for c in load.calls if c.code != "OK"]
    assert not bad, f"{len(bad)} submits failed: {bad[:3]}"
    assert all(c.t1 - c.t0 <= CALL_DEADLINE_S + 1 for c in load.calls)
    # Whether a kill lands on a running job is up to timing (a clean-clone CI run had 6 kills
    # and 0 redeliveries), so redeliveries are reported, not required; a killed job coming back
    # exactly once is proven by tests/integration/test_recovery.py.
    # A lost message's job FAILED with WORKER_LOST (a client may resubmit it), never stays.
    for j in lost:
        err = json.loads(client.hget(f"jobmesh:job:{j}", "error"))
        assert "queued task was lost" in err["message"], err
    # And none was a false alarm: once the queue is drained, no worker has received a lost
    # job's task (a received one logs its job id, if only as a late duplicate).
    deadline = time.monotonic() + 10
    while client.llen("ocr.cpu") and time.monotonic() < deadline:
        time.sleep(0.2)
    worker_log = (stack.root / "logs" / f"{WORKER}.log").read_text(errors="replace")
    assert not [j for j in lost if j in worker_log], "a job failed as lost reached a worker"
