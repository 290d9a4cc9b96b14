"""Batch jobs (CreateBatch) end to end: the CLI against a real OCR gateway, Celery on Redis and
an OCR worker with the real models. A refused manifest, cancel and expiry mid-batch, and a
worker killed mid-batch (it restarts the session's OCR worker, so it runs last here)."""

from __future__ import annotations

import base64
import json
import time

import grpc
import pytest
import redis
from jobmesh.jobs.v1 import batch_service_pb2 as bpb
from jobmesh.jobs.v1 import batch_service_pb2_grpc, job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb

from shared.client import Client, ClientSettings
from tests.conftest import TENANT_KEY, auth
from tests.integration.helpers import details, submit_diag, wait_state
from tests.integration.test_cli import png

pytestmark = pytest.mark.integration

WORDS = ["Invoice", "Total", "Receipt", "Amount", "Payment", "Balance", "Customer", "Account"]


@pytest.fixture(scope="module")
def images():
    return {w: png(w) for w in WORDS}


@pytest.fixture
def client(gateway, worker):
    with Client(ClientSettings(endpoint=gateway, api_key=TENANT_KEY), timeout_s=60) as c:
        yield c


def manifest(images: dict[str, bytes], n: int, prefix: str = "req") -> bytes:
    lines = [{"custom_id": f"{prefix}-{k}",
              "body": {"image": base64.b64encode(images[WORDS[k % len(WORDS)]]).decode()}}
             for k in range(n)]
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


def wait_done(client: Client, name: str, timeout: float = 240) -> job_pb2.Job:
    job = client.wait_job(name, timeout_s=timeout)
    assert job.done, f"{name} still {job.state} after {timeout}s"
    return job


def test_cli_runs_a_1000_line_batch_keyed_by_custom_id(gateway, worker, images, tmp_path):
    from tests.integration.test_cli import cli

    for w, data in images.items():
        (tmp_path / f"{w}.png").write_bytes(data)
    lines = [json.dumps({"custom_id": f"img-{k}", "file": f"{WORDS[k % len(WORDS)]}.png"})
             for k in range(1000)]
    (tmp_path / "scans.jsonl").write_text("\n".join(lines) + "\n")
    r = cli("batch", "submit", "scans.jsonl", "--service", "ocr", "--endpoint", gateway,
            "--api-key", TENANT_KEY, "--output", "json", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    batch = doc["job"]["batch"]
    assert doc["job"]["state"] == "JOB_STATE_SUCCEEDED" and doc["job"]["kind"] == "JOB_KIND_BATCH"
    assert batch["request_counts"] == {"total": "1000", "completed": "1000"}
    assert batch["phase"] == "BATCH_PHASE_DONE"
    rows = [json.loads(x) for x in open(doc["files"]["output"])]
    assert [x["custom_id"] for x in rows] == [f"img-{k}" for k in range(1000)]
    wrong = [x["custom_id"] for k, x in enumerate(rows)
             if x["response"]["text"] != WORDS[k % len(WORDS)]]
    assert not wrong, f"{len(wrong)} lines misread, e.g. {wrong[:5]}"
    assert open(doc["files"]["errors"]).read() == ""
    # `batch results` prints the same lines, in manifest order.
    r = cli("batch", "results", doc["job"]["name"], "--endpoint", gateway, "--api-key",
            TENANT_KEY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["custom_id"] for x in r.stdout.splitlines()][:3] == \
        ["img-0", "img-1", "img-2"]


def test_bad_lines_are_refused_before_any_work(channel, worker, images, client):
    good = manifest(images, 10).decode().splitlines()
    good[1] = '{"custom_id": "x", "body": '  # not JSON
    good[4] = json.dumps({"body": {"image": "aGk="}})  # no custom_id
    good[8] = json.dumps({"custom_id": "y", "body": {"imagez": "aGk="}})  # not the request
    batches = job_service_pb2_grpc.JobServiceStub(channel)
    before = len(batches.ListJobs(jobs_pb.ListJobsRequest(kind=job_pb2.JOB_KIND_BATCH),
                                  metadata=auth(), timeout=10).jobs)
    stub = batch_service_pb2_grpc.BatchServiceStub(channel)
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateBatch(bpb.CreateBatchRequest(service="ocr", method="Recognize",
                                                inline_manifest="\n".join(good).encode()),
                         metadata=auth(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    d = details(e.value)
    assert d["reason"] == "INVALID_MANIFEST"
    numbers = [int(desc.split(":")[0].removeprefix("line ")) for _, desc in d["violations"]]
    assert numbers == [2, 5, 9]
    assert {f for f, _ in d["violations"]} == {"inline_manifest"}
    after = len(batches.ListJobs(jobs_pb.ListJobsRequest(kind=job_pb2.JOB_KIND_BATCH),
                                 metadata=auth(), timeout=10).jobs)
    assert after == before  # nothing was created


def test_undecodable_image_fails_only_its_line(client, images):
    data = manifest(images, 3).decode().splitlines()
    data[1] = json.dumps({"custom_id": "req-1", "body": {"image": base64.b64encode(
        b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()}})
    with pytest.raises(Exception) as e:  # refused up front: the gateway inspects the image
        client.create_batch("ocr", "Recognize", "\n".join(data).encode())
    assert "line 2" in str(e.value)


def test_unknown_service_and_method_name_the_field(client):
    for service, method, field in (("nope", "Recognize", "service"),
                                   ("ocr", "Generate", "method")):
        with pytest.raises(Exception) as e:
            client.create_batch(service, method, b'{"custom_id": "a", "body": {}}\n')
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.field_violations[0][0] == field


def test_request_id_returns_the_first_batch(client, images):
    first = client.create_batch("ocr", "Recognize", manifest(images, 2), request_id="batch-idem")
    again = client.create_batch("ocr", "Recognize", manifest(images, 5), request_id="batch-idem")
    assert again.name == first.name and again.batch.request_counts.total == 2
    assert wait_done(client, first.name).state == job_pb2.JOB_STATE_SUCCEEDED


def test_cancel_mid_batch_keeps_finished_lines(client, images, worker):
    job = client.create_batch("ocr", "Recognize", manifest(images, 400, "c"))
    _wait_progress(client, job.name, 1)
    client.cancel_job(job.name)
    job = wait_done(client, job.name)
    assert job.state == job_pb2.JOB_STATE_CANCELLED and job.error.reason == "CANCELLED"
    c = job.batch.request_counts
    assert 0 < c.completed < 400 and c.completed + c.failed == 400
    _, ok, bad = client.batch_results(job.name)
    assert len(ok) == c.completed and len(bad) == c.failed
    assert {e["error"]["reason"] for e in bad} == {"CANCELLED"}
    assert len({e["custom_id"] for e in ok + bad}) == 400


def test_batch_past_its_window_fails_expired(client, images, worker):
    busy = submit_diag(worker.env, "jobmesh.diag.v1.sleep", {"seconds": 4})
    wait_state(worker.env, busy, {"RUNNING"}, 30)  # the worker is busy: chunks wait
    job = client.create_batch("ocr", "Recognize", manifest(images, 4), completion_window_s=1)
    job = wait_done(client, job.name, 60)
    assert job.state == job_pb2.JOB_STATE_FAILED and job.error.reason == "EXPIRED"
    assert job.batch.phase == job_pb2.BATCH_PHASE_DONE
    _, ok, bad = client.batch_results(job.name)
    assert len(ok) + len(bad) == 4 and {e["error"]["reason"] for e in bad} <= {"EXPIRED"}
    wait_state(worker.env, busy, {"SUCCEEDED"}, 30)


def test_kill_9_mid_batch_completes_every_line_once(client, images, worker):
    job = client.create_batch("ocr", "Recognize", manifest(images, 300, "k"))
    _wait_progress(client, job.name, 1)
    r = redis.Redis.from_url(worker.env["JOBMESH_REDIS_URL"])
    _wait_chunk_in_flight(r, job.name.removeprefix("jobs/"))
    worker.kill("worker-ocr")  # SIGKILL to the worker and its prefork child, mid-chunk
    worker.start_worker("ocr")
    worker.wait_consumers("ocr.cpu")
    job = wait_done(client, job.name, 300)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.batch.request_counts.completed == 300
    _, ok, bad = client.batch_results(job.name)
    ids = [e["custom_id"] for e in ok]
    assert sorted(ids) == sorted(f"k-{k}" for k in range(300)) and not bad
    deliveries = r.hgetall(f"jobmesh:job:{job.name.removeprefix('jobs/')}:chunk-deliveries")
    assert max(int(v) for v in deliveries.values()) >= 2  # a chunk really ran again


def _wait_chunk_in_flight(r: redis.Redis, job_id: str, timeout: float = 60) -> None:
    """Until a chunk has been delivered (counted) and not yet recorded, so a kill now lands
    mid-chunk rather than between two (a 16-line OCR chunk runs for seconds)."""
    from shared.jobs.records import chunk_deliveries_key, chunks_done_key

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = set(r.hkeys(chunk_deliveries_key(job_id)))
        if started - set(r.smembers(chunks_done_key(job_id))):
            return
        time.sleep(0.02)
    raise AssertionError("no chunk in flight")


def _wait_progress(client: Client, name: str, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get_job(name)
        c = job.batch.request_counts
        if c.completed + c.failed >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} made no progress in {timeout}s")
