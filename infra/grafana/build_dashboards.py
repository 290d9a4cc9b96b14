"""Writes the Grafana dashboards in `dashboards/` from the description below: the mesh overview
and one dashboard per domain service, built from the same panel recipes so they cannot drift.

    .venv/bin/python infra/grafana/build_dashboards.py      # after changing this file

The JSON files are committed (Grafana provisions them as they are) and
tests/unit/test_dashboards.py fails while they differ from what this script writes, or while a
query names a metric or label that shared/metrics.py does not define.

Why one file per domain rather than one dashboard with a `service` variable: the compute, batch
and model-load metrics are labelled by `model` only (`ppocr-rec@v1`, `yamnet@v1`), and nothing in
the metrics says which domain a model belongs to. Each domain's dashboard therefore needs its own
model selector, which a variable cannot derive; the per-domain entries in DOMAINS hold it (and
the gRPC service name and the queue prefix). Each dashboard also gets a stable URL
(`/d/jobmesh-<domain>`) that the alert rules link to. A new domain is one DOMAINS entry.

Every query uses only metric names and labels from shared/metrics.py plus `le`; no Prometheus
target label (job, instance), so the dashboards work with the compose Prometheus
(../prometheus/prometheus.yml) and with Kubernetes pod discovery alike. The datasource is the
`datasource` variable, never a fixed UID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
R = "$__rate_interval"

# Codes that say the mesh failed rather than the caller (as in ../prometheus/alerts.yml).
SERVER_ERRORS = "UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS"
# gRPC health and reflection: probes, left out of request panels. The `service` label is the
# service's short name (shared/server/interceptors.py: `OcrService`, `Health`), not the
# package-qualified one; tests/unit/test_dashboards.py checks these against the interceptor.
NOT_PROBES = 'service!~"Health|ServerReflection"'
# RPCs whose duration the caller chooses (long poll, streams): left out of latency quantiles.
LONG_RPCS = "WaitJob|WatchJob|GenerateStream"
# The gateway's coalescer observes jobmesh_batch_size with the Celery task name as `model`
# (jobmesh.<domain>.v1.<task>); model runners observe it with the model's name@version.
GATEWAY_TASKS = r"jobmesh\\..+"


@dataclass(frozen=True)
class Domain:
    title: str
    service: str  # the gRPC service of the domain's gateway, package-qualified
    models: str  # PromQL regex over the `model` label of the models its workers run
    # `stage` values its workers record once per model call (beside per-request stages such as
    # audio's `tag`): they get a section of their own, unmixed with the per-request times.
    call_stages: tuple[str, ...] = ()

    @property
    def service_label(self) -> str:
        """The value of the `service` label on this service's requests (the short name)."""
        return self.service.rsplit(".", 1)[-1]


DOMAINS = {
    "ocr": Domain("OCR", "jobmesh.ocr.v1.OcrService", r"ppocr-(det|rec|cls)@.+"),
    "audio": Domain("Audio", "jobmesh.audio.v1.AudioService",
                    r"(yamnet|silero-vad|whisper-tiny-en|piper-joe-medium)@.+",
                    # workers/audio/metered.py: a YAMNet/PANNs window batch, a 32 ms VAD
                    # window, a Whisper window, a piper sentence
                    ("tag_window", "vad", "whisper", "piper")),
    "textgen": Domain("Text generation", "jobmesh.textgen.v1.TextGenerationService",
                      r"smollm2-135m-instruct@.+"),
    # No served model yet (the LM steps come later): a selector that matches none.
    "curation": Domain("Data curation", "jobmesh.curation.v1.CurationService",
                       r"curation-serves-no-model"),
    "compression": Domain("Model compression", "jobmesh.compression.v1.CompressionService",
                          r".+@.+"),
}


# ---- panel recipes -----------------------------------------------------------------------------

def target(expr: str, legend: str = "") -> dict:
    return {"datasource": DS, "editorMode": "code", "expr": expr, "legendFormat": legend,
            "range": True}


def ref_ids(targets: list[dict]) -> list[dict]:
    return [{"refId": chr(ord("A") + i), **t} for i, t in enumerate(targets)]


def timeseries(title: str, targets: list[dict], unit: str, description: str, *,
               stack: bool = False, threshold: float | None = None) -> dict:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
              "spanNulls": False, "stacking": {"mode": "normal" if stack else "none"}}
    steps = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
        custom["thresholdsStyle"] = {"mode": "line"}
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": ref_ids(targets),
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": custom,
                                     "color": {"mode": "palette-classic"},
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["mean", "max", "lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, expr: str, unit: str, description: str,
         steps: tuple[tuple[str, float], ...] = (), base: str = "green") -> dict:
    """`steps`: (colour, from value) above the `base` colour."""
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": ref_ids([target(expr)]),
        "fieldConfig": {"defaults": {
            "unit": unit, "color": {"mode": "thresholds"},
            "thresholds": {"mode": "absolute", "steps": [{"color": base, "value": None}] +
                           [{"color": c, "value": v} for c, v in steps]}},
            "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "justifyMode": "auto",
                    "orientation": "auto", "textMode": "auto"},
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def vec(metric: str, selector: str = "") -> str:
    """`metric{selector}`, or the bare name for an empty selector."""
    return f"{metric}{{{selector}}}" if selector else metric


def quantile(q: float, bucket: str, by: str, selector: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({vec(bucket, selector)}[{R}])))"


def rate_sum(metric: str, by: str, selector: str) -> str:
    return f"sum by ({by}) (rate({vec(metric, selector)}[{R}]))"


def _and(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


# ---- sections shared by the overview and the domain dashboards ---------------------------------

def glance(req_sel: str, queue_sel: str, jobs_sel: str) -> list[tuple[dict, int]]:
    unary = _and(req_sel, f'method!~"{LONG_RPCS}"')
    server = _and(req_sel, f'code=~"{SERVER_ERRORS}"')
    running = _and(jobs_sel, 'state="RUNNING"')
    return [
        (stat("Requests/s", f"sum(rate({vec('jobmesh_requests_total', req_sel)}[{R}]))",
              "reqps", "gRPC calls per second (health and reflection left out)."), 4),
        (stat("Server errors",
              f"sum(rate({vec('jobmesh_requests_total', server)}[{R}])) / "
              f"sum(rate({vec('jobmesh_requests_total', req_sel)}[{R}]))", "percentunit",
              f"Share of calls ending in {SERVER_ERRORS.replace('|', ', ')} (the mesh's fault, "
              "not the caller's). The alert fires above 5%.",
              (("orange", 0.01), ("red", 0.05))), 4),
        (stat("p95 latency", quantile(0.95, "jobmesh_request_duration_seconds_bucket", "", unary),
              "s", f"95th percentile of unary calls ({LONG_RPCS.replace('|', ', ')} left out: "
              "the caller chooses how long they last).", (("orange", 2.5), ("red", 5))), 4),
        (stat("Waiting messages",
              f"sum(max by (queue) ({vec('jobmesh_queue_depth', queue_sel)}))", "short",
              "Messages waiting in the queues (all priority lists). Every gateway replica "
              "reports the same value, hence max by queue.", (("orange", 10),)), 4),
        (stat("Live workers", f"sum(max by (queue) ({vec('jobmesh_worker_up', queue_sel)}))",
              "short", "Workers with a fresh heartbeat, over all queues. Red at zero: sync "
              "calls fail with UNAVAILABLE (NO_WORKER).", (("green", 1),), base="red"), 4),
        (stat("Running jobs", f"sum(max by (domain) ({vec('jobmesh_jobs', running)}))",
              "short", "Jobs in state RUNNING (from the job store's counters)."), 4),
    ]


def requests_section(by: str, req_sel: str, who: str) -> list[tuple[dict, int]]:
    legend = "{{" + by + "}}"
    unary = _and(req_sel, f'method!~"{LONG_RPCS}"')
    server = _and(req_sel, f'code=~"{SERVER_ERRORS}"')
    not_ok = _and(req_sel, 'code!="OK"')
    total = rate_sum("jobmesh_requests_total", by, req_sel)
    panels = [
        (timeseries(f"Requests/s by {who} and code",
                    [target(rate_sum("jobmesh_requests_total", f"{by}, code", req_sel),
                            legend + " {{code}}")],
                    "reqps", "gRPC calls per second, split by status code.", stack=True), 12),
        (timeseries(f"Error ratio by {who}",
                    [target(f"{rate_sum('jobmesh_requests_total', by, server)} / {total}",
                            legend + " server errors"),
                     target(f"{rate_sum('jobmesh_requests_total', by, not_ok)} / {total}",
                            legend + " not OK")],
                    "percentunit", "Server errors: " + SERVER_ERRORS.replace("|", ", ") +
                    ". Not OK: every code but OK, the caller's mistakes included. The red line "
                    "is the alert threshold (5% server errors).", threshold=0.05), 12),
    ]
    for q in (0.5, 0.95, 0.99):
        panels.append((timeseries(
            f"Request latency p{round(q * 100)} by {who}",
            [target(quantile(q, "jobmesh_request_duration_seconds_bucket", by, unary), legend)],
            "s", f"From the jobmesh_request_duration_seconds histograms; {LONG_RPCS} left out "
            "(long poll and streams)."), 8))
    return panels


def queues_section(queue_sel: str, jobs_sel: str, coalesce_sel: str) -> list[tuple[dict, int]]:
    return [
        (timeseries("Queue depth",
                    [target(f"max by (queue) ({vec('jobmesh_queue_depth', queue_sel)})",
                            "{{queue}}")],
                    "short", "Messages waiting per queue, all four priority lists summed "
                    "(what KEDA scales on). Max over gateway replicas, which all read the same "
                    "Redis."), 8),
        (timeseries("Workers up",
                    [target(f"max by (queue) ({vec('jobmesh_worker_up', queue_sel)})",
                            "{{queue}}")],
                    "short", "Live consumers per queue as the gateways see them (fresh "
                    "heartbeats). A GPU queue at zero is normal while it scales to zero."), 8),
        (timeseries("Jobs by state",
                    [target(f"max by (domain, state) ({vec('jobmesh_jobs', jobs_sel)})",
                            "{{domain}} {{state}}")],
                    "short", "Job records per state in the job store (records expire after the "
                    "retention period)."), 8),
        (timeseries("Finished jobs by state",
                    [target(rate_sum("jobmesh_jobs_finished_total", "domain, state", jobs_sel),
                            "{{domain}} {{state}}")],
                    "ops", "Jobs reaching SUCCEEDED, FAILED or CANCELLED per second, each "
                    "counted once by the worker or gateway that ended it.", stack=True), 8),
        (timeseries("Failed jobs by reason",
                    [target(rate_sum("jobmesh_jobs_finished_total", "domain, reason",
                                     _and(jobs_sel, 'state="FAILED"')),
                            "{{domain}} {{reason}}")],
                    "ops", "FAILED jobs per second by their error reason (ErrorInfo): "
                    "UNDECODABLE_INPUT, INPUT_TOO_LARGE, ... are the caller's; INTERNAL, "
                    "WORKER_LOST, DEADLINE_EXCEEDED, BACKEND_UNAVAILABLE are the mesh's and "
                    "feed the failure-ratio alert.", stack=True), 8),
        (timeseries("Dead letters",
                    [target(f"sum by (queue) (increase("
                            f"{vec('jobmesh_dead_letters_total', queue_sel)}[{R}]))",
                            "{{queue}}")],
                    "short", "Messages given up on (the worker died JOBMESH_MAX_DELIVERIES "
                    "times) and parked on jobmesh:deadletter:<queue>; any one raises an alert."),
         8),
        (timeseries("Queue wait",
                    [target(quantile(q, "jobmesh_queue_duration_seconds_bucket", "queue",
                                     queue_sel), f"p{round(q * 100)} {{{{queue}}}}")
                     for q in (0.5, 0.95, 0.99)],
                    "s", "Time from submit until a worker started the job (first delivery)."),
         12),
        (timeseries("Gateway coalescing delay",
                    [target(quantile(q, "jobmesh_coalesce_delay_seconds_bucket", "domain",
                                     coalesce_sel), f"p{round(q * 100)} {{{{domain}}}}")
                     for q in (0.5, 0.95)],
                    "s", "Time a sync request waited at the gateway for batch-mates before its "
                    "batch was queued (JOBMESH_COALESCE_DELAY_MS bounds it)."), 12),
    ]


def compute_quantiles(sel: str) -> list[dict]:
    """p50 and p95 of jobmesh_compute_duration_seconds by model and stage."""
    return [target(quantile(q, "jobmesh_compute_duration_seconds_bucket", "model, stage", sel),
                   f"p{round(q * 100)} {{{{model}}}} {{{{stage}}}}") for q in (0.5, 0.95)]


def models_section(model_sel: str, task_sel: str) -> list[tuple[dict, int]]:
    def mean(metric: str, sel: str) -> str:
        return (f"sum by (model) (rate({metric}_sum{{{sel}}}[{R}])) / "
                f"sum by (model) (rate({metric}_count{{{sel}}}[{R}]))")

    return [
        (timeseries("Compute time by model and stage",
                    compute_quantiles(model_sel), "s", "Time of one model call (one batch) on "
                    "the worker; text generation splits prefill (per prompt chunk) from decode "
                    "(per step)."), 12),
        (timeseries("Model calls/s",
                    [target(rate_sum("jobmesh_compute_duration_seconds_count", "model, stage",
                                     model_sel), "{{model}} {{stage}}")],
                    "ops", "Model calls per second, per model and stage."), 12),
        (timeseries("Batch size per model call", [target(mean("jobmesh_batch_size", model_sel),
                                                         "{{model}}")],
                    "short", "Mean items per model call (the first input's batch dimension)."),
         12),
        (timeseries("Requests per coalesced task (gateway)",
                    [target(mean("jobmesh_batch_size", task_sel), "{{model}}")],
                    "short", "Mean sync requests the gateway put into one Celery task; the "
                    "`model` label holds the task name here."), 12),
        (timeseries("Model load time",
                    [target(f"sum by (model) (jobmesh_model_load_seconds_sum{{{model_sel}}}) / "
                            f"sum by (model) (jobmesh_model_load_seconds_count{{{model_sel}}})",
                            "{{model}}")],
                    "s", "Mean time to fetch, verify and load a model, over the loads the "
                    "running workers made (each worker child loads once, and again after a "
                    "promote or rollback)."), 12),
        (timeseries("Model loads",
                    [target(f"sum by (model) (increase(jobmesh_model_load_seconds_count"
                            f"{{{model_sel}}}[{R}]))", "{{model}}")],
                    "short", "Loads per interval: worker starts, new children, serving-version "
                    "changes."), 12),
    ]


def calls_section(model_sel: str, stages: tuple[str, ...]) -> list[tuple[dict, int]]:
    """Per model call figures for the `stages` a domain's workers record once per call."""
    sel = _and(model_sel, f'stage=~"{"|".join(stages)}"')
    return [
        (timeseries("Time per model call by stage",
                    compute_quantiles(sel), "s", f"One call of the model ({', '.join(stages)}), "
                    "without the request around it (decode, other models), which the "
                    "per-request stages measure."), 12),
        (timeseries("Cores busy in model calls by stage",
                    [target(rate_sum("jobmesh_compute_duration_seconds_sum", "stage", sel),
                            "{{stage}}")],
                    "short", "Seconds of model calls per second, summed over the workers: 1 is "
                    "one core (or one GPU stream) kept busy. Which model the workers' time "
                    "goes to.", stack=True), 12),
        (timeseries("Model calls/s by stage",
                    [target(rate_sum("jobmesh_compute_duration_seconds_count", "model, stage",
                                     sel), "{{model}} {{stage}}")],
                    "ops", "Model calls per second, per model and per-call stage."), 12),
        (timeseries("Batch size per model call (p50 / p95)",
                    [target(quantile(q, "jobmesh_batch_size_bucket", "model", model_sel),
                            f"p{round(q * 100)} {{{{model}}}}") for q in (0.5, 0.95)],
                    "short", "Items per ONNX Runtime call (the first input's leading dimension; "
                    "bucket bounds 1, 2, 4, ... 128). YAMNet and the VAD take 1."), 12),
    ]


def gpus_section() -> list[tuple[dict, int]]:
    return [
        (timeseries("GPU memory",
                    [target("max by (gpu_uuid) (jobmesh_gpu_memory_used_bytes)",
                            "{{gpu_uuid}} used"),
                     target("max by (gpu_uuid) (jobmesh_gpu_memory_total_bytes)",
                            "{{gpu_uuid}} total")],
                    "bytes", "Memory in use on each GPU (all processes, NVML) against what it "
                    "has. Reported by every worker that sees the GPU, hence max by GPU. Empty "
                    "without GPU workers (or without the nvidia-ml-py package in their image)."),
         12),
        (timeseries("GPU utilization",
                    [target("max by (gpu_uuid) (jobmesh_gpu_utilization_ratio)",
                            "{{gpu_uuid}}")],
                    "percentunit", "Share of NVML's last sample period (1/6 s to 1 s) in which a "
                    "kernel ran on the GPU: busy, not how much of the GPU the kernels used."), 12),
    ]


# ---- dashboards --------------------------------------------------------------------------------

def layout(sections: list[tuple[str, list[tuple[dict, int]]]], height: int = 8) -> list[dict]:
    """Rows of panels, left to right, wrapping at Grafana's 24 columns; ids in order."""
    panels, y, pid = [], 0, 1
    for title, items in sections:
        r = row(title)
        r["id"], r["gridPos"] = pid, {"h": 1, "w": 24, "x": 0, "y": y}
        panels.append(r)
        pid, y, x = pid + 1, y + 1, 0
        h = 4 if all(p["type"] == "stat" for p, _ in items) else height
        for panel, w in items:
            if x + w > 24:
                x, y = 0, y + h
            panel["id"], panel["gridPos"] = pid, {"h": h, "w": w, "x": x, "y": y}
            panels.append(panel)
            pid, x = pid + 1, x + w
        y += h
    return panels


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["jobmesh"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "schemaVersion": 39,
        "version": 1,
        "links": [{"title": "jobmesh", "type": "dashboards", "tags": ["jobmesh"],
                   "asDropdown": True, "includeVars": False, "keepTime": True}],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "includeAll": False,
            "multi": False, "options": [], "refresh": 1, "regex": ""}]},
        "panels": panels,
    }


def overview() -> dict:
    sections = [
        ("Mesh at a glance", glance(NOT_PROBES, "", "")),
        ("Requests", requests_section("service", NOT_PROBES, "service")),
        ("Queues, workers and jobs", queues_section("", "", "")),
        ("Models", models_section(f'model!~"{GATEWAY_TASKS}"', f'model=~"{GATEWAY_TASKS}"')),
        ("GPUs", gpus_section()),
    ]
    return dashboard("jobmesh-overview", "jobmesh / overview",
                     "Every gateway, queue, worker and model of the mesh. One dashboard per "
                     "domain service has the same panels for that domain.", layout(sections))


def domain_dashboard(name: str, d: Domain) -> dict:
    req = f'service="{d.service_label}"'
    queue = f'queue=~"{name}\\\\..+"'
    task = f'model=~"jobmesh\\\\.{name}\\\\..+"'
    sections = [
        (f"{d.title} at a glance", glance(req, queue, f'domain="{name}"')),
        (f"Requests ({d.service})", requests_section("method", req, "method")),
        (f"Queues {name}.gpu / {name}.cpu, workers and jobs",
         queues_section(queue, f'domain="{name}"', f'domain="{name}"')),
        ("Models", models_section(f'model=~"{d.models}"', task)),
    ]
    if d.call_stages:
        sections.append((f"Model calls ({', '.join(d.call_stages)})",
                         calls_section(f'model=~"{d.models}"', d.call_stages)))
    return dashboard(f"jobmesh-{name}", f"jobmesh / {d.title}",
                     f"The {d.title} gateway ({d.service}), its queues, workers and models. "
                     "JobService, BatchService and ModelService calls are on the overview.",
                     layout(sections))


def build() -> dict[str, dict]:
    """file name -> dashboard."""
    out = {"jobmesh-overview.json": overview()}
    for name, d in DOMAINS.items():
        out[f"jobmesh-{name}.json"] = domain_dashboard(name, d)
    return out


def render(board: dict) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for fname, board in build().items():
        (OUT / fname).write_text(render(board))
        print(OUT / fname)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
