"""Redis (broker and job store) restarted under a steady load of async OCR submissions, with
diagnostic jobs running and queued at the moment it goes: `kill -9`, and a graceful SHUTDOWN.
Redis runs append-only with `appendfsync always`, so every write it acknowledged survives."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import redis
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from tests.chaos.conftest import VISIBILITY_TIMEOUT_S, start_redis
from tests.chaos.load import (
    Load,
    check_outcomes,
    ocr_submitter,
    stuck_records,
    wait_terminal,
)
from tests.conftest import auth
from tests.integration.helpers import render, submit_diag, wait_state

pytestmark = pytest.mark.chaos

OUTAGE_S = 5.0  # Redis is gone this long
CALL_DEADLINE_S = 5.0  # each SubmitRecognize call's deadline
PACE_S = 0.3  # one call every 0.3 s from one thread: about 3 a second
AFTER_S = 8.0  # load continues this long after Redis is back
SETTLE_S = VISIBILITY_TIMEOUT_S + 30  # every accepted job is terminal by then
IMAGES = [render(f"chaos line {i}") for i in range(4)]


@dataclass
class Run:
    load: Load
    t_down: float  # Redis stopped
    t_restart: float  # the new redis-server starting
    t_up: float  # Redis answering again
    jobs: list[str]  # every job the mesh accepted: the load's and the two diagnostic jobs
    running: str
    queued: str
    states: dict[str, str]  # after SETTLE_S at most
    figures: dict


def _stop(stack, how: str) -> None:
    if how == "kill-9":
        stack.kill("redis")
        return
    proc = stack.procs.pop("redis")
    redis.Redis.from_url(stack.env["JOBMESH_REDIS_URL"]).shutdown()  # fsyncs the AOF, exits
    proc.wait(15)


@pytest.fixture(scope="module", params=["kill-9", "shutdown"])
def redis_restart(request, chaos_stack, chaos_channel_module):
    """Runs the fault once per way of stopping Redis; the tests below read what happened."""
    stack, env = chaos_stack, chaos_stack.env
    ocr = ocr_service_pb2_grpc.OcrServiceStub(chaos_channel_module)
    assert ocr.Recognize(pb.RecognizeRequest(image=render("warm up")), metadata=auth(),
                         timeout=60).text == "warm up"
    with Load({"submit": ocr_submitter(ocr, IMAGES, CALL_DEADLINE_S)}, PACE_S) as load:
        time.sleep(2)
        # One job running and one queued behind it when Redis goes (one worker, prefetch 1).
        running = submit_diag(env, "jobmesh.diag.v1.sleep", {"seconds": 3})
        queued = submit_diag(env, "jobmesh.diag.v1.sleep", {"seconds": 1})
        wait_state(env, running, {"RUNNING"}, 30)
        t_down = time.monotonic()
        _stop(stack, request.param)
        time.sleep(OUTAGE_S)
        t_restart = time.monotonic()
        start_redis(stack, stack.redis_port)
        t_up = time.monotonic()
        time.sleep(AFTER_S)
    jobs = load.accepted() + [running, queued]
    t_settle = time.monotonic()
    states = wait_terminal(env["JOBMESH_REDIS_URL"], jobs, SETTLE_S)
    figures = {
        "fault": request.param, "calls": len(load.calls), "by_outcome": load.summary(),
        "accepted": len(jobs), "outage_s": round(t_up - t_down, 1),
        "restart_s": round(t_up - t_restart, 1),
        "calls_in_outage": len(load.between(t_down, t_up)),
        "first_ok_after_restart_s": load.first_ok_after(t_up),
        "slowest_call_s": round(max(c.t1 - c.t0 for c in load.calls), 2),
        "all_terminal_after_load_s": round(time.monotonic() - t_settle, 1),
        "final_states": {s: list(states.values()).count(s) for s in set(states.values())},
        "diag_deliveries": [redis.Redis.from_url(env["JOBMESH_REDIS_URL"]).hget(
            f"jobmesh:job:{j}", "deliveries") for j in (running, queued)],
    }
    print("\nfigures:", figures)
    yield Run(load, t_down, t_restart, t_up, jobs, running, queued, states, figures)
    # (A gateway's pooled connections from before the restart are retried on fresh ones, so
    # the gateway keeps serving as is: the S3 test that runs next uses it.)


def test_every_accepted_job_ends_succeeded_once_or_failed_with_a_reason(redis_restart,
                                                                      chaos_channel):
    run = redis_restart
    not_done = {j: s for j, s in run.states.items() if s not in {"SUCCEEDED", "FAILED"}}
    assert not not_done, f"jobs not terminal {SETTLE_S}s after Redis came back: {not_done}"
    outcomes = check_outcomes(chaos_channel, run.jobs)
    print("\noutcomes:", run.figures["fault"], outcomes)
    assert run.states[run.running] == run.states[run.queued] == "SUCCEEDED"


def test_no_job_record_is_left_queued_or_running(redis_restart, chaos_stack):
    """Also the records of calls whose client never got the job's name back."""
    assert stuck_records(chaos_stack.env["JOBMESH_REDIS_URL"]) == []


def test_no_call_outlives_its_deadline_and_submissions_recover(redis_restart):
    run = redis_restart
    assert all(c.t1 - c.t0 <= CALL_DEADLINE_S + 1 for c in run.load.calls)
    assert run.load.between(run.t_down, run.t_up), "no call was made during the outage"
    assert run.figures["first_ok_after_restart_s"] is not None


def test_calls_during_the_outage_get_unavailable_with_retry_info(redis_restart):
    run = redis_restart
    bad = [c for c in run.load.calls if c.code not in ("OK", "UNAVAILABLE")]
    assert not bad, f"{len(bad)} calls failed other than UNAVAILABLE: {bad[:3]}"
    answered = [c for c in run.load.calls if c.code == "UNAVAILABLE" and c.reason]
    assert all(c.retry_s and c.retry_s > 0 for c in answered), answered
