"""CurationService messages ⇄ the JSON the curation worker takes and returns; the only curation
code that touches `*_pb2`. Validation errors name proto fields."""

from __future__ import annotations

import json
import re

from google.protobuf import json_format
from jobmesh.curation.v1 import curation_service_pb2 as pb

from shared.errors import InvalidArgument
from shared.jobs.convert import artifact_pb

CURATE_TASK = "jobmesh.curation.v1.curate"
SHARD_TASK = "jobmesh.curation.v1.shard"
SCORE_TASK = "jobmesh.curation.v1.score"
FINETUNE_TASK = "jobmesh.curation.v1.finetune"

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
MAX_SHARDS = 10_000
MAX_STEPS = 32
MAX_SCORE_TEXTS, MAX_SCORE_CHARS = 64, 100_000
# Fine-tuning: inline texts travel in the task message, so they stay small; bigger samples go
# as a shard. The token cap keeps one job inside the default task time limit (300 s) on quiet
# cores: training ran at ~150 tokens/s (a step of 4 x 128 tokens in ~3.5 s, 2 cores), so 16,384
# tokens take ~2 min, plus ~30 s loading the model and the export (docs/curation.md).
MAX_TARGET_TEXTS, MAX_TARGET_CHARS = 2_000, 1_000_000
MAX_FINETUNE_TOKENS = 16_384
REFERENCE_LM = "smollm2-135m-instruct"  # workers.textgen.export.MODEL_NAME
# Step parameters naming a registry model ("name" or "name@version"); unset = REFERENCE_LM.
MODEL_PARAMS = {"color_filter": ("prior_model", "conditional_model")}
EMBEDDING_MODEL = "all-minilm-l6-v2"  # workers.curation.embeddings.MODEL_NAME
# Steps that always run one registry model (its serving version), checked like MODEL_PARAMS.
STEP_MODELS = {"embed_dedup": EMBEDDING_MODEL, "domain_cluster": EMBEDDING_MODEL}
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,100}$")  # the registry's rule
# A path under the caller's data space: plain segments, no `..`, no empty parts.
_PATH = re.compile(r"^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def data_prefix(tenant: str) -> str:
    return f"tenants/{tenant}/data/"


def check_path(value: str, field: str, *, folder: bool) -> str:
    """A data-space path; folders are returned with a trailing `/`."""
    path = value.strip("/") if folder else value
    if not path or len(path) > 512 or not _PATH.match(path) or \
            any(p in (".", "..") for p in path.split("/")):
        raise InvalidArgument.for_field(field, f"{value!r} must be a relative path of plain "
                                        "names (letters, digits, . _ = -) without '..'")
    return path + "/" if folder else path


def _integral(value):
    """Struct numbers are floats: 50.0 → 50, so integer parameters validate strictly."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def pipeline_to_list(steps) -> list[dict]:
    if not steps:
        raise InvalidArgument.for_field("pipeline", "needs at least one step")
    if len(steps) > MAX_STEPS:
        raise InvalidArgument.for_field("pipeline", f"has more than {MAX_STEPS} steps")
    out = []
    for n, s in enumerate(steps):
        try:
            params = json_format.MessageToDict(s.params) if s.HasField("params") else {}
        except ValueError as exc:  # NaN or ±inf: a Struct holds them, JSON does not (fuzz)
            raise InvalidArgument.for_field(f"pipeline[{n}].params",
                                            f"is not JSON: {exc}") from exc
        if "step" in params:
            raise InvalidArgument.for_field(f"pipeline[{n}].params.step",
                                            "the step name goes in `step`, not in params")
        out.append({"step": s.step, **{k: _integral(v) for k, v in params.items()}})
    return out


def check_pipeline(pipeline: list[dict]) -> None:
    """The worker's own schema check, run at the gateway so a bad pipeline never queues."""
    from workers.curation.steps import PipelineError, parse_pipeline

    try:
        parse_pipeline(pipeline)
    except PipelineError as exc:
        raise InvalidArgument(str(exc), field_violations=exc.violations) from exc


def fields(request: pb.SubmitCurateRequest) -> tuple[str, str]:
    text, ident = request.text_field or "text", request.id_field or "id"
    for name, value in (("text_field", text), ("id_field", ident)):
        if not _FIELD.match(value):
            raise InvalidArgument.for_field(name, f"{value!r} is not a field name")
    return text, ident


def shard_name(key: str, base: str) -> str:
    return key[len(base):] if key.startswith(base) else key.rsplit("/", 1)[-1]


def summary_pb(result: dict) -> pb.CurationSummary:
    steps = [pb.StepStats(step=s["step"], documents_in=s["documents_in"], kept=s["kept"],
                          removed=s["removed"], reasons=_collapsed(s["reasons"]))
             for s in result.get("steps", [])]
    return pb.CurationSummary(
        shards=result.get("shards", 0), shards_resumed=result.get("shards_resumed", 0),
        documents_in=result.get("documents_in", 0),
        documents_kept=result.get("documents_kept", 0),
        documents_removed=result.get("documents_removed", 0), steps=steps,
        output_prefix=result.get("output_prefix", ""),
        outputs=[artifact_pb(o) for o in result.get("outputs", [])],
        seconds=result.get("seconds", 0.0))


def _collapsed(reasons: dict) -> dict[str, int]:
    """`exact_dedup:duplicate_of:<id>` per document would be one entry each: count them as
    `exact_dedup:duplicate`."""
    out: dict[str, int] = {}
    for reason, count in reasons.items():
        key = reason.split(":duplicate_of:")[0]
        out[key] = out.get(key, 0) + int(count)
    return out


def score_request(request: pb.ScoreTextsRequest) -> dict:
    if not request.texts:
        raise InvalidArgument.for_field("texts", "needs at least one text")
    if len(request.texts) > MAX_SCORE_TEXTS:
        raise InvalidArgument.for_field("texts", f"at most {MAX_SCORE_TEXTS} texts")
    for n, t in enumerate(request.texts):
        if len(t) > MAX_SCORE_CHARS:
            raise InvalidArgument.for_field(f"texts[{n}]", f"is over {MAX_SCORE_CHARS} "
                                            "characters", reason="INPUT_TOO_LARGE")
    return {"texts": list(request.texts)}


def scores_pb(result: dict) -> pb.ScoreTextsResponse:
    return pb.ScoreTextsResponse(scores=[pb.TextScores(**s) for s in result["scores"]])


def _bounded(value: int, default: int, low: int, high: int, field: str) -> int:
    value = value or default
    if not low <= value <= high:
        raise InvalidArgument.for_field(field, f"must be within {low}..{high}")
    return value


def finetune_request(request: pb.SubmitFineTuneRequest) -> dict:
    """The worker's request, `target` left for the servicer to check against the caller."""
    if not _MODEL_NAME.match(request.model_name):
        raise InvalidArgument.for_field("model_name", f"{request.model_name!r} must match "
                                        f"{_MODEL_NAME.pattern}")
    if request.model_name == REFERENCE_LM:
        raise InvalidArgument.for_field("model_name", "is the reference LM's own name; name "
                                        "the conditional model after its target domain")
    if bool(request.target_texts) == request.HasField("target"):
        raise InvalidArgument.for_field("target", "set target or target_texts (one of them)")
    if len(request.target_texts) > MAX_TARGET_TEXTS:
        raise InvalidArgument.for_field("target_texts", f"at most {MAX_TARGET_TEXTS} texts")
    if sum(len(t) for t in request.target_texts) > MAX_TARGET_CHARS:
        raise InvalidArgument.for_field("target_texts", f"over {MAX_TARGET_CHARS} characters "
                                        "in all: upload them as a shard (target)",
                                        reason="INPUT_TOO_LARGE")
    text_field = request.text_field or "text"
    if not _FIELD.match(text_field):
        raise InvalidArgument.for_field("text_field", f"{text_field!r} is not a field name")
    lr = request.learning_rate or 1e-3
    if not 0 < lr < 1:
        raise InvalidArgument.for_field("learning_rate", "must be within (0, 1)")
    lora = {"rank": _bounded(request.lora_rank, 8, 1, 64, "lora_rank"),
            "steps": _bounded(request.steps, 30, 1, 1000, "steps"),
            "seq_len": _bounded(request.seq_len, 128, 16, 1024, "seq_len"),
            "batch": _bounded(request.batch, 4, 1, 32, "batch"), "lr": lr}
    tokens = lora["steps"] * lora["batch"] * lora["seq_len"]
    if tokens > MAX_FINETUNE_TOKENS:
        raise InvalidArgument.for_field("steps", f"steps x batch x seq_len = {tokens} tokens; "
                                        f"at most {MAX_FINETUNE_TOKENS} fit in one task")
    return {"model_name": request.model_name, "texts": list(request.target_texts),
            "text_field": text_field, "lora": lora, "serve": request.serve}


def finetune_result_pb(result: dict) -> pb.FineTuneResult:
    return pb.FineTuneResult(**result)


def steps_pb() -> pb.ListStepsResponse:
    from workers.curation.steps import STEP_TYPES

    return pb.ListStepsResponse(steps=[
        pb.StepInfo(step=name, kind=cls.kind, description=(cls.__doc__ or "").strip(),
                    params_schema=json.dumps(cls.model_json_schema(), sort_keys=True))
        for name, cls in STEP_TYPES.items()])
