"""The OCR worker's Celery app and its one task, `jobmesh.ocr.v1.recognize` (thin: fetch the
input, run the pure pipeline on the served models, record the result)."""

from __future__ import annotations

import base64
import json
import logging
import os

from celery import signals
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import Settings
from shared.errors import InvalidArgument, JobmeshError
from shared.jobs.celery_app import make_celery
from shared.jobs.worker_kit import JobCancelled, JobContext, WorkerKit
from shared.models.registry import ModelRegistry
from shared.models.serving import ServedModels
from shared.storage.artifacts import ArtifactRef, ArtifactStore
from workers.ocr.layout import text_of
from workers.ocr.longline import LongLineConfig
from workers.ocr.pipeline import (
    ImageDecodeError,
    OcrOptions,
    OcrPipeline,
    PipelineCancelled,
    decode_image,
)

log = logging.getLogger(__name__)

DET, REC, CLS = "ppocr-det", "ppocr-rec", "ppocr-cls"



class OcrSettings(BaseSettings):
    """OCR knobs (`JOBMESH_OCR_*`). Detection resizes so the image's smaller side is at least
    `det_limit_side_len` ("min") or its larger side at most that ("max"). rapidocr's default
    (736, min) blows a 60-px text line up to 736 px high: ~10x slower here, and big glyphs get
    split into words. PaddleOCR 3's PP-OCRv5 default (64, min) keeps lines at native size."""

    model_config = SettingsConfigDict(env_prefix="JOBMESH_OCR_", extra="ignore", frozen=True)

    det_limit_side_len: int = Field(default=64, ge=32, le=4096)
    det_limit_type: str = Field(default="min", pattern="^(min|max)$")
    rec_batch_size: int = Field(default=16, ge=1, le=256)
    # Long lines (workers/ocr/longline.py): tiles for detection, windows for recognition.
    tile_above: int = Field(default=4000, ge=512)
    tile_size: int = Field(default=2000, ge=256, le=8192)
    tile_overlap: int = Field(default=320, ge=32)
    window_above: int = Field(default=3200, ge=320)
    window_width: int = Field(default=1600, ge=160)
    window_overlap: int = Field(default=320, ge=16)

    def long_lines(self) -> LongLineConfig:
        if self.tile_overlap >= self.tile_size or 2 * self.window_overlap > self.window_width:
            raise ValueError("JOBMESH_OCR_*_OVERLAP must be below half the window and the tile")
        return LongLineConfig(self.tile_above, self.tile_size, self.tile_overlap,
                              self.window_above, self.window_width, self.window_overlap)


settings = Settings()
ocr_settings = OcrSettings()
_LONG_LINES = ocr_settings.long_lines()  # validated at import: a bad value stops the worker
app = make_celery("jobmesh-ocr-worker", settings)
kit = WorkerKit(app, "ocr", settings)
_models: ServedModels | None = None


def models() -> ServedModels:
    """Loaded once per process (after fork: ORT sessions must not cross a fork)."""
    global _models
    if _models is None:
        registry = ModelRegistry(ArtifactStore.from_settings(settings), settings.models_bucket)
        _models = ServedModels(registry, settings.model_cache_dir,
                               refresh_s=settings.model_refresh_s,
                               providers_override=settings.providers)
    return _models


@signals.worker_process_init.connect
def _warm_up(**_) -> None:
    """Load and exercise the models before the first job, so its latency is not a cold start."""
    try:
        import numpy as np

        m = models()
        pipe = _pipeline(m, classify=True)
        pipe.recognize_images([np.full((48, 160, 3), 255, np.uint8)], [OcrOptions()])
    except Exception as exc:  # the first job will report the real error
        log.warning("warm-up failed", extra={"error": str(exc), "pid": os.getpid()})


def _pipeline(m: ServedModels, classify: bool) -> OcrPipeline:
    return OcrPipeline(m.get(DET), m.get(REC), m.get(CLS) if classify else None,
                       det_limit_side_len=ocr_settings.det_limit_side_len,
                       det_limit_type=ocr_settings.det_limit_type,
                       long_lines=_LONG_LINES)


def _input_bytes(ctx: JobContext, request: dict) -> bytes:
    if "image_b64" in request:
        return base64.b64decode(request["image_b64"])
    if "image_ref" in request:
        ref = ArtifactRef.from_dict(request["image_ref"])
        return ctx.artifacts.get_bytes(ref, max_bytes=settings.max_upload_bytes)
    raise InvalidArgument.for_field("image", "is required (or image_ref)")


def _prepare(ctx: JobContext, request: dict) -> tuple[object, OcrOptions]:
    """(RGB image, options) for one request; raises InvalidArgument naming the field."""
    data = _input_bytes(ctx, request)
    field = "image_ref" if "image_ref" in request else "image"
    try:
        image = decode_image(data, settings.max_image_pixels)
    except ImageDecodeError as exc:
        raise InvalidArgument.for_field(field, str(exc), reason=exc.reason) from exc
    opts = request.get("options", {})
    return image, OcrOptions(min_confidence=float(opts.get("min_confidence", 0.5)),
                             classify_angle=bool(opts.get("classify_angle", False)),
                             rec_batch_size=ocr_settings.rec_batch_size,
                             long_lines=bool(opts.get("long_lines", True)))


def recognize_many(ctxs: list[JobContext], requests: list[dict]) -> list:
    """One result dict or error per request. Inputs that fail to load fail alone; the rest
    run as one pipeline call, so all their crops share recognizer batches."""
    outcomes: list = [None] * len(ctxs)
    ready: list[int] = []
    images, options = [], []
    for n, (ctx, request) in enumerate(zip(ctxs, requests, strict=True)):
        try:
            image, opts = _prepare(ctx, request)
        except JobmeshError as exc:
            outcomes[n] = exc
            continue
        ready.append(n)
        images.append(image)
        options.append(opts)
        ctx.progress(0, 1, "recognizing")
    if not ready:
        return outcomes
    m = models()
    pipe = _pipeline(m, any(o.classify_angle for o in options))
    live = [ctxs[n] for n in ready]
    try:
        results = pipe.recognize_images(
            images, options, should_stop=lambda: all(c.should_stop() for c in live))
    except PipelineCancelled as exc:
        raise JobCancelled() from exc
    for n, result in zip(ready, results, strict=True):
        out = result.to_dict()
        out["text"] = text_of(out["lines"])
        out["model_versions"] = m.versions()
        if requests[n].get("store_result"):
            ctxs[n].put_artifact("result.json", json.dumps(out).encode(), "application/json")
        ctxs[n].progress(1, 1, "done")
        outcomes[n] = out
    return outcomes


@kit.task("jobmesh.ocr.v1.recognize")
def recognize(ctx: JobContext, request: dict) -> dict:
    [outcome] = recognize_many([ctx], [request])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


# Sync requests coalesced by the gateway arrive here, several jobs per message.
kit.batch_task("jobmesh.ocr.v1.recognize_batch")(recognize_many)


if settings.diagnostics:
    from workers import diag

    diag.register(kit)
