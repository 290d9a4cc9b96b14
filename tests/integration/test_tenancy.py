"""Tenant isolation beyond jobs (those are in test_ocr_mesh.py): batches, object refs, keys that
try to climb out of a tenant's prefix, and presigned URLs (short expiry, bound to one key).

Real OCR and audio gateways (presigned URLs valid 2 s here), the real S3 server and Redis; no
worker is needed: every check here happens at the gateway or the object store. Tenant A is
`tenant-a` (TENANT_KEY), B is `tenant-b` (OTHER_KEY); another tenant's things are NOT_FOUND,
never PERMISSION_DENIED, so B learns nothing about what A has."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request

import grpc
import pytest
from jobmesh.audio.v1 import audio_service_pb2 as audio_pb
from jobmesh.audio.v1 import audio_service_pb2_grpc
from jobmesh.common.v1 import artifact_pb2
from jobmesh.jobs.v1 import batch_service_pb2 as batch_pb
from jobmesh.jobs.v1 import batch_service_pb2_grpc, job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from shared.local.stack import free_port
from tests.conftest import OTHER_KEY, TENANT_KEY, auth
from tests.integration.helpers import details, render

EXPIRY_S = 2


@pytest.fixture(scope="module")
def gateways(stack):
    env = {"JOBMESH_PRESIGN_EXPIRY_S": str(EXPIRY_S)}
    ocr_port, audio_port = free_port(), free_port()
    stack.start_gateway("ocr", ocr_port, name="gateway-tenancy-ocr", extra_env=env)
    stack.start_gateway("audio", audio_port, name="gateway-tenancy-audio", extra_env=env)
    with grpc.insecure_channel(f"127.0.0.1:{ocr_port}") as ocr, \
            grpc.insecure_channel(f"127.0.0.1:{audio_port}") as audio:
        yield ocr, audio
    stack.stop("gateway-tenancy-ocr")
    stack.stop("gateway-tenancy-audio")


@pytest.fixture(scope="module")
def stubs(gateways):
    ocr, audio = gateways
    return (ocr_service_pb2_grpc.OcrServiceStub(ocr), job_service_pb2_grpc.JobServiceStub(ocr),
            batch_service_pb2_grpc.BatchServiceStub(ocr),
            audio_service_pb2_grpc.AudioServiceStub(audio))


def put(url: str, data: bytes, content_type: str = "image/png") -> int:
    return put_answer(url, data, content_type)[0]


def put_answer(url: str, data: bytes, content_type: str = "image/png") -> tuple[int, str]:
    """(HTTP status, S3 error code or "") of a PUT to a presigned URL."""
    req = urllib.request.Request(url, data=data, method="PUT",
                                 headers={"Content-Type": content_type})
    try:
        return urllib.request.urlopen(req, timeout=10).status, ""
    except urllib.error.HTTPError as exc:
        code = re.search(r"<Code>([^<]*)</Code>", exc.read().decode(errors="replace"))
        return exc.code, code.group(1) if code else ""


def upload(ocr, key: str, data: bytes):
    """A's (or B's) image uploaded through a presigned URL; returns the ArtifactRef."""
    up = ocr.CreateUpload(pb.CreateUploadRequest(content_type="image/png", size=len(data)),
                          metadata=auth(key), timeout=10)
    assert put(up.upload_url, data) == 200
    return up.ref


def refused(call, request, key: str = OTHER_KEY) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        result = call(request, metadata=auth(key), timeout=30)
        list(result) if not hasattr(result, "DESCRIPTOR") else None  # drain a stream
    return e.value


def test_another_tenants_batch_is_not_found(stubs):
    _, jobs, batches, _ = stubs
    line = {"custom_id": "a", "body": {"image": base64.b64encode(render("a")).decode()}}
    job = batches.CreateBatch(batch_pb.CreateBatchRequest(
        service="ocr", method="Recognize", inline_manifest=json.dumps(line).encode()),
        metadata=auth(TENANT_KEY), timeout=30).job
    name = job.name
    for call, request in [
        (jobs.GetJob, jobs_pb.GetJobRequest(name=name)),
        (jobs.WaitJob, jobs_pb.WaitJobRequest(name=name)),
        (jobs.WatchJob, jobs_pb.WatchJobRequest(name=name)),
        (batches.GetBatchResults, batch_pb.GetBatchResultsRequest(name=name)),
        (jobs.CancelJob, jobs_pb.CancelJobRequest(name=name)),
        (jobs.DeleteJob, jobs_pb.DeleteJobRequest(name=name)),
    ]:
        err = refused(call, request)
        assert err.code() == grpc.StatusCode.NOT_FOUND, (call, err.details())
    listed = jobs.ListJobs(jobs_pb.ListJobsRequest(kind=job.kind), metadata=auth(OTHER_KEY),
                           timeout=10)
    assert name not in [j.name for j in listed.jobs]
    # Untouched by B's attempts: A still has it, not cancelled (a worker may have run it).
    mine = jobs.GetJob(jobs_pb.GetJobRequest(name=name), metadata=auth(TENANT_KEY), timeout=10)
    assert mine.job.name == name
    assert mine.job.state not in (job_pb2.JOB_STATE_CANCELLING, job_pb2.JOB_STATE_CANCELLED)


def test_a_batch_cannot_read_another_tenants_manifest_or_images(stubs):
    ocr, _, batches, _ = stubs
    text = b'{"custom_id": "x", "body": {"image": "aGk="}}\n'
    up = batches.CreateManifestUpload(batch_pb.CreateManifestUploadRequest(size=len(text)),
                                      metadata=auth(TENANT_KEY), timeout=10)
    assert put(up.upload_url, text, "application/jsonl") == 200
    # A's manifest, in B's batch; then the same key in another bucket.
    for ref in (up.ref, artifact_pb2.ArtifactRef(bucket="jobmesh-models", key=up.ref.key)):
        err = refused(batches.CreateBatch, batch_pb.CreateBatchRequest(
            service="ocr", method="Recognize", input_file=ref))
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
    # A line of B's manifest naming A's image: that line is refused, nothing is queued.
    image = upload(ocr, TENANT_KEY, render("A's image"))
    line = {"custom_id": "y", "body": {"image_ref": {"bucket": image.bucket, "key": image.key}}}
    err = refused(batches.CreateBatch, batch_pb.CreateBatchRequest(
        service="ocr", method="Recognize", inline_manifest=json.dumps(line).encode()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not found" in details(err)["violations"][0][1]


def test_ocr_and_audio_refs_into_another_tenant_are_not_found(stubs):
    ocr, _, _, audio = stubs
    image = upload(ocr, TENANT_KEY, render("private"))
    other_bucket = artifact_pb2.ArtifactRef(bucket="jobmesh-models", key=image.key)
    for ref in (image, other_bucket):
        for call, request in [
            (ocr.Recognize, pb.RecognizeRequest(image_ref=ref)),
            (ocr.SubmitRecognize, pb.SubmitRecognizeRequest(image_ref=ref)),
            (audio.SubmitTag, audio_pb.SubmitTagRequest(
                request=audio_pb.TagRequest(audio_ref=ref))),
        ]:
            err = refused(call, request)
            assert err.code() == grpc.StatusCode.NOT_FOUND, (call, err.details())


TRAVERSALS = [
    "tenants/tenant-b/../tenant-a/uploads/x",
    "tenants/tenant-b/%2e%2e/tenant-a/uploads/x",
    "tenants/tenant-b/..%2ftenant-a/uploads/x",
    "/tenants/tenant-b/uploads/x",
    "tenants\\tenant-b\\..\\tenant-a\\x",
    "tenants/tenant-b/uploads/x\x00.png",
    "tenants/tenant-b//uploads/x",
    "tenants/tenant-b/./uploads/x",
]


@pytest.mark.parametrize("key", TRAVERSALS)
def test_keys_that_climb_or_escape_are_invalid_argument_naming_the_field(stubs, key):
    ocr, _, batches, audio = stubs
    ref = artifact_pb2.ArtifactRef(bucket="jobmesh-artifacts", key=key)
    for call, request, field in [
        (ocr.Recognize, pb.RecognizeRequest(image_ref=ref), "image_ref.key"),
        (audio.SubmitTag, audio_pb.SubmitTagRequest(request=audio_pb.TagRequest(audio_ref=ref)),
         "request.audio_ref.key"),
        (batches.CreateBatch, batch_pb.CreateBatchRequest(
            service="ocr", method="Recognize", input_file=ref), "input_file.key"),
    ]:
        err = refused(call, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (call, err.details())
        assert details(err)["violations"][0][0] == field


def test_presigned_put_is_bound_to_its_key_and_expires(stubs):
    ocr, _, _, _ = stubs
    data = render("short-lived")
    up = ocr.CreateUpload(pb.CreateUploadRequest(content_type="image/png", size=len(data)),
                          metadata=auth(TENANT_KEY), timeout=10)
    assert up.expire_time.seconds - time.time() <= EXPIRY_S + 1
    # The same signature on another key (A's own, or B's prefix) is refused by S3.
    for other in ("tenants/tenant-a/uploads/chosen-by-client",
                  "tenants/tenant-b/uploads/" + up.ref.key.rsplit("/", 1)[-1]):
        assert put_answer(up.upload_url.replace(up.ref.key, other), data) == (
            403, "SignatureDoesNotMatch")
    time.sleep(EXPIRY_S + 1.5)
    # Expired: AccessDenied. AWS S3 and MinIO answer it with HTTP 403; rclone's S3 server
    # (the one the tests run) with 400.
    status, code = put_answer(up.upload_url, data)
    assert status in (400, 403) and code == "AccessDenied"
    # Nothing was written by any of the refused PUTs.
    err = refused(ocr.Recognize, pb.RecognizeRequest(image_ref=up.ref), key=TENANT_KEY)
    assert err.code() == grpc.StatusCode.NOT_FOUND

