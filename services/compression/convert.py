"""CompressionService messages ⇄ the JSON the compression worker takes and returns; the only
compression code that touches `*_pb2`. Validation errors name proto fields."""

from __future__ import annotations

import hashlib
import json
import math
import re

from jobmesh.compression.v1 import compression_service_pb2 as pb

from shared.errors import InvalidArgument
from shared.models.registry import check_name

COMPRESS_TASK = "jobmesh.compression.v1.compress"

# ONNX op types a quantization recipe may name (those ORT's quantizer handles on these models).
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "LSTM", "GRU", "Attention")
MAX_SAMPLES, MAX_CALIBRATION = 2048, 512
RECIPES = {
    "int8_dynamic": "INT8 weights, activations quantized at run time; op types chosen by "
                    "measured latency unless listed",
    "int8_static": "INT8 weights and activations (QDQ) with scales from calibration data",
    "fp16": "float16 weights and compute, float32 inputs/outputs (for GPU serving)",
    "sparse_2_4": "2:4 semi-structured pruning of MatMul weights (magnitude or Wanda)",
    "tensorrt": "TensorRT engine through ONNX Runtime's TensorRT execution provider (GPU)",
    "compeft": "ComPEFT for LoRA adapters: top-k by magnitude, signs and one scale per tensor, "
               "alpha tuned on validation text",
}
ADAPTER_RECIPES = ("compeft",)  # the recipes for `peft-lora` entries; the others need ONNX
MAX_ALPHAS, MAX_VALIDATION_CHARS = 16, 1 << 20
_CALIBRATIONS = {pb.Int8Static.CALIBRATION_UNSPECIFIED: "percentile",
                 pb.Int8Static.CALIBRATION_PERCENTILE: "percentile",
                 pb.Int8Static.CALIBRATION_MINMAX: "minmax",
                 pb.Int8Static.CALIBRATION_ENTROPY: "entropy"}
_METHODS = {pb.Sparse24.METHOD_UNSPECIFIED: "wanda", pb.Sparse24.METHOD_WANDA: "wanda",
            pb.Sparse24.METHOD_MAGNITUDE: "magnitude"}


def _op_types(values, field: str) -> list[str]:
    out = []
    for n, op in enumerate(values):
        if op not in QUANTIZABLE_OPS:
            raise InvalidArgument.for_field(f"{field}[{n}]",
                                            f"{op!r} must be one of {', '.join(QUANTIZABLE_OPS)}")
        if op not in out:
            out.append(op)
    return out


def recipe_to_dict(r: pb.Recipe) -> dict:
    kind = r.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument.for_field("recipe", f"set one of {', '.join(RECIPES)}")
    if kind == "int8_dynamic":
        return {"name": kind, "op_types": _op_types(r.int8_dynamic.op_types,
                                                    "recipe.int8_dynamic.op_types")}
    if kind == "int8_static":
        if r.int8_static.calibration not in _CALIBRATIONS:
            raise InvalidArgument.for_field("recipe.int8_static.calibration",
                                            "is not a known calibration method")
        return {"name": kind, "op_types": _op_types(r.int8_static.op_types,
                                                    "recipe.int8_static.op_types"),
                "per_channel": not r.int8_static.per_tensor,
                "calibration": _CALIBRATIONS[r.int8_static.calibration]}
    if kind == "fp16":
        return {"name": kind}
    if kind == "sparse_2_4":
        include = r.sparse_2_4.include
        if len(include) > 200:
            raise InvalidArgument.for_field("recipe.sparse_2_4.include", "is over 200 chars")
        try:
            re.compile(include)
        except re.error as exc:
            raise InvalidArgument.for_field("recipe.sparse_2_4.include",
                                            f"is not a valid regex: {exc}") from exc
        if r.sparse_2_4.method not in _METHODS:
            raise InvalidArgument.for_field("recipe.sparse_2_4.method", "is not a known method")
        return {"name": kind, "method": _METHODS[r.sparse_2_4.method], "include": include}
    if kind == "compeft":
        return _compeft(r.compeft)
    return {"name": "tensorrt", "fp16": r.tensorrt.fp16}


def _compeft(c: pb.ComPEFT) -> dict:
    """The recipe without its inline texts (they travel beside it, `validation_texts`); their
    sha256 stands in, so the derived version still changes with them."""
    field = "recipe.compeft"
    density = c.density or 0.3
    if not (math.isfinite(density) and 0 < density <= 1):
        raise InvalidArgument.for_field(f"{field}.density", "must be in (0, 1] (0 = 0.3)")
    if len(c.alphas) > MAX_ALPHAS:
        raise InvalidArgument.for_field(f"{field}.alphas", f"at most {MAX_ALPHAS} values")
    for n, alpha in enumerate(c.alphas):
        if not (math.isfinite(alpha) and 0 < alpha <= 1e4):
            raise InvalidArgument.for_field(f"{field}.alphas[{n}]", "must be in (0, 10000]")
    if sum(len(t) for t in c.validation_texts) > MAX_VALIDATION_CHARS:
        raise InvalidArgument.for_field(f"{field}.validation_texts",
                                        f"over {MAX_VALIDATION_CHARS} characters in all")
    ref = c.validation_ref
    if c.validation_texts and (ref.bucket or ref.key):
        raise InvalidArgument.for_field(f"{field}.validation_ref",
                                        "set validation_texts or validation_ref, not both")
    if (ref.bucket or ref.key) and not (ref.bucket and ref.key):
        raise InvalidArgument.for_field(f"{field}.validation_ref", "needs bucket and key")
    out = {"name": "compeft", "density": density, "alphas": list(c.alphas),
           "task_vector": c.task_vector}
    if c.validation_texts:
        out["validation_sha256"] = hashlib.sha256(
            json.dumps(list(c.validation_texts)).encode()).hexdigest()
    if ref.key:
        out["validation_ref"] = {"bucket": ref.bucket, "key": ref.key, "sha256": ref.sha256}
    return out


def _bounded(value: int, limit: int, field: str) -> int:
    if not 0 <= value <= limit:
        raise InvalidArgument.for_field(field, f"must be within 0..{limit} (0 = default)")
    return value


def derived_version(parent: str, recipe: dict) -> str:
    """`<parent>-<recipe>-<8 hex of the recipe's JSON>`: the same recipe on the same parent
    names the same version, so a repeated job lands on the version it made before."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    return f"{parent}-{recipe['name'].replace('_', '')}-{digest}"[:100]


def submit_request(request: pb.SubmitCompressRequest) -> dict:
    model = check_name("model", request.model)
    if request.version:
        check_name("version", request.version)
    if request.target_version:
        check_name("target_version", request.target_version)
    if len(request.request_id) > 128:
        raise InvalidArgument.for_field("request_id", "is longer than 128 characters")
    recipe = recipe_to_dict(request.recipe)
    promo = request.promotion
    for field in ("max_metric_delta", "max_latency_ratio"):
        value = getattr(promo, field)
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument.for_field(f"promotion.{field}", "must be a finite value ≥ 0")
    return {
        "model": model, "version": request.version, "recipe": recipe,
        "target_version": request.target_version,
        "validation_texts": list(request.recipe.compeft.validation_texts),
        "eval": {"samples": _bounded(request.eval.samples, MAX_SAMPLES, "eval.samples"),
                 "calibration_samples": _bounded(request.eval.calibration_samples,
                                                 MAX_CALIBRATION, "eval.calibration_samples")},
        "promotion": {"promote": promo.promote, "max_metric_delta": promo.max_metric_delta,
                      "max_latency_ratio": promo.max_latency_ratio or 1.0},
    }


def result_from_dict(result: dict) -> pb.CompressResult:
    fields = {f.name for f in pb.CompressResult.DESCRIPTOR.fields}
    return pb.CompressResult(**{k: v for k, v in result.items() if k in fields})
