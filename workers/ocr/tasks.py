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

from services.ocr import convert as ocr_convert
from shared.config import Settings
from shared.errors import InvalidArgument, JobmeshError
from shared.jobs.celery_app import make_celery
from shared.jobs.worker_kit import JobCancelled, JobContext, WorkerKit
from shared.models.serving import ServedModels
from shared.storage.artifacts import ArtifactRef
from workers.ocr.documents import DocumentLimits, count_pages, iter_pages
from workers.ocr.longline import LongLineConfig
from workers.ocr.pipeline import (
    ImageDecodeError,
    OcrOptions,
    OcrPipeline,
    PipelineCancelled,
)
from workers.ocr.results import document_result, page_result, searchable_text

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
_DOC_LIMITS = DocumentLimits(settings.max_pages, settings.max_image_pixels, settings.pdf_dpi)
app = make_celery("jobmesh-ocr-worker", settings)
kit = WorkerKit(app, "ocr", settings)
_models: ServedModels | None = None


def models() -> ServedModels:
    """Loaded once per process (after fork: ORT sessions must not cross a fork)."""
    global _models
    if _models is None:
        _models = ServedModels.from_settings(settings)
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


def _options(request: dict) -> OcrOptions:
    opts = request.get("options", {})
    return OcrOptions(min_confidence=float(opts.get("min_confidence", 0.5)),
                      classify_angle=bool(opts.get("classify_angle", False)),
                      rec_batch_size=ocr_settings.rec_batch_size,
                      long_lines=bool(opts.get("long_lines", True)))


def _open(ctx: JobContext, request: dict) -> tuple[int, object]:
    """(page count, page iterator) for a request; raises InvalidArgument naming the field."""
    field = "image_ref" if "image_ref" in request else "image"
    try:
        data = _input_bytes(ctx, request)
        return count_pages(data), iter_pages(data, _DOC_LIMITS)
    except ImageDecodeError as exc:
        raise InvalidArgument.for_field(field, str(exc), reason=exc.reason) from exc


def _first_page(pages, field: str):
    try:
        return next(pages)
    except ImageDecodeError as exc:
        raise InvalidArgument.for_field(field, str(exc), reason=exc.reason) from exc


def recognize_many(ctxs: list[JobContext], requests: list[dict]) -> list:
    """One result dict or error per request. Inputs that fail to load fail alone. Single-page
    inputs run as one pipeline call, so all their crops share recognizer batches; documents
    then run page by page, reporting pages done / total as progress."""
    outcomes: list = [None] * len(ctxs)
    single: list[tuple[int, object, OcrOptions]] = []
    documents: list[tuple[int, int, object, OcrOptions]] = []
    for n, (ctx, request) in enumerate(zip(ctxs, requests, strict=True)):
        field = "image_ref" if "image_ref" in request else "image"
        try:
            count, pages = _open(ctx, request)
            if count == 1:
                single.append((n, _first_page(pages, field), _options(request)))
            else:
                documents.append((n, count, pages, _options(request)))
        except JobmeshError as exc:
            outcomes[n] = exc
            continue
        ctx.progress(0, count, "recognizing")
    m = models()
    if single:
        live = [ctxs[n] for n, _, _ in single]
        pipe = _pipeline(m, any(o.classify_angle for _, _, o in single))
        results = _run(pipe, [img for _, img, _ in single], [o for _, _, o in single],
                       lambda: all(c.should_stop() for c in live))
        for (n, _, _), result in zip(single, results, strict=True):
            outcomes[n] = _finish(ctxs[n], requests[n], [page_result(result, 1)], m)
    for n, count, pages, opts in documents:
        ctx, done = ctxs[n], []
        pipe = _pipeline(m, opts.classify_angle)
        try:
            for number, page in enumerate(pages, start=1):
                [result] = _run(pipe, [page], [opts], ctx.should_stop)
                done.append(page_result(result, number))
                ctx.progress(number, count, f"page {number} of {count}")
        except ImageDecodeError as exc:
            field = "image_ref" if "image_ref" in requests[n] else "image"
            outcomes[n] = InvalidArgument.for_field(field, str(exc), reason=exc.reason)
            continue
        except JobCancelled as exc:
            outcomes[n] = exc
            continue
        outcomes[n] = _finish(ctx, requests[n], done, m)
    return outcomes


def _run(pipe: OcrPipeline, images, options, should_stop):
    try:
        return pipe.recognize_images(images, options, should_stop=should_stop)
    except PipelineCancelled as exc:
        raise JobCancelled() from exc


def _finish(ctx: JobContext, request: dict, pages: list[dict], m: ServedModels) -> dict:
    out = document_result(pages, m.versions())
    if request.get("store_result"):
        ctx.put_artifact("result.json", json.dumps(out).encode(), "application/json")
        ctx.put_artifact("searchable.json", searchable_text(out), "application/json")
        ctx.put_artifact("text.txt", out["text"].encode(), "text/plain; charset=utf-8")
    ctx.progress(len(pages), len(pages), "done")
    return out


@kit.task("jobmesh.ocr.v1.recognize")
def recognize(ctx: JobContext, request: dict) -> dict:
    [outcome] = recognize_many([ctx], [request])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


# Sync requests coalesced by the gateway arrive here, several jobs per message; batch jobs'
# chunks run their lines with it too (their output lines are RecognizeResponse as proto-JSON).
kit.batch_task("jobmesh.ocr.v1.recognize_batch",
               response=ocr_convert.response_from_result)(recognize_many)


if settings.diagnostics:
    from workers import diag

    diag.register(kit)
