"""Per-tenant rate limits and active-job quotas on a real OCR gateway, real Redis and S3.

The gateway here has a Redis DB of its own and no worker, so the jobs it queues stay QUEUED
(active) until the test cancels them: no model runs, and the test takes seconds."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobmesh.jobs.v1 import batch_service_pb2 as batch_pb
from jobmesh.jobs.v1 import batch_service_pb2_grpc, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from shared.local.stack import free_port
from tests.conftest import claimed_redis_db
from tests.integration.helpers import details, render

KEYS = """\
rate-key: {tenant: limited, role: tenant, rate_per_s: 4, rate_burst: 3}
free-key: {tenant: unlimited, role: tenant}
quota-key: {tenant: quota, role: tenant, max_active_jobs: 2}
"""


def auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


@pytest.fixture(scope="module")
def limited_gateway(stack, tmp_path_factory):
    keys = tmp_path_factory.mktemp("quota-keys") / "keys.yaml"
    keys.write_text(KEYS)
    port, metrics_port = free_port(), free_port()
    with claimed_redis_db() as url:
        stack.start_gateway("ocr", port, metrics_port=metrics_port, name="gateway-quotas",
                            extra_env={"JOBMESH_REDIS_URL": url, "JOBMESH_API_KEYS": "",
                                       "JOBMESH_API_KEYS_FILE": str(keys)})
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch, metrics_port
        stack.stop("gateway-quotas")


def test_burst_over_the_rate_is_refused_with_retry_info_then_passes(limited_gateway):
    channel, metrics_port = limited_gateway
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(3):  # the burst
        jobs.ListJobs(jobs_pb.ListJobsRequest(), metadata=auth("rate-key"), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        jobs.ListJobs(jobs_pb.ListJobsRequest(), metadata=auth("rate-key"), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = details(e.value)
    assert info["reason"] == "RATE_LIMITED" and 0 < info["retry_s"] <= 0.25
    # The limited tenant does not hold back another one, and health stays open.
    for _ in range(10):
        jobs.ListJobs(jobs_pb.ListJobsRequest(), metadata=auth("free-key"), timeout=10)
        health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    time.sleep(info["retry_s"])
    jobs.ListJobs(jobs_pb.ListJobsRequest(), metadata=auth("rate-key"), timeout=10)
    # Refusals are counted like any error: requests_total{code="RESOURCE_EXHAUSTED"}.
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                  timeout=10).read().decode()
    assert any(ln.startswith("jobmesh_requests_total{") and 'code="RESOURCE_EXHAUSTED"' in ln
               and 'method="ListJobs"' in ln and not ln.endswith(" 0.0")
               for ln in text.splitlines())


def test_active_job_quota_refuses_submits_until_a_job_ends(limited_gateway):
    channel, _ = limited_gateway
    ocr = ocr_service_pb2_grpc.OcrServiceStub(channel)
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    batches = batch_service_pb2_grpc.BatchServiceStub(channel)
    image = render("quota")
    key = auth("quota-key")

    def submit(**kw):
        return ocr.SubmitRecognize(pb.SubmitRecognizeRequest(image=image, **kw), metadata=key,
                                   timeout=30).job

    first = submit(request_id="q-1")
    submit()
    refusals = []
    with pytest.raises(grpc.RpcError) as e:
        submit()
    refusals.append(e.value)
    line = {"custom_id": "a", "body": {"image": base64.b64encode(image).decode()}}
    with pytest.raises(grpc.RpcError) as e:
        batches.CreateBatch(batch_pb.CreateBatchRequest(
            service="ocr", method="Recognize", inline_manifest=json.dumps(line).encode()),
            metadata=key, timeout=30)
    refusals.append(e.value)
    for err in refusals:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = details(err)
        assert info["reason"] == "QUOTA_EXCEEDED" and info["retry_s"] == 1.0
    # A retry of the first request returns its job even at the quota (AIP-155).
    assert submit(request_id="q-1").name == first.name
    jobs.CancelJob(jobs_pb.CancelJobRequest(name=first.name), metadata=key, timeout=10)
    submit()  # the cancelled job's slot is free
    with pytest.raises(grpc.RpcError) as e:
        submit()
    assert details(e.value)["reason"] == "QUOTA_EXCEEDED"
