"""Float16 conversion with ONNX Runtime's converter: half the weight bytes, meant for GPU
serving (tensor cores run fp16 natively; most CPU kernels do not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.compression.recipes.common import RecipeError, RecipeResult, load_model, workspace

FP16_MAX = 65504.0
FP16_MIN_POSITIVE = 5.96e-08  # smallest subnormal; ORT's converter clamps smaller magnitudes


def to_fp16(src: Path, dst_dir: Path, *, keep_io_types: bool = True) -> RecipeResult:
    """Converts float32 tensors (weights and computation) to float16, except the ops ORT's
    converter blocks by default. With keep_io_types the graph inputs and outputs stay float32
    (Casts at the edges), so callers keep feeding float32 arrays."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if not isinstance(keep_io_types, bool):
        raise RecipeError("recipe.keep_io_types", f"must be true or false, got {keep_io_types!r}")
    src = Path(src)
    model = load_model(src)
    with workspace(src, dst_dir) as ws:
        before, clamped = _float_bytes(model), _out_of_range(model)
        model = convert_float_to_float16(model, keep_io_types=keep_io_types,
                                         min_positive_val=FP16_MIN_POSITIVE,
                                         max_finite_val=FP16_MAX)
        after = _float_bytes(model)
        out = ws.path("fp16.onnx")
        onnx.save(model, str(out))
        notes = [f"Float initializers {_mb(before)} -> {_mb(after)}.",
                 "On CPU an fp16 model usually runs slower than fp32: ONNX Runtime's CPU "
                 "kernels mostly compute in float32, so it wraps fp16 nodes in Casts. The model "
                 "is meant for GPU serving."]
        if keep_io_types:
            notes.append("Inputs and outputs stay float32, so callers feed the same arrays.")
        if clamped:
            notes.append(f"{clamped} weight values lie outside float16's range "
                         f"(|w| > {FP16_MAX:g} or 0 < |w| < {FP16_MIN_POSITIVE:g}) and were "
                         "clamped.")
        params = {"keep_io_types": keep_io_types,
                  "float_initializer_bytes": {"before": before, "after": after},
                  "weights_clamped": clamped}
        return RecipeResult(ws.publish(out), params, notes)


def _float_bytes(model) -> int:
    """Bytes of the floating-point initializers, from their dims (no data decoded)."""
    from onnx import TensorProto

    width = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2,
             TensorProto.BFLOAT16: 2}
    return sum(int(np.prod(t.dims, dtype=np.int64)) * width[t.data_type]
               for t in model.graph.initializer if t.data_type in width)


def _out_of_range(model) -> int:
    from onnx import TensorProto, numpy_helper

    count = 0
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            magnitude = np.abs(numpy_helper.to_array(tensor))
            count += int(np.count_nonzero(magnitude > FP16_MAX))
            count += int(np.count_nonzero((magnitude > 0) & (magnitude < FP16_MIN_POSITIVE)))
    return count


def _mb(n: int) -> str:
    return f"{n / 1e6:.3g} MB"
