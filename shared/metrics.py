"""The Prometheus metrics every process exposes, defined once with fixed labels.

Names and labels are part of the operator contract (ARCHITECTURE.md, "Metrics"); dashboards and
alerts depend on them, so add metrics here rather than ad hoc in services.

The `service` label is the gRPC service's short name (`OcrService`, `JobService`, `Health`), not
the package-qualified one (`jobmesh.ocr.v1.OcrService`), and stays so: every dashboard and alert
selects on it, it is the name operators read, and it does not move when a package gains a
version. Short names are unique across our protos and the probes, so nothing is merged;
tests/unit/test_dashboards.py checks it, and fails the day a `v2` package serves beside `v1`,
which is when to decide again (a new label rather than a renamed one).
"""

from __future__ import annotations

import functools
import logging

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "jobmesh_requests_total", "gRPC requests handled", ["service", "method", "code"]
)
REQUEST_DURATION = Histogram(
    "jobmesh_request_duration_seconds", "gRPC request latency", ["service", "method"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_DURATION = Histogram(
    "jobmesh_queue_duration_seconds", "Time a job waited in its queue", ["queue"],
    buckets=_LATENCY_BUCKETS,
)
COMPUTE_DURATION = Histogram(
    "jobmesh_compute_duration_seconds", "Model compute time per stage", ["model", "stage"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "jobmesh_batch_size", "Items per model call", ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
JOBS = Gauge("jobmesh_jobs", "Jobs per state (from the job store counters)", ["domain", "state"])
COALESCE_DELAY = Histogram(
    "jobmesh_coalesce_delay_seconds", "Time a sync request waited at the gateway for batch-mates",
    ["domain"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
)
QUEUE_DEPTH = Gauge("jobmesh_queue_depth", "Messages waiting in a queue", ["queue"])
MODEL_LOAD = Histogram(
    "jobmesh_model_load_seconds", "Time to fetch, verify and load a model", ["model"],
    buckets=_LATENCY_BUCKETS,
)
WORKER_UP = Gauge("jobmesh_worker_up", "Live consumers of a queue, as the gateway sees them",
                  ["queue"])
JOBS_FINISHED = Counter(
    "jobmesh_jobs_finished_total",
    "Jobs that reached a terminal state, counted once per job by the process whose transition "
    "was applied", ["domain", "state", "reason"],
)
DEAD_LETTERS = Counter("jobmesh_dead_letters_total",
                       "Messages given up on and parked on the queue's dead-letter list", ["queue"])
# Reasons outside this set (ErrorReason names, then gRPC code names) count as OTHER, so a
# misbehaving error path cannot grow the label set.
OTHER_REASON = "OTHER"


def job_finished(domain: str, state: str, error: dict | None) -> None:
    """Counts one job ending in `state` (SUCCEEDED, FAILED or CANCELLED). Call it only when the
    terminal transition was applied (the store's Lua script said so): a redelivered or
    duplicated task is then never counted twice. `reason` is the stored error's reason
    (ErrorInfo), "" for SUCCEEDED."""
    reason = "" if state == "SUCCEEDED" else (error or {}).get("reason") or "INTERNAL"
    if reason and reason not in finish_reasons():
        reason = OTHER_REASON
    JOBS_FINISHED.labels(domain=domain, state=state, reason=reason).inc()


@functools.cache
def finish_reasons() -> frozenset[str]:
    """The `reason` values `jobmesh_jobs_finished_total` keeps as they are (besides "" for
    SUCCEEDED and OTHER): the ErrorReason names and the gRPC status code names."""
    from jobmesh.common.v1 import status_pb2

    names = {n.removeprefix("ERROR_REASON_") for n in status_pb2.ErrorReason.keys()}
    return frozenset(names | {c.name for c in grpc.StatusCode}) - {"UNSPECIFIED"}

# GPU gauges, sampled from NVML at each scrape of a worker (shared/gpu_metrics.py), only where
# NVML initialises: a machine without an NVIDIA GPU exposes none of them. Name -> (help, labels);
# `gpu_uuid` is NVML's UUID (GPU-5f3c...), as in Triton's nv_gpu_* metrics.
GPU_GAUGES = {
    "jobmesh_gpu_memory_used_bytes": ("GPU memory in use, all processes (NVML)", ("gpu_uuid",)),
    "jobmesh_gpu_memory_total_bytes": ("GPU memory installed (NVML)", ("gpu_uuid",)),
    "jobmesh_gpu_utilization_ratio": (
        "Share of the last sample period in which a kernel ran on the GPU, 0-1 (NVML)",
        ("gpu_uuid",)),
}


def serve_multiprocess(port: int) -> None:
    """`/metrics` for a prefork worker: aggregates every child's samples from
    PROMETHEUS_MULTIPROC_DIR (which must be set before prometheus_client is first imported)."""
    if port <= 0:
        return
    from prometheus_client import CollectorRegistry, multiprocess

    from shared import gpu_metrics

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    gpu_metrics.register(registry)
    try:
        start_http_server(port, registry=registry)
        log.info("metrics endpoint up", extra={"port": port, "mode": "multiprocess"})
    except OSError as exc:
        log.warning("metrics port busy, metrics disabled", extra={"port": port, "error": str(exc)})


def serve(port: int) -> None:
    """Starts the `/metrics` HTTP endpoint; port 0 disables it."""
    if port <= 0:
        return
    try:
        start_http_server(port)
        log.info("metrics endpoint up", extra={"port": port})
    except OSError as exc:  # a second process on one host must not die over its metrics port
        log.warning("metrics port busy, metrics disabled", extra={"port": port, "error": str(exc)})
