"""Failure handling with real processes: cancel before start, kill -9 mid-job, a poison message,
and no worker at all. Runs after the other integration modules (it kills and restarts the
session's OCR worker)."""

from __future__ import annotations

import json
import time

import grpc
import pytest
import redis
from jobmesh.jobs.v1 import job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from tests.conftest import auth
from tests.integration.helpers import (
    details,
    render,
    submit_diag,
    submit_diag_batch,
    wait_state,
)

pytestmark = pytest.mark.integration

SLEEP = "jobmesh.diag.v1.sleep"


@pytest.fixture
def jobs(channel):
    return job_service_pb2_grpc.JobServiceStub(channel)


def _get(jobs, job_id):
    return jobs.GetJob(jobs_pb.GetJobRequest(name=f"jobs/{job_id}"), metadata=auth(),
                       timeout=10).job


def test_cancelled_queued_job_never_starts(worker, jobs):
    env = worker.env
    busy = submit_diag(env, SLEEP, {"seconds": 2})
    wait_state(env, busy, {"RUNNING"}, 30)
    queued = submit_diag(env, SLEEP, {"seconds": 1})
    assert _get(jobs, queued).state == job_pb2.JOB_STATE_QUEUED
    cancelled = jobs.CancelJob(jobs_pb.CancelJobRequest(name=f"jobs/{queued}"), metadata=auth(),
                               timeout=10).job
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED and cancelled.error.reason == \
        "CANCELLED"
    wait_state(env, busy, {"SUCCEEDED"}, 30)
    time.sleep(1.5)  # the worker has taken the cancelled job's message by now
    job = _get(jobs, queued)
    assert job.state == job_pb2.JOB_STATE_CANCELLED
    assert job_pb2.JOB_STATE_RUNNING not in [t.state for t in job.transitions]


def test_running_job_cancels_at_a_batch_boundary(worker, jobs):
    env = worker.env
    job_id = submit_diag(env, SLEEP, {"seconds": 20})
    wait_state(env, job_id, {"RUNNING"}, 30)
    jobs.CancelJob(jobs_pb.CancelJobRequest(name=f"jobs/{job_id}"), metadata=auth(), timeout=10)
    assert wait_state(env, job_id, {"CANCELLED"}, 5) == "CANCELLED"
    states = [job_pb2.JobState.Name(t.state) for t in _get(jobs, job_id).transitions]
    assert states == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING",
                      "JOB_STATE_CANCELLED"]


def test_kill_9_mid_job_then_restart_completes_exactly_once(worker, jobs):
    env = worker.env
    job_id = submit_diag(env, SLEEP, {"seconds": 3})
    wait_state(env, job_id, {"RUNNING"}, 30)
    worker.kill("worker-ocr")  # SIGKILL to the main process and its prefork child
    assert _get(jobs, job_id).state == job_pb2.JOB_STATE_RUNNING
    worker.start_worker("ocr")
    # Redelivered once the visibility timeout (15 s here) passes and the restore scan runs.
    wait_state(env, job_id, {"SUCCEEDED", "FAILED"}, 60)
    job = _get(jobs, job_id)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    states = [job_pb2.JobState.Name(t.state) for t in job.transitions]
    assert states == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_RUNNING",
                      "JOB_STATE_SUCCEEDED"]
    assert job.delivery_count == 2
    assert len(job.result.artifacts) == 1
    time.sleep(2)  # no third delivery shows up later
    assert _get(jobs, job_id).delivery_count == 2


def test_poison_message_fails_with_worker_lost_and_is_dead_lettered(worker, jobs):
    env = worker.env
    client = redis.Redis.from_url(env["JOBMESH_REDIS_URL"])
    client.delete("jobmesh:deadletter:ocr.cpu")
    job_id = submit_diag(env, "jobmesh.diag.v1.crash", {})
    wait_state(env, job_id, {"FAILED"}, 90)
    job = _get(jobs, job_id)
    assert job.error.reason == "WORKER_LOST"
    assert job.delivery_count == 4  # 3 deliveries killed the worker, the 4th gave up
    [entry] = [json.loads(e) for e in client.lrange("jobmesh:deadletter:ocr.cpu", 0, -1)]
    assert entry["job_id"] == job_id and entry["task"] == "jobmesh.diag.v1.crash"
    # The worker process survived its children dying and still does real work.
    assert worker.procs["worker-ocr"].poll() is None
    done = submit_diag(env, "jobmesh.diag.v1.noop", {"echo": "after poison"})
    assert wait_state(env, done, {"SUCCEEDED"}, 30) == "SUCCEEDED"


def test_poison_input_in_a_coalesced_batch_fails_only_its_own_job(worker, jobs):
    env = worker.env
    ids = submit_diag_batch(env, [{"echo": "a"}, {"crash": True}, {"echo": "c"}])
    for job_id in ids:
        wait_state(env, job_id, {"SUCCEEDED", "FAILED"}, 90)
    ok_a, poison, ok_c = (_get(jobs, i) for i in ids)
    assert poison.state == job_pb2.JOB_STATE_FAILED and poison.error.reason == "WORKER_LOST"
    for ok in (ok_a, ok_c):
        # After the batch killed its worker, its jobs ran one by one.
        assert ok.state == job_pb2.JOB_STATE_SUCCEEDED, ok.error
        assert ok.delivery_count == 2
    assert worker.procs["worker-ocr"].poll() is None


def test_no_worker_fails_fast_with_unavailable(worker, channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ocr = ocr_service_pb2_grpc.OcrServiceStub(channel)
    assert ocr.Recognize(pb.RecognizeRequest(image=render("before stop")), metadata=auth(),
                         timeout=60).text == "before stop"
    worker.stop("worker-ocr")
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = health.Check(health_pb2.HealthCheckRequest(
            service="jobmesh.ocr.v1.OcrService"), timeout=5).status
        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
            break
        time.sleep(0.2)
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image=render("nobody home")), metadata=auth(),
                      timeout=30)
    assert time.monotonic() - t0 < 2.0
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    d = details(e.value)
    assert d["reason"] == "NO_WORKER" and d["retry_s"] > 0
    # Bring the worker back for whatever runs next.
    worker.start_worker("ocr")
    worker.wait_consumers("ocr.cpu")
