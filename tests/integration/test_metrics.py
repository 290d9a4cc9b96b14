"""`/metrics` of a real gateway and a real worker after a real job: the documented metric names
(README "Ports", shared/metrics.py) are there, with exactly their documented labels and the label
values the dashboards and alerts (infra/grafana, infra/prometheus) select on.

The gateway and worker here are a pair of their own, with metrics ports (the session fixtures
run with metrics off) and on a Redis DB of their own, so that the job is certainly run by this
worker and not by another test's worker consuming the same queue. They share the session's S3
server and model registry."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics
from shared.local.stack import LocalStack, free_port
from tests.conftest import auth, claimed_redis_db
from tests.integration.helpers import render

pytestmark = pytest.mark.integration

# The interceptor labels requests with the service's short name; the dashboards select on it.
OCR_SERVICE = "OcrService"
TEXT = "Metrics for the mesh 2026"


@pytest.fixture(scope="module")
def metered(stack):
    """(gateway /metrics URL, worker /metrics URL) after one Recognize that succeeded and one
    that the worker failed."""
    with claimed_redis_db() as url:
        own = LocalStack(stack.root / "metrics", {**stack.env, "JOBMESH_REDIS_URL": url})
        port, gateway_metrics, worker_metrics = free_port(), free_port(), free_port()
        try:
            own.start_worker("ocr", name="worker-ocr-metrics", metrics_port=worker_metrics)
            own.start_gateway("ocr", port, metrics_port=gateway_metrics,
                              name="gateway-ocr-metrics")
            own.wait_consumers("ocr.cpu")
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                resp = ocr_service_pb2_grpc.OcrServiceStub(channel).Recognize(
                    pb.RecognizeRequest(image=render(TEXT)), metadata=auth(), timeout=60)
                assert resp.text == TEXT
                fail_one(ocr_service_pb2_grpc.OcrServiceStub(channel))
            yield (f"http://127.0.0.1:{gateway_metrics}/metrics",
                   f"http://127.0.0.1:{worker_metrics}/metrics")
        finally:
            own.stop_all()


def fail_one(ocr) -> None:
    """A Recognize the gateway passes (the upload's bytes are not read there) and the worker
    FAILS with UNDECODABLE_INPUT."""
    junk = b"not an image at all" * 8
    up = ocr.CreateUpload(pb.CreateUploadRequest(content_type="image/png", size=len(junk)),
                          metadata=auth(), timeout=10)
    put = urllib.request.Request(up.upload_url, data=junk, method="PUT",
                                 headers={"Content-Type": "image/png"})
    assert urllib.request.urlopen(put, timeout=10).status == 200
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image_ref=up.ref), metadata=auth(), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---- reading the exposition --------------------------------------------------------------------

Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples]


def find(samples: Samples, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Samples named `name` whose labels include `labels`; a value ending in '@' matches as a
    prefix (model names carry their version: ppocr-rec@v1)."""
    def match(have: dict[str, str]) -> bool:
        return all(have.get(k, "").startswith(v) if v.endswith("@") else have.get(k) == v
                   for k, v in labels.items())
    return [(lab, v) for n, lab, v in samples if n == name and match(lab)]


def value(samples: Samples, name: str, **labels: str) -> float:
    hits = find(samples, name, **labels)
    assert hits, f"no {name}{labels} in the scrape; have " \
        f"{sorted({n for n, _, _ in samples if n.startswith('jobmesh_')})}"
    return sum(v for _, v in hits)


def until(read, check, timeout: float = 10.0) -> Samples:
    """Scrapes until `check(samples)` holds (gauges are refreshed by the gateway's readiness
    poll, every 0.5 s here); the last failure is raised."""
    deadline = time.monotonic() + timeout
    while True:
        samples = read()
        try:
            check(samples)
            return samples
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def defined_labels() -> dict[str, set[str]]:
    """Family name (as the parser reports it) -> label names, from shared/metrics.py."""
    out = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            [desc] = obj.describe()
            out[desc.name] = set(obj._labelnames)
    # The GPU gauges (only on a machine with an NVIDIA GPU) come from a collector.
    out.update({name: set(labels) for name, (_, labels) in metrics.GPU_GAUGES.items()})
    return out


def assert_labels_as_defined(samples: Samples) -> set[str]:
    """Every jobmesh sample carries exactly its metric's labels (plus `le` on buckets); returns
    the metric names seen."""
    defined = defined_labels()
    seen = set()
    for name, labels, _ in samples:
        if not name.startswith("jobmesh_"):
            continue
        family = next((f for f in defined if name in (f, f"{f}_total", f"{f}_created",
                                                      f"{f}_bucket", f"{f}_sum",
                                                      f"{f}_count")), None)
        assert family is not None, f"{name} is not defined in shared/metrics.py"
        want = defined[family] | ({"le"} if name.endswith("_bucket") else set())
        assert set(labels) == want, f"{name}{labels}: labels should be {sorted(want)}"
        seen.add(family)
    return seen


# ---- the tests ---------------------------------------------------------------------------------

def test_gateway_metrics_after_a_job(metered):
    gateway_url, _ = metered

    def check(s: Samples) -> None:
        assert value(s, "jobmesh_requests_total", service=OCR_SERVICE, method="Recognize",
                     code="OK") >= 1
        assert value(s, "jobmesh_request_duration_seconds_count", service=OCR_SERVICE,
                     method="Recognize") >= 1
        buckets = find(s, "jobmesh_request_duration_seconds_bucket", service=OCR_SERVICE,
                       method="Recognize", le="+Inf")
        assert buckets and buckets[0][1] >= 1
        assert value(s, "jobmesh_worker_up", queue="ocr.cpu") >= 1
        assert value(s, "jobmesh_queue_depth", queue="ocr.cpu") >= 0
        assert value(s, "jobmesh_jobs", domain="ocr", state="SUCCEEDED") >= 1
        # The gateway coalesced the sync call into a batch task (the `model` label is the task).
        assert value(s, "jobmesh_batch_size_count", model="jobmesh.ocr.v1.recognize_batch") >= 1
        assert value(s, "jobmesh_coalesce_delay_seconds_count", domain="ocr") >= 1

    samples = until(lambda: scrape(gateway_url), check)
    seen = assert_labels_as_defined(samples)
    assert {"jobmesh_requests", "jobmesh_request_duration_seconds", "jobmesh_worker_up",
            "jobmesh_queue_depth", "jobmesh_jobs"} <= seen
    # Health probes are counted too, under their own service (the dashboards leave it out).
    assert find(samples, "jobmesh_requests_total", service="Health")


def test_worker_metrics_after_a_job(metered):
    _, worker_url = metered

    def check(s: Samples) -> None:
        assert value(s, "jobmesh_queue_duration_seconds_count", queue="ocr.cpu") >= 1
        for model in ("ppocr-det@", "ppocr-rec@"):
            assert value(s, "jobmesh_compute_duration_seconds_count", model=model,
                         stage="forward") >= 1
            assert value(s, "jobmesh_model_load_seconds_count", model=model) >= 1
            assert value(s, "jobmesh_model_load_seconds_sum", model=model) > 0
        assert value(s, "jobmesh_batch_size_count", model="ppocr-rec@") >= 1
        assert find(s, "jobmesh_compute_duration_seconds_bucket", model="ppocr-det@",
                    stage="forward", le="+Inf")
        # Each job counted once, by the worker that ended it; its queue's dead letters at 0.
        assert value(s, "jobmesh_jobs_finished_total", domain="ocr", state="SUCCEEDED",
                     reason="") == 1
        assert value(s, "jobmesh_jobs_finished_total", domain="ocr", state="FAILED",
                     reason="UNDECODABLE_INPUT") == 1
        assert value(s, "jobmesh_dead_letters_total", queue="ocr.cpu") == 0

    samples = until(lambda: scrape(worker_url), check)
    seen = assert_labels_as_defined(samples)
    assert {"jobmesh_queue_duration_seconds", "jobmesh_compute_duration_seconds",
            "jobmesh_batch_size", "jobmesh_model_load_seconds", "jobmesh_jobs_finished",
            "jobmesh_dead_letters"} <= seen


def test_every_documented_metric_is_exposed_by_gateway_or_worker(metered):
    """The mesh's documented metrics together: each is served by one of the two processes."""
    gateway_url, worker_url = metered
    seen = assert_labels_as_defined(scrape(gateway_url)) | \
        assert_labels_as_defined(scrape(worker_url))
    documented = {"jobmesh_requests", "jobmesh_request_duration_seconds",
                  "jobmesh_queue_duration_seconds", "jobmesh_compute_duration_seconds",
                  "jobmesh_batch_size", "jobmesh_jobs", "jobmesh_queue_depth",
                  "jobmesh_model_load_seconds", "jobmesh_worker_up", "jobmesh_jobs_finished",
                  "jobmesh_dead_letters"}
    assert documented <= seen, f"missing: {sorted(documented - seen)}"
