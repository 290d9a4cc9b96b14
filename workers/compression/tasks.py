"""The compression worker's Celery app and task (thin: fetch the parent version, run the recipe,
evaluate both on the same inputs, register the new version with its report, maybe promote)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from celery import signals

from services.compression.convert import (
    ADAPTER_RECIPES,
    COMPRESS_TASK,
    MAX_VALIDATION_CHARS,
    derived_version,
)
from services.compression.servicer import CAPABILITIES_KEY
from shared.config import Settings
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.jobs.celery_app import make_celery
from shared.jobs.worker_kit import JobContext, WorkerKit
from shared.models.registry import ModelRegistry
from shared.storage.artifacts import ArtifactRef, ArtifactStore
from workers.compression import adapters, tensorrt
from workers.compression.adapter_recipe import compress_adapter
from workers.compression.families import family_of
from workers.compression.recipes import (
    RecipeError,
    int8_dynamic,
    int8_static,
    sparsify_2_4,
    to_fp16,
)
from workers.compression.report import CompressionReport

log = logging.getLogger(__name__)

settings = Settings()
app = make_celery("jobmesh-compression-worker", settings)
kit = WorkerKit(app, "compression", settings)
STAGES = 5


@signals.worker_ready.connect
def _publish_capabilities(sender=None, **_) -> None:
    """Lets gateways answer ListRecipes: which EPs this worker's onnxruntime has."""
    import onnxruntime as ort
    import redis

    worker = f"{getattr(sender, 'hostname', 'worker')}:{os.getpid()}"
    client = redis.Redis.from_url(settings.redis_url)
    client.hset(CAPABILITIES_KEY, worker, json.dumps(ort.get_available_providers()))
    client.expire(CAPABILITIES_KEY, 24 * 3600)


def _registry() -> ModelRegistry:
    return ModelRegistry(ArtifactStore.from_settings(settings), settings.models_bucket)


def _apply(recipe: dict, family, model: Path, work: Path, calibration_samples: int):
    name = recipe["name"]
    count = calibration_samples or family.default_calibration
    try:
        if name == "int8_dynamic":
            return int8_dynamic(model, work, op_types=recipe["op_types"] or None,
                                probe=family.probe())
        if name == "int8_static":
            return int8_static(model, work, family.calibration(count),
                               op_types=recipe["op_types"] or None,
                               per_channel=recipe["per_channel"], probe=family.probe(),
                               method=recipe.get("calibration", "percentile"))
        if name == "fp16":
            return to_fp16(model, work)
        if name == "sparse_2_4":
            method = recipe["method"]
            return sparsify_2_4(model, work, method=method,
                                include=recipe["include"] or family.default_include,
                                calibration=family.calibration(count) if method == "wanda"
                                else None)
        if name == "tensorrt":
            return tensorrt.build_engine(model, work, family.probe(), fp16=recipe["fp16"])
    except RecipeError as exc:
        raise InvalidArgument.for_field(exc.field, exc.problem) from exc
    raise InvalidArgument.for_field("recipe", f"unknown recipe {name!r}")


def _summary(report: CompressionReport, promoted: bool) -> dict:
    return {"model": report.model, "version": report.version,
            "parent_version": report.parent_version, "recipe": report.recipe,
            "promoted": promoted, "size_bytes": report.size_bytes,
            "parent_size_bytes": report.parent_size_bytes, "size_ratio": report.size_ratio,
            "latency_ratio": report.latency_ratio, "metric": report.metric,
            "parent_metric": report.parent_metric, "metric_value": report.metric_value,
            "metric_delta": report.metric_delta, "notes": report.notes}


def _within(report: CompressionReport, policy: dict) -> bool:
    return (policy.get("promote", False)
            and report.metric_delta <= policy.get("max_metric_delta", 0.0)
            and report.latency_ratio <= policy.get("max_latency_ratio", 1.0))


@kit.task(COMPRESS_TASK)
def compress(ctx: JobContext, request: dict) -> dict:
    registry = _registry()
    name, recipe = request["model"], request["recipe"]
    parent_version = request.get("version") or registry.serving_version(name)
    target = request.get("target_version") or derived_version(parent_version, recipe)
    try:  # a redelivered job (or the same recipe again) finds the version it registered
        existing = registry.manifest(name, target)
    except NotFound:
        existing = None
    if existing is not None:
        _, folder = registry.fetch(name, target, settings.model_cache_dir)
        report = CompressionReport.from_json((folder / "report.json").read_bytes())
        if report.parent_version != parent_version or report.params.get("recipe") != recipe:
            raise InvalidArgument.for_field(
                "target_version", f"{name}@{target} exists and was made another way")
        return _finish(ctx, registry, report, request.get("promotion", {}))

    ctx.progress(0, STAGES, f"fetching {name}@{parent_version}")
    manifest, folder = registry.fetch(name, parent_version, settings.model_cache_dir)
    if adapters.is_adapter(folder) or recipe["name"] in ADAPTER_RECIPES:
        return _compress_adapter(ctx, registry, request, parent_version, target, folder)
    onnx_files = [f.path for f in manifest.files if f.path.endswith(".onnx")]
    if len(onnx_files) != 1:
        raise FailedPrecondition(f"{name}@{parent_version} is not one ONNX graph "
                                 f"({len(onnx_files)} .onnx files); recipes need one",
                                 metadata={"model": name})
    model = folder / onnx_files[0]
    family = family_of(name, folder, model, manifest.inputs)
    samples = request.get("eval", {}).get("samples") or family.default_samples
    work_root = Path(settings.model_cache_dir) / ".work"
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_root, prefix=f"{name}-") as tmp:
        work = Path(tmp)
        ctx.progress(1, STAGES, f"applying {recipe['name']}")
        outcome = _apply(recipe, family, model, work / "model",
                         request.get("eval", {}).get("calibration_samples", 0))
        ctx.check_cancelled()
        ctx.progress(2, STAGES, f"evaluating against {parent_version} ({family.metric})")
        ev = family.compare(outcome.model, samples)
        ctx.check_cancelled()
        report = CompressionReport(
            model=name, parent_version=parent_version, version=target, recipe=recipe["name"],
            params={"recipe": recipe, **outcome.params, "family": family.name,
                    "samples": samples, **ev.details},
            notes=outcome.notes, size_bytes=outcome.model.stat().st_size,
            parent_size_bytes=model.stat().st_size, metric=ev.metric,
            parent_metric=ev.parent, metric_value=ev.new, latency_ms=ev.latency_ms,
            parent_latency_ms=ev.parent_latency_ms)
        ctx.progress(3, STAGES, f"registering {name}@{target}")
        (work / "report.json").write_bytes(report.to_json())
        (work / "report.md").write_text(report.to_markdown())
        # The parent's other files (tokenizer, generation config) come along unchanged.
        files = {f.path: folder / f.path for f in manifest.files
                 if f.path != onnx_files[0] and f.path not in ("report.json", "report.md")}
        files[onnx_files[0]] = outcome.model
        files.update({"report.json": work / "report.json", "report.md": work / "report.md"})
        for extra in sorted(outcome.model.parent.glob(f"{tensorrt.ENGINE_DIR}/*")):
            files[f"{tensorrt.ENGINE_DIR}/{extra.name}"] = extra
        registry.register(name, target, files, inputs=manifest.inputs,
                          outputs=manifest.outputs,
                          provenance={"source": "recipe:" + json.dumps(recipe, sort_keys=True),
                                      "parent_version": parent_version})
    return _finish(ctx, registry, report, request.get("promotion", {}))


def _validation_texts(request: dict) -> list[str] | None:
    """The request's validation text (inline, or the object the gateway checked), None for
    the adapter's own."""
    ref = request["recipe"].get("validation_ref")
    if not ref:
        return request.get("validation_texts") or None
    store = ArtifactStore.from_settings(settings)
    raw = store.get_bytes(ArtifactRef(ref["bucket"], ref["key"], ref["sha256"]),
                          max_bytes=4 * MAX_VALIDATION_CHARS)
    try:
        return [raw.decode("utf-8")]
    except UnicodeDecodeError as exc:
        raise InvalidArgument.for_field("recipe.compeft.validation_ref",
                                        f"is not UTF-8 text: {exc}") from exc


def _compress_adapter(ctx: JobContext, registry: ModelRegistry, request: dict,
                      parent_version: str, target: str, folder: Path) -> dict:
    """The `compeft` recipe on a `peft-lora` entry: a new adapter version holding the
    compressed form, judged by task loss (adapter_recipe.py)."""
    name, recipe = request["model"], request["recipe"]
    if recipe["name"] not in ADAPTER_RECIPES:
        raise InvalidArgument.for_field("recipe", f"{name}@{parent_version} is a LoRA adapter: "
                                        f"its recipes are {', '.join(ADAPTER_RECIPES)}")
    if not adapters.is_adapter(folder):
        raise InvalidArgument.for_field(f"recipe.{recipe['name']}",
                                        f"{name}@{parent_version} is not a LoRA adapter")
    blocks = request.get("eval", {}).get("samples") or 8
    work_root = Path(settings.model_cache_dir) / ".work"
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_root, prefix=f"{name}-") as tmp:
        work = Path(tmp)
        try:
            outcome = compress_adapter(
                folder, recipe, _validation_texts(request), blocks, work / "adapter",
                progress=lambda message: ctx.progress(1, STAGES, message))
        except RecipeError as exc:
            raise InvalidArgument.for_field(exc.field, exc.problem) from exc
        ctx.check_cancelled()
        report = CompressionReport(
            model=name, parent_version=parent_version, version=target, recipe=recipe["name"],
            params={"recipe": recipe, "family": adapters.FAMILY, "samples": blocks,
                    **outcome.params},
            notes=outcome.notes, size_bytes=outcome.size_bytes,
            parent_size_bytes=outcome.parent_size_bytes, metric="task_loss",
            parent_metric=outcome.parent_loss, metric_value=outcome.loss,
            latency_ms=outcome.latency_ms, parent_latency_ms=outcome.parent_latency_ms)
        ctx.progress(3, STAGES, f"registering {name}@{target}")
        (work / "report.json").write_bytes(report.to_json())
        (work / "report.md").write_text(report.to_markdown())
        adapters.register_adapter(
            registry, name, target, outcome.folder,
            provenance={"source": "recipe:" + json.dumps(recipe, sort_keys=True),
                        "parent_version": parent_version},
            extra={"report.json": work / "report.json", "report.md": work / "report.md"})
    return _finish(ctx, registry, report, request.get("promotion", {}))


def _finish(ctx: JobContext, registry: ModelRegistry, report: CompressionReport,
            policy: dict) -> dict:
    ctx.put_artifact("report.json", report.to_json(), "application/json")
    ctx.put_artifact("report.md", report.to_markdown().encode(), "text/markdown")
    promoted = False
    if _within(report, policy):
        registry.promote(report.model, report.version)
        promoted = True
        log.info("compressed version promoted", extra={"model": report.model,
                                                       "version": report.version})
    ctx.progress(STAGES, STAGES, f"{report.model}@{report.version} registered"
                 + (" and serving" if promoted else ""))
    return _summary(report, promoted)


if settings.diagnostics:
    from workers import diag

    diag.register(kit)
