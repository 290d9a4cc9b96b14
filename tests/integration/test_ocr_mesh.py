"""OCR through the whole mesh: gRPC gateway → Celery on Redis → worker running the real PP-OCR
models from the S3 registry (rclone) → back. Nothing here is faked."""

from __future__ import annotations

import io
import os
import struct
import urllib.request
import zlib

import grpc
import pytest
from google.protobuf import duration_pb2
from jobmesh.jobs.v1 import job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
from jobmesh.models.v1 import model_service_pb2 as models_pb
from jobmesh.models.v1 import model_service_pb2_grpc
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc
from PIL import Image

from tests.conftest import OTHER_KEY, auth
from tests.integration.helpers import details, render

pytestmark = pytest.mark.integration


@pytest.fixture
def ocr(channel, worker):
    return ocr_service_pb2_grpc.OcrServiceStub(channel)


@pytest.fixture
def jobs(channel):
    return job_service_pb2_grpc.JobServiceStub(channel)


@pytest.mark.parametrize("text,font", [
    ("The quick brown fox jumps over the lazy dog", "DejaVuSans.ttf"),
    ("Invoice 2026-12-01 total 1234.56", "DejaVuSans.ttf"),
    ("jobmesh reads serif text", "DejaVuSerif.ttf"),
    ("Monospace 0123456789", "DejaVuSansMono.ttf"),
])
def test_recognizes_rendered_lines_exactly(ocr, text, font):
    resp = ocr.Recognize(pb.RecognizeRequest(image=render(text, font)), metadata=auth(),
                         timeout=60)
    assert resp.text == text
    assert resp.image_width > 0 and resp.lines
    assert all(len(line.box) == 4 and 0 < line.confidence <= 1 for line in resp.lines)
    assert any(v.startswith("ppocr-rec@") for v in resp.model_versions)


def test_multiline_reading_order(ocr):
    lines = ["First line of text", "Second line here", "Third and last"]
    resp = ocr.Recognize(pb.RecognizeRequest(image=render(lines)), metadata=auth(), timeout=60)
    assert resp.text.splitlines() == lines


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + \
        chunk(b"IEND", b"")


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name,image,reason", [
    ("empty", b"", "INVALID_ARGUMENT"),
    ("random", os.urandom(4096), "UNDECODABLE_INPUT"),
    ("one_pixel", _tiny_png(), "INVALID_ARGUMENT"),
    ("bomb_40000x40000", _png_header_only(40000, 40000), "INPUT_TOO_LARGE"),
])
def test_bad_images_are_invalid_argument_naming_the_field(ocr, name, image, reason):
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image=image), metadata=auth(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    d = details(e.value)
    assert d["reason"] == reason
    assert d["violations"] and d["violations"][0][0] == "image"


def test_missing_source_and_bad_options_name_fields(ocr):
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(), metadata=auth(), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(e.value)["violations"][0][0] == "image"
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image=render("x y"),
                                          options=pb.RecognizeOptions(min_confidence=3.0)),
                      metadata=auth(), timeout=10)
    assert details(e.value)["violations"][0][0] == "options.min_confidence"


def test_message_over_the_size_limit_is_resource_exhausted(ocr):
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image=b"\0" * (5 * 1024 * 1024)), metadata=auth(),
                      timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_after_bad_input_worker_alive_and_no_job_stuck(ocr, jobs, worker):
    for image in (b"", os.urandom(100), _png_header_only(40000, 40000)):
        with pytest.raises(grpc.RpcError):
            ocr.Recognize(pb.RecognizeRequest(image=image), metadata=auth(), timeout=30)
    assert worker.procs["worker-ocr"].poll() is None
    stuck = jobs.ListJobs(jobs_pb.ListJobsRequest(
        states=[job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING], domain="ocr"),
        metadata=auth(), timeout=10)
    assert list(stuck.jobs) == []
    # ... and it still does real work.
    assert ocr.Recognize(pb.RecognizeRequest(image=render("still alive")), metadata=auth(),
                         timeout=60).text == "still alive"


@pytest.mark.parametrize("metadata", [[], [("authorization", "Bearer nope")],
                                      [("authorization", "Basic abc")]])
def test_missing_or_wrong_key_is_unauthenticated(ocr, jobs, metadata):
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image=render("x")), metadata=metadata, timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        list(jobs.WatchJob(jobs_pb.WatchJobRequest(name="jobs/abc"), metadata=metadata,
                           timeout=10))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_async_job_result_artifact_watch_and_wait(ocr, jobs):
    sub = ocr.SubmitRecognize(pb.SubmitRecognizeRequest(image=render("Async job works")),
                              metadata=auth(), timeout=30)
    assert sub.job.state in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)
    events = list(jobs.WatchJob(jobs_pb.WatchJobRequest(name=sub.job.name), metadata=auth(),
                                timeout=60))
    assert events[0].type == jobs_pb.JOB_EVENT_TYPE_SNAPSHOT
    assert events[-1].job.state == job_pb2.JOB_STATE_SUCCEEDED
    done = jobs.WaitJob(jobs_pb.WaitJobRequest(name=sub.job.name,
                                               timeout=duration_pb2.Duration(seconds=30)),
                        metadata=auth(), timeout=40).job
    assert done.done and done.state == job_pb2.JOB_STATE_SUCCEEDED
    assert [job_pb2.JobState.Name(t.state) for t in done.transitions] == [
        "JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    resp = pb.RecognizeResponse()
    assert done.result.response.Unpack(resp)
    assert resp.text == "Async job works"
    names = {a.key.rsplit("/", 1)[-1]: a for a in done.result.artifacts}
    assert set(names) == {"result.json", "searchable.json", "text.txt"}
    assert all(a.key.startswith("tenants/tenant-a/") and len(a.sha256) == 64
               for a in names.values())


def test_other_tenants_job_is_not_found(ocr, jobs):
    sub = ocr.SubmitRecognize(pb.SubmitRecognizeRequest(image=render("mine")), metadata=auth(),
                              timeout=30)
    for call in (jobs.GetJob, jobs.CancelJob, jobs.DeleteJob):
        req = {jobs.GetJob: jobs_pb.GetJobRequest, jobs.CancelJob: jobs_pb.CancelJobRequest,
               jobs.DeleteJob: jobs_pb.DeleteJobRequest}[call](name=sub.job.name)
        with pytest.raises(grpc.RpcError) as e:
            call(req, metadata=auth(OTHER_KEY), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    listed = jobs.ListJobs(jobs_pb.ListJobsRequest(), metadata=auth(OTHER_KEY), timeout=10)
    assert sub.job.name not in [j.name for j in listed.jobs]


def test_same_request_id_gives_one_job(ocr, jobs):
    req = pb.SubmitRecognizeRequest(request_id="req-42", image=render("once"))
    a = ocr.SubmitRecognize(req, metadata=auth(), timeout=30).job
    b = ocr.SubmitRecognize(req, metadata=auth(), timeout=30).job
    assert a.name == b.name
    # Another tenant's identical request_id is a different job.
    c = ocr.SubmitRecognize(req, metadata=auth(OTHER_KEY), timeout=30).job
    assert c.name != a.name
    listed = jobs.ListJobs(jobs_pb.ListJobsRequest(page_size=1000), metadata=auth(), timeout=10)
    assert sum(j.request_id == "req-42" for j in listed.jobs) == 1


def test_list_jobs_pages_without_repeats(ocr, jobs):
    for i in range(3):
        ocr.SubmitRecognize(pb.SubmitRecognizeRequest(image=render(f"page {i}")),
                            metadata=auth(), timeout=30)
    seen, token = [], ""
    while True:
        page = jobs.ListJobs(jobs_pb.ListJobsRequest(page_size=2, page_token=token),
                             metadata=auth(), timeout=10)
        seen += [j.name for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 3
    with pytest.raises(grpc.RpcError) as e:
        jobs.ListJobs(jobs_pb.ListJobsRequest(page_token="garbage!"), metadata=auth(),
                      timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_upload_then_recognize_by_ref_and_tenant_isolation(ocr):
    image = render("Uploaded by reference")
    up = ocr.CreateUpload(pb.CreateUploadRequest(content_type="image/png", size=len(image)),
                          metadata=auth(), timeout=10)
    req = urllib.request.Request(up.upload_url, data=image, method="PUT",
                                 headers={"Content-Type": "image/png"})
    assert urllib.request.urlopen(req, timeout=10).status == 200
    resp = ocr.Recognize(pb.RecognizeRequest(image_ref=up.ref), metadata=auth(), timeout=60)
    assert resp.text == "Uploaded by reference"
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image_ref=up.ref), metadata=auth(OTHER_KEY),
                      timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        ocr.CreateUpload(pb.CreateUploadRequest(content_type="image/png", size=10**12),
                         metadata=auth(), timeout=10)
    assert details(e.value)["violations"][0][0] == "size"


def test_delete_job_removes_record_and_artifacts(ocr, jobs, stack):
    from shared.config import Settings
    from shared.storage.artifacts import ArtifactStore

    sub = ocr.SubmitRecognize(pb.SubmitRecognizeRequest(image=render("to delete")),
                              metadata=auth(), timeout=30)
    done = jobs.WaitJob(jobs_pb.WaitJobRequest(name=sub.job.name), metadata=auth(),
                        timeout=60).job
    key = done.result.artifacts[0].key
    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    store = ArtifactStore.from_settings(settings)
    assert store.exists(settings.artifacts_bucket, key)
    jobs.DeleteJob(jobs_pb.DeleteJobRequest(name=sub.job.name), metadata=auth(), timeout=10)
    assert not store.exists(settings.artifacts_bucket, key)
    with pytest.raises(grpc.RpcError) as e:
        jobs.GetJob(jobs_pb.GetJobRequest(name=sub.job.name), metadata=auth(), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_service_lists_registry_with_provenance(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    resp = stub.ListModels(models_pb.ListModelsRequest(), metadata=auth(), timeout=30)
    models = {m.name: m for m in resp.models}
    assert {"ppocr-det", "ppocr-rec", "ppocr-cls"} <= set(models)
    det = models["ppocr-det"]
    assert det.serving_version.startswith("rapidocr-")
    [version] = [v for v in det.versions if v.version == det.serving_version]
    assert version.provenance.package == "rapidocr"
    assert len(version.files[0].sha256) == 64
    with pytest.raises(grpc.RpcError) as e:
        stub.GetModel(models_pb.GetModelRequest(name="no-such-model"), metadata=auth(),
                      timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_open_reflection_needs_a_key(channel, worker):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    h = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="jobmesh.ocr.v1.OcrService"), timeout=5)
    assert h.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ServerReflectionInfo(iter([req]), timeout=5))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [resp] = list(stub.ServerReflectionInfo(iter([req]), metadata=auth(), timeout=5))
    names = {s.name for s in resp.list_services_response.service}
    assert {"jobmesh.ocr.v1.OcrService", "jobmesh.jobs.v1.JobService"} <= names


def _long_line(chars: int) -> tuple[str, bytes]:
    words = " ".join(open("/usr/share/common-licenses/Apache-2.0").read().split())
    text = words[2000:2000 + chars].strip()
    return text, render(text, size=40)


def test_very_long_line_end_to_end(ocr):
    text, image = _long_line(600)  # ~12,000 px wide: rapidocr by hand reads nothing here
    resp = ocr.Recognize(pb.RecognizeRequest(image=image), metadata=auth(), timeout=120)
    assert resp.image_width > 10_000
    assert resp.text == text
    [line] = resp.lines
    assert line.path == pb.RECOGNITION_PATH_WINDOWED and line.windows > 3
    assert line.tiled_detection
    # The by-hand baseline (long-line paths off) loses it.
    off = ocr.Recognize(pb.RecognizeRequest(
        image=image, options=pb.RecognizeOptions(disable_long_lines=True)),
        metadata=auth(), timeout=120)
    assert off.text != text


def test_coalesced_requests_get_their_own_results_and_errors(ocr):
    """Concurrent sync calls of different sizes share worker batches (the gateway coalesces
    them); each gets its own text, and an image that only fails to decode in the worker (a
    truncated PNG with a valid header) fails alone."""
    from concurrent.futures import ThreadPoolExecutor

    texts = ["Short", "A somewhat longer line of text", "Three lines\nof text\nhere",
             "Invoice 42", "The quick brown fox jumps over the lazy dog", "OK then"]
    images = [render(t.split("\n")) for t in texts]
    truncated = images[1][: len(images[1]) // 2]

    def call(image):
        try:
            return ocr.Recognize(pb.RecognizeRequest(image=image), metadata=auth(),
                                 timeout=60).text
        except grpc.RpcError as e:
            return e

    for _ in range(2):  # twice: the second round runs on warm batches
        with ThreadPoolExecutor(len(images) + 1) as pool:
            got = list(pool.map(call, [*images, truncated]))
        assert got[:-1] == texts
        assert isinstance(got[-1], grpc.RpcError)
        assert got[-1].code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(got[-1])["violations"][0][0] == "image"
