"""The curation worker's Celery app and tasks.

A SubmitCurate job runs as a fan-out:

1. `curate` (the job's own task) checks the pipeline, writes the plan, marks the shards an
   earlier run with the same pipeline finished (their completion markers under the output
   prefix) as done, queues one `shard` task per remaining shard, and returns DEFERRED: the job
   stays RUNNING.
2. `shard` (one per shard, on any worker): read, filter, compute dedup keys; write the shard's
   kept and removed documents, keys and stats under `<output>/_work/`, then its completion
   marker; count the shard once (a Redis set) and report progress. A shard that kills its
   worker `max_deliveries` times fails the job with WORKER_LOST.
3. Whoever counts the last shard finalizes (idempotent, so a crash while finalizing is repaired
   by the redelivered task): the dedup steps across all shards, the curated shards and the
   removed documents written under the output prefix, the report, SUCCEEDED. A failed shard
   fails the job and a cancel cancels it, both before any output shard is written; the markers
   of finished shards stay, so the same request resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from services.curation.convert import CURATE_TASK, FINETUNE_TASK, SCORE_TASK, SHARD_TASK
from shared import logs
from shared.config import Settings
from shared.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    JobCancelled,
    JobmeshError,
    NotFound,
)
from shared.jobs.celery_app import make_celery
from shared.jobs.records import JobRecord, State
from shared.jobs.worker_kit import DEFERRED, JobContext, WorkerKit
from shared.models.serving import ServedModels
from shared.storage.artifacts import ArtifactRef, tenant_key
from workers.curation import report
from workers.curation.documents import Document
from workers.curation.pipeline import global_stage, needs_lm, order_note, process_shard
from workers.curation.shards import ShardError, read_shard, write_shard
from workers.curation.steps import PipelineError, parse_pipeline
from workers.textgen.export import MODEL_NAME as LM_NAME

log = logging.getLogger(__name__)

settings = Settings()
app = make_celery("jobmesh-curation-worker", settings)
kit = WorkerKit(app, "curation", settings)

MAX_SHARD_BYTES = 512 * 1024 * 1024
_models: ServedModels | None = None


def lm_folder() -> Path:
    """The reference LM (the SmolLM2 version the registry serves), verified in the local
    cache; re-read like any served model, so a promotion reaches curation too."""
    global _models
    if _models is None:
        _models = ServedModels.from_settings(settings)
    return _models.folder(LM_NAME)[1]


def model_folder(ref: str) -> Path:
    """The verified local folder of a registry model: "name" (the version it serves now) or
    "name@version"; NOT_FOUND for a name or version the registry does not hold."""
    global _models
    if _models is None:
        _models = ServedModels.from_settings(settings)
    name, _, version = ref.partition("@")
    if not version:
        return _models.folder(name)[1]
    return _models.registry.fetch(name, version, settings.model_cache_dir)[1]


def _done_key(job_id: str) -> str:
    return f"jobmesh:curation:{job_id}:shards_done"


def _failed_key(job_id: str) -> str:
    return f"jobmesh:curation:{job_id}:shards_failed"


def _steps(pipeline: list[dict]):
    try:
        return parse_pipeline(pipeline)
    except PipelineError as exc:
        raise InvalidArgument.for_field(exc.field, exc.problem) from exc


def pipeline_hash(request: dict) -> str:
    """What makes two runs' shard results interchangeable: the steps and the fields read."""
    spec = {"pipeline": [s.as_dict() for s in _steps(request["pipeline"])],
            "text_field": request["text_field"], "id_field": request["id_field"]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class Layout:
    """Where a run's objects live in the artifacts bucket."""

    def __init__(self, job: JobRecord, request: dict):
        self.bucket = settings.artifacts_bucket
        self.output = request["output_prefix"]  # a full key prefix ending in "/"
        self.plan = tenant_key(job.tenant, "jobs", job.id, "plan.json")

    def marker(self, shard: dict) -> str:
        return f"{self.output}_markers/{shard['name']}.json"

    def work(self, shard: dict, name: str) -> str:
        return f"{self.output}_work/{shard['name']}/{name}"

    def output_shard(self, shard: dict) -> str:
        return self.output + shard["name"]

    def removed(self, shard: dict) -> str:
        return f"{self.output}removed/{shard['name']}.jsonl"


def _get_json(key: str, bucket: str | None = None) -> dict | list | None:
    try:
        return json.loads(kit.artifacts().get_bytes(
            ArtifactRef(bucket or settings.artifacts_bucket, key)))
    except NotFound:
        return None


def _put_json(key: str, value) -> None:
    kit.artifacts().put_bytes(settings.artifacts_bucket, key,
                              json.dumps(value, sort_keys=True).encode(), "application/json")


def _jsonl(docs: list[Document], reasons: list[str] | None = None) -> bytes:
    rows = [{"id": d.id, "text": d.text, **d.metadata,
             **({"reason": reasons[n]} if reasons else {})} for n, d in enumerate(docs)]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


@kit.task(CURATE_TASK)
def curate(ctx: JobContext, request: dict):
    _steps(request["pipeline"])  # the gateway checked it; a worker of another version rechecks
    layout = Layout(ctx.job, request)
    plan = {**request, "pipeline_hash": pipeline_hash(request), "started": time.time()}
    _put_json(layout.plan, plan)
    ctx.store.track_artifact_expiry(layout.bucket, layout.plan, ctx.job.expire_time)
    shards, store = request["shards"], ctx.store
    resumed = 0
    for index, shard in enumerate(shards):
        marker = _get_json(layout.marker(shard))
        if marker and marker.get("pipeline_hash") == plan["pipeline_hash"] and \
                marker.get("input") == _input_fingerprint(shard):
            store.redis.sadd(_done_key(ctx.job.id), index)
            resumed += 1
    _expire_with_job(ctx.job)
    store.redis.hset(f"jobmesh:curation:{ctx.job.id}:meta", "resumed", resumed)
    ctx.progress(resumed, len(shards), f"{resumed} of {len(shards)} shards done"
                 + (f" ({resumed} resumed)" if resumed else ""))
    pending = [i for i in range(len(shards))
               if not store.redis.sismember(_done_key(ctx.job.id), i)]
    for index in pending:
        app.send_task(SHARD_TASK, args=[{"job_id": ctx.job.id, "shard": index}],
                      queue=ctx.job.queue)
    if not pending:
        _finalize(ctx.job.id)
    return DEFERRED


def _input_fingerprint(shard: dict) -> dict:
    st = kit.artifacts().stat(settings.artifacts_bucket, shard["key"])
    return {"key": shard["key"], "size": st.size, "sha256": st.sha256}


def _expire_with_job(job: JobRecord) -> None:
    ttl = max(60, int(job.expire_time - time.time()))
    for key in (_done_key(job.id), _failed_key(job.id), f"jobmesh:curation:{job.id}:meta"):
        kit.store().redis.expire(key, ttl)


@app.task(name=SHARD_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def shard_task(task_self, envelope: dict) -> None:
    store = kit.store()
    job = store.get(str(envelope.get("job_id", "")))
    if job is None or job.done:
        return
    logs.job_id_var.set(job.id)
    logs.tenant_var.set(job.tenant)
    index = int(envelope["shard"])
    if store.redis.sismember(_done_key(job.id), index):
        _maybe_finalize(job)
        return
    plan = _get_json(tenant_key(job.tenant, "jobs", job.id, "plan.json"))
    if plan is None:
        return  # the job was deleted meanwhile
    shard = plan["shards"][index]
    deliveries = store.count_chunk_delivery(job.id, index)
    error = None
    if deliveries > settings.max_deliveries:
        error = JobmeshError(f"shard {shard['name']}: the worker died {deliveries - 1} times "
                             "on it; giving up", reason="WORKER_LOST",
                             metadata={"shard": shard["name"]})
    elif store.state(job.id) in (State.CANCELLING, State.CANCELLED):
        pass  # counted as done; finalizing sees the cancel
    else:
        meta = {"shard": shard["name"]}
        try:
            _run_shard(job, plan, shard)
        except ShardError as exc:
            error = InvalidArgument(f"shard {shard['name']}: {exc}", metadata=meta)
        except SoftTimeLimitExceeded:
            error = DeadlineExceeded(f"shard {shard['name']}: exceeded the task time limit "
                                     f"({settings.task_time_limit_s} s); split it", metadata=meta)
        except JobmeshError as exc:
            error = exc
        except Exception as exc:  # a bug fails the job; it must not leave it RUNNING
            log.exception("shard crashed", extra={"shard": shard["name"]})
            error = Internal(f"shard {shard['name']}: worker error: {exc.__class__.__name__}",
                             metadata=meta)
    if error is not None:
        store.redis.hset(_failed_key(job.id), index, json.dumps(error.to_dict()))
    store.redis.sadd(_done_key(job.id), index)
    done = store.redis.scard(_done_key(job.id))
    store.progress(job.id, done, len(plan["shards"]), f"{done} of {len(plan['shards'])} shards")
    _maybe_finalize(job)


def _run_shard(job: JobRecord, plan: dict, shard: dict) -> None:
    layout = Layout(job, plan)
    art = kit.artifacts()
    data = art.get_bytes(ArtifactRef(settings.artifacts_bucket, shard["key"]),
                         max_bytes=MAX_SHARD_BYTES)
    docs = read_shard(data, shard["name"], plan["text_field"], plan["id_field"])
    steps = _steps(plan["pipeline"])
    outcome = process_shard(docs, steps, lm_folder() if needs_lm(steps) else None,
                            model_folder)
    # Dedup keys are `<shard>/<id>`: ids need only be unique within their shard.
    outcome.keys = {step: {_dedup_id(shard, doc_id): v for doc_id, v in values.items()}
                    for step, values in outcome.keys.items()}
    art.put_bytes(layout.bucket, layout.work(shard, "kept.jsonl"), _jsonl(outcome.kept),
                  "application/jsonl")
    art.put_bytes(layout.bucket, layout.work(shard, "removed.jsonl"),
                  _jsonl([d for d, _ in outcome.removed], [r for _, r in outcome.removed]),
                  "application/jsonl")
    # In document order, not sorted: drain_templates reads the records in input order.
    art.put_bytes(layout.bucket, layout.work(shard, "keys.json"),
                  json.dumps(outcome.keys).encode(), "application/json")
    # The marker last: it promises the work files above are complete.
    _put_json(layout.marker(shard), {
        "pipeline_hash": plan["pipeline_hash"], "input": _input_fingerprint(shard),
        "stats": dict(outcome.stats), "histograms": outcome.histograms})


def _dedup_id(shard: dict, doc_id: str) -> str:
    return f"{shard['name']}/{doc_id}"


def _with(doc: Document, fields: dict | None) -> Document:
    """`doc` with the metadata a global step gave it (template, cluster) on top."""
    return dataclasses.replace(doc, metadata={**doc.metadata, **fields}) if fields else doc


def _maybe_finalize(job: JobRecord) -> None:
    plan_total = kit.store().redis.scard(_done_key(job.id))
    plan = _get_json(tenant_key(job.tenant, "jobs", job.id, "plan.json"))
    if plan is None or plan_total < len(plan["shards"]):
        return
    try:
        _finalize(job.id)
    except Exception as exc:  # S3 gone while writing outputs, or a bug: FAIL, never hang
        log.exception("curation finalize failed")
        err = exc if isinstance(exc, JobmeshError) else Internal(
            f"finalizing failed: {exc.__class__.__name__}")
        current = kit.store().get(job.id)
        if current is not None and not current.done:
            kit.store().transition(current, State.FAILED, {"error": err.to_dict()})


def _finalize(job_id: str) -> None:
    store = kit.store()
    job = store.get(job_id)
    if job is None or job.done:
        return
    plan = _get_json(tenant_key(job.tenant, "jobs", job.id, "plan.json"))
    failures = store.redis.hgetall(_failed_key(job.id))
    if store.state(job.id) in (State.CANCELLING, State.CANCELLED):
        store.transition(job, State.CANCELLED, {"error": {
            "code": 1, "reason": "CANCELLED", "message": "cancelled by the client; finished "
            "shards are kept and the same request resumes from them"}})
        return
    if failures:
        first = json.loads(failures[sorted(failures, key=int)[0]])
        first["message"] += f" ({len(failures)} of {len(plan['shards'])} shards failed; " \
                            "no output was written)"
        store.transition(job, State.FAILED, {"error": first})
        return
    summary, refs = _write_outputs(job, plan)
    store.transition(job, State.SUCCEEDED, {"result": summary, "artifacts": refs})
    log.info("curation finished", extra={"documents_in": summary["documents_in"],
                                         "documents_kept": summary["documents_kept"]})


def _write_outputs(job: JobRecord, plan: dict) -> tuple[dict, list[dict]]:
    layout, art = Layout(job, plan), kit.artifacts()
    steps = _steps(plan["pipeline"])
    shards = plan["shards"]
    markers = [_get_json(layout.marker(s)) for s in shards]
    keys = [_get_json(layout.work(s, "keys.json")) or {} for s in shards]
    outcome = global_stage(steps, keys)
    duplicates = outcome.removed
    stats: dict[str, int] = dict(outcome.stats)
    histograms: dict[str, list[int]] = {}
    outputs, kept_total = [], 0
    for shard, marker in zip(shards, markers, strict=True):
        for k, v in marker["stats"].items():
            stats[k] = stats.get(k, 0) + v
        for k, v in marker["histograms"].items():
            histograms[k] = [a + b for a, b in zip(histograms.get(k, [0] * len(v)), v,
                                                   strict=True)]
        kept = read_shard(art.get_bytes(ArtifactRef(layout.bucket, layout.work(
            shard, "kept.jsonl"))), "kept.jsonl")
        removed_raw = art.get_bytes(ArtifactRef(layout.bucket, layout.work(shard,
                                                                           "removed.jsonl")))
        final = [_with(d, outcome.metadata.get(_dedup_id(shard, d.id)))
                 for d in kept if _dedup_id(shard, d.id) not in duplicates]
        dups = [d for d in kept if _dedup_id(shard, d.id) in duplicates]
        kept_total += len(final)
        ref = art.put_bytes(layout.bucket, layout.output_shard(shard),
                            write_shard(final, shard["name"]),
                            "application/octet-stream")
        outputs.append(ref.to_dict())
        reasons = [duplicates[_dedup_id(shard, d.id)] for d in dups]
        art.put_bytes(layout.bucket, layout.removed(shard), removed_raw + _jsonl(dups, reasons),
                      "application/jsonl")
    documents_in = int(stats.get("documents_in", 0))
    summary = {
        "job": job.name, "shards": len(shards),
        "shards_resumed": int(kit.store().redis.hget(f"jobmesh:curation:{job.id}:meta",
                                                     "resumed") or 0),
        "documents_in": documents_in, "documents_kept": kept_total,
        "documents_removed": documents_in - kept_total,
        "steps": report.summary_steps([{"step": s.step, "kind": s.kind} for s in steps],
                                      stats, documents_in),
        "output_prefix": layout.output, "outputs": outputs,
        "seconds": round(time.time() - plan["started"], 2), "histograms": histograms,
        "notes": [n for n in [order_note(steps)] if n],
        "step_reports": outcome.reports,
    }
    refs = []
    for name, body, ctype in (("report.json", report.to_json(summary), "application/json"),
                              ("report.html", report.to_html(summary).encode(), "text/html")):
        key = tenant_key(job.tenant, "jobs", job.id, name)
        ref = art.put_bytes(layout.bucket, key, body, ctype)
        kit.store().track_artifact_expiry(ref.bucket, ref.key, job.expire_time)
        art.put_bytes(layout.bucket, f"{layout.output}_{name}", body, ctype)
        refs.append(ref.to_dict())
    # The run is complete: its work files and markers have done their job.
    art.delete_prefix(layout.bucket, f"{layout.output}_work/")
    art.delete_prefix(layout.bucket, f"{layout.output}_markers/")
    return summary, refs


@kit.task(SCORE_TASK)
def score(ctx: JobContext, request: dict) -> dict:
    from workers.curation.scoring import score_texts

    return {"scores": score_texts(request["texts"], lm_folder())}


@kit.task(FINETUNE_TASK)
def finetune_model(ctx: JobContext, request: dict) -> dict:
    """SubmitFineTune: the target sample, LoRA on the reference LM, merged, exported, registered
    (workers/curation/finetune.py). A version the registry already holds (same recipe, same
    sample) is not trained again."""
    from shared.models.registry import ModelRegistry
    from workers.compression.lora import LoraConfig
    from workers.curation import finetune

    texts = request["texts"] or _target_texts(request["target"], request["text_field"])
    lora = request["lora"]
    cfg = LoraConfig(rank=lora["rank"], alpha=2 * lora["rank"], steps=lora["steps"],
                     seq_len=lora["seq_len"], batch=lora["batch"], lr=lora["lr"])
    registry = ModelRegistry(kit.artifacts(), settings.models_bucket)
    name = request["model_name"]
    version = finetune.version_of(cfg, finetune.target_sha256(texts))
    try:
        manifest = registry.manifest(name, version)
    except NotFound:
        manifest = None
    if manifest is not None:
        if request["serve"]:
            registry.set_serving(name, version)
        return _finetune_result(name, version, manifest.provenance, reused=True)

    def progress(phase: str, done: int, total: int, loss: float) -> None:
        if ctx.should_stop():
            raise JobCancelled()
        if phase == "train":
            ctx.progress(done, total + 1, f"step {done}/{total}, batch loss {loss:.3f}")
        else:
            ctx.progress(cfg.steps, cfg.steps + 1, "merging and exporting to ONNX")

    try:
        tuned = finetune.fine_tune(texts, cfg, name, progress)
    except ValueError as exc:  # too little text for one batch of blocks
        field = "target_texts" if request["texts"] else "target"
        raise InvalidArgument.for_field(field, str(exc)) from exc
    manifest = finetune.register(registry, tuned, request["serve"])
    ctx.progress(cfg.steps + 1, cfg.steps + 1, f"registered {name}@{version}")
    return _finetune_result(name, version, manifest.provenance, reused=False)


def _target_texts(target: dict, text_field: str) -> list[str]:
    data = kit.artifacts().get_bytes(ArtifactRef(target["bucket"], target["key"],
                                                 target["sha256"]), max_bytes=MAX_SHARD_BYTES)
    try:
        return [d.text for d in read_shard(data, target["key"].rsplit("/", 1)[-1], text_field)]
    except ShardError as exc:
        raise InvalidArgument.for_field("target", str(exc)) from exc


def _finetune_result(name: str, version: str, provenance: dict, reused: bool) -> dict:
    return {"model": f"{name}@{version}", "parent": provenance["parent"],
            "target_sha256": provenance["target_sha256"],
            "target_documents": provenance["target_documents"],
            "train_blocks": provenance["train_blocks"],
            "first_loss": provenance["first_loss"], "last_loss": provenance["last_loss"],
            "train_seconds": provenance.get("train_seconds", 0.0), "reused": reused}


if settings.diagnostics:
    from workers import diag

    diag.register(kit)
