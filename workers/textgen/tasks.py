"""The text generation worker's Celery app and tasks (thin: resolve the served model, decode with
the engine in `decoding.py`, record results, stream deltas into the job's event stream)."""

from __future__ import annotations

import json
import logging
import os
import time

from celery import signals
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.textgen import convert as textgen_convert
from shared.config import Settings
from shared.errors import InvalidArgument, JobmeshError
from shared.jobs.celery_app import make_celery
from shared.jobs.worker_kit import JobCancelled, JobContext, WorkerKit
from shared.models.serving import ServedModels
from workers.textgen.decoding import GenerationParams, GenerationResult, Generator
from workers.textgen.export import MODEL_NAME
from workers.textgen.tokenizer import InvalidGenerationParam, TextTokenizer

log = logging.getLogger(__name__)



class TextgenSettings(BaseSettings):
    """`JOBMESH_TEXTGEN_*`: the text generation worker's own knobs."""

    model_config = SettingsConfigDict(env_prefix="JOBMESH_TEXTGEN_", extra="ignore",
                                      frozen=True)

    # Draft tree nodes per verification step. 0: measure the forward cost curve on this device
    # when a worker process starts (~3 s) and size the tree from it (speculation.size_tree).
    tree_nodes: int = Field(default=0, ge=0, le=256)


settings = Settings()
textgen_settings = TextgenSettings()
app = make_celery("jobmesh-textgen-worker", settings)
kit = WorkerKit(app, "textgen", settings)
_models: ServedModels | None = None
_engine: tuple[object, Generator] | None = None

# Engine field names → request field paths, so INVALID_ARGUMENT names what the client sent.
_FIELDS = {"max_new_tokens": "parameters.max_new_tokens", "temperature": "parameters.temperature",
           "top_p": "parameters.top_p", "top_k": "parameters.top_k", "seed": "parameters.seed",
           "stop": "parameters.stop", "speculation": "parameters.speculation"}


def engine() -> Generator:
    """The Generator for the version `smollm2-135m-instruct` serves now (one per process;
    rebuilt when the serving pointer moves)."""
    global _models, _engine
    if _models is None:
        _models = ServedModels.from_settings(settings)
    runner = _models.get(MODEL_NAME)
    if _engine is None or _engine[0] is not runner:
        folder = runner.path.parent
        config = json.loads((folder / "generation.json").read_text())
        tokenizer = TextTokenizer(folder / "tokenizer.json", config)
        _engine = (runner, Generator(runner, tokenizer, config,
                                     tree_nodes=textgen_settings.tree_nodes or None))
    return _engine[1]


def model_version() -> str:
    return _models.versions()[0] if _models and _models.versions() else MODEL_NAME


@signals.worker_process_init.connect
def _warm_up(**_) -> None:
    try:
        gen = engine()
        gen.generate(gen.tokenizer.encode("Hello"), GenerationParams(max_new_tokens=2,
                                                                     speculation="off"))
        if not textgen_settings.tree_nodes:
            curve = gen.calibrate(repeats=3)
            log.info("draft tree sized on this device", extra={
                "tree_nodes": gen.tree_nodes, "pid": os.getpid(),
                "cost_curve": {n: round(t / curve[1], 2) for n, t in curve.items()}})
    except Exception as exc:  # the first job reports the real error
        log.warning("warm-up failed", extra={"error": str(exc), "pid": os.getpid()})


def _invalid(exc: InvalidGenerationParam, prefix: str = "") -> InvalidArgument:
    field = exc.field if exc.field.startswith(("prompt", "conversation")) else \
        _FIELDS.get(exc.field, exc.field)
    return InvalidArgument.for_field(f"{prefix}{field}", exc.problem)


def _prompt_ids(gen: Generator, request: dict, prefix: str = "") -> list[int]:
    try:
        if "messages" in request:
            return gen.tokenizer.encode_messages(request["messages"])
        return gen.tokenizer.encode(request["prompt"])
    except InvalidGenerationParam as exc:
        raise _invalid(exc, prefix) from exc
    except (KeyError, TypeError) as exc:
        raise InvalidArgument.for_field(f"{prefix}prompt", "is required") from exc


def _params(request: dict) -> GenerationParams:
    p = request.get("params", {})
    return GenerationParams(max_new_tokens=int(p.get("max_new_tokens", 128)),
                            temperature=float(p.get("temperature", 0.0)),
                            top_p=float(p.get("top_p", 1.0)), top_k=int(p.get("top_k", 0)),
                            seed=p.get("seed"), stop=list(p.get("stop", [])),
                            speculation=p.get("speculation", "auto"))


def _deadline(request: dict) -> float | None:
    """The client's deadline (epoch seconds from the gateway) on this process's monotonic
    clock."""
    at = request.get("deadline")
    return None if at is None else time.monotonic() + (float(at) - time.time())


def _result(r: GenerationResult) -> dict:
    completion = r.usage.completion_tokens
    return {"text": r.text, "token_ids": r.token_ids, "finish_reason": r.finish_reason,
            "usage": vars(r.usage), "seconds": r.seconds,
            "first_token_seconds": r.first_token_seconds,
            "tokens_per_second": completion / r.seconds if r.seconds > 0 else 0.0,
            "model_version": model_version()}


def _checked(gen: Generator, request: dict, prefix: str = "") -> tuple[list[int], object]:
    ids, params = _prompt_ids(gen, request, prefix), _params(request)
    try:
        gen.check(ids, params)
    except InvalidGenerationParam as exc:
        raise _invalid(exc, prefix) from exc
    return ids, params


@kit.task("jobmesh.textgen.v1.generate")
def generate(ctx: JobContext, request: dict) -> dict:
    gen = engine()
    ids, params = _checked(gen, request)
    store = ctx.store

    def on_delta(text: str, token_ids: list[int]) -> None:
        store.publish_delta(ctx.job.id, text, token_ids)

    r = gen.generate(ids, params, on_delta=on_delta if request.get("stream") else None,
                     should_stop=ctx.should_stop, deadline=_deadline(request))
    if r.finish_reason == "cancelled" and ctx.should_stop():
        raise JobCancelled()
    return _result(r)


@kit.batch_task("jobmesh.textgen.v1.generate_batch",
                response=textgen_convert.response_from_result)
def generate_batch(ctxs: list[JobContext], requests: list[dict]) -> list:
    """Coalesced sync requests. One request decodes alone (with speculation); several decode
    in one batched forward per step (speculation off inside a batch: it is per-row work that a
    batch cannot share). A request with bad parameters fails alone."""
    gen = engine()
    outcomes: list = [None] * len(ctxs)
    ready: list[tuple[int, list[int], GenerationParams]] = []
    for n, request in enumerate(requests):
        try:
            ready.append((n, *_checked(gen, request)))
        except JobmeshError as exc:
            outcomes[n] = exc
    if len(ready) == 1:
        n, ids, params = ready[0]
        r = gen.generate(ids, params, should_stop=ctxs[n].should_stop,
                         deadline=_deadline(requests[n]))
        outcomes[n] = _result(r)
    elif ready:
        live = [ctxs[n] for n, _, _ in ready]
        deadlines = [d for d in (_deadline(requests[n]) for n, _, _ in ready) if d is not None]
        results = gen.generate_batch([ids for _, ids, _ in ready], [p for _, _, p in ready],
                                     should_stop=lambda: all(c.should_stop() for c in live),
                                     deadline=max(deadlines) if deadlines else None)
        for (n, _, _), r in zip(ready, results, strict=True):
            outcomes[n] = _result(r)
    return outcomes


@kit.task("jobmesh.textgen.v1.generate_many")
def generate_many(ctx: JobContext, request: dict) -> dict:
    """A SubmitGenerate job: items one after another (each with speculation), progress per
    item, every item's result or error as a line of `results.jsonl`."""
    gen = engine()
    items = request.get("items", [])
    lines, failed = [], 0
    for k, item in enumerate(items):
        ctx.check_cancelled()
        entry = {"custom_id": item.get("custom_id", str(k))}
        try:
            ids, params = _checked(gen, item, f"items[{k}].")
            r = gen.generate(ids, params, should_stop=ctx.should_stop)
            if r.finish_reason == "cancelled" and ctx.should_stop():
                raise JobCancelled()
            entry["response"] = _result(r)
        except JobmeshError as exc:
            entry["error"] = {"code": exc.code.name, "reason": exc.reason,
                              "message": exc.message}
            failed += 1
        lines.append(json.dumps(entry, ensure_ascii=False))
        ctx.progress(k + 1, len(items), f"item {k + 1} of {len(items)}")
    ctx.put_artifact("results.jsonl", ("\n".join(lines) + "\n").encode(),
                     "application/jsonl")
    return {"items": len(items), "failed": failed, "model_version": model_version()}


if settings.diagnostics:
    from workers import diag

    diag.register(kit)
