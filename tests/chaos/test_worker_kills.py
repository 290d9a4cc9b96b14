"""The OCR worker `kill -9`ed every few seconds for KILL_FOR_S under a steady load of async OCR
submissions. Kills alternate between the prefork child alone (the Celery parent respawns it and
`task_reject_on_worker_lost` requeues its task at once) and the whole process group (the worker
is started again at once; its unacked task comes back after the visibility timeout). Every
accepted job must end SUCCEEDED exactly once in effect, or FAILED with a reason (WORKER_LOST
after `JOBMESH_MAX_DELIVERIES`); nothing may stay QUEUED or RUNNING."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import redis
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

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
KILL_EVERY_S = (3.0, 5.0)  # a kill lands a random 3-5 s after the previous one
PACE_S = 0.3  # one SubmitRecognize every 0.3 s
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


def _kill(stack, whole_group: bool) -> str:
    """One kill -9; returns what was killed. A child is killed only if the worker has one."""
    proc = stack.procs[WORKER]
    kids = _children(proc.pid)
    if whole_group or not kids:
        stack.kill(WORKER)  # the main process and its children, as test_recovery does
        stack.start_worker("ocr")
        return "group"
    os.kill(kids[0], signal.SIGKILL)
    return "child"


def test_worker_killed_every_few_seconds_under_load(chaos_stack, chaos_channel):
    stack, env = chaos_stack, chaos_stack.env
    url = env["JOBMESH_REDIS_URL"]
    ocr = ocr_service_pb2_grpc.OcrServiceStub(chaos_channel)
    assert ocr.Recognize(pb.RecognizeRequest(image=render("warm up")), metadata=auth(),
                         timeout=60).text == "warm up"
    rng = random.Random(10)
    kills: list[str] = []
    with Load({"submit": ocr_submitter(ocr, IMAGES, CALL_DEADLINE_S)}, PACE_S) as load:
        t_end = time.monotonic() + KILL_FOR_S
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(*KILL_EVERY_S))
            kills.append(_kill(stack, whole_group=len(kills) % 2 == 1))
    stack.wait_consumers("ocr.cpu", timeout=120)  # the last restart is consuming again
    jobs = load.accepted()
    t_settle = time.monotonic()
    states = wait_terminal(url, jobs, SETTLE_S)
    settled_s = round(time.monotonic() - t_settle, 1)

    not_done = {j: s for j, s in states.items() if s not in {"SUCCEEDED", "FAILED"}}
    assert not not_done, f"jobs not terminal {SETTLE_S}s after the last kill: {not_done}"
    outcomes = check_outcomes(chaos_channel, jobs)
    client = redis.Redis.from_url(url, decode_responses=True)
    deliveries = [int(client.hget(f"jobmesh:job:{j}", "deliveries") or 0) for j in jobs]
    figures = {
        "kill_for_s": KILL_FOR_S, "kills": {k: kills.count(k) for k in set(kills)},
        "calls": len(load.calls), "by_outcome": load.summary(), "accepted": len(jobs),
        "outcomes": outcomes, "redelivered_jobs": sum(d > 1 for d in deliveries),
        "redeliveries": sum(max(0, d - 1) for d in deliveries),
        "all_terminal_after_load_s": settled_s,
    }
    print("\nfigures:", figures)
    assert stuck_records(url) == []
    assert len(kills) >= 2 and "group" in kills and "child" in kills
    assert jobs, "the load client got no job accepted"
    # Submits only write to Redis: the worker's deaths never reach the client.
    bad = [c for c in load.calls if c.code != "OK"]
    assert not bad, f"{len(bad)} submits failed: {bad[:3]}"
    assert all(c.t1 - c.t0 <= CALL_DEADLINE_S + 1 for c in load.calls)
    # Kills landed on running jobs, and those came back (or failed with WORKER_LOST).
    assert figures["redeliveries"] >= 1, figures
