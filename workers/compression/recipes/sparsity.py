"""2:4 semi-structured sparsity: in every group of 4 consecutive weights along a matrix's
input-feature (reduction) dimension, 2 are zeroed, separately for each output column. That is
the pattern sparse tensor cores (NVIDIA Ampere and later) run at up to twice the dense rate.

Prunable matrices are rank-2 float initializers used as the weight of a MatMul (X @ W, W is
[in, out], groups along axis 0) or of a Gemm (with transB, W is [out, in], groups along axis 1),
with `in` divisible by 4, whose node or weight name matches the `include` regex. Subgraphs
(If/Loop bodies) are not searched. A weight read by several nodes (tied weights) is pruned
once, scored over all of its readers.

Scores decide which 2 of 4 go: "magnitude" is |W|; "wanda" is |W_ij| * ||X_j||_2 (Sun et al.
2023, "A Simple and Effective Pruning Approach for Large Language Models"), where ||X_j|| is
the L2 norm of input feature j of the matrix's activation over every row of every calibration
feed, so a small weight on a loud feature survives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.compression.recipes.common import (
    Calibration,
    RecipeError,
    RecipeResult,
    Workspace,
    check_feeds,
    load_model,
    model_facts,
    workspace,
)

METHODS = ("magnitude", "wanda")


@dataclass
class _Reader:
    """One node reading a prunable weight: its activation input and where the features lie."""

    activation: str
    features_first: bool  # Gemm with transA: the activation is [in, rows], not [rows, in]


@dataclass
class _Matrix:
    weight: str
    axis: int  # the weight's reduction (input-feature) axis: 0 for [in, out], 1 for [out, in]
    readers: list[_Reader] = field(default_factory=list)


def sparsify_2_4(src: Path, dst_dir: Path, *, method: str = "magnitude", include: str = r".*",
                 calibration: Calibration | None = None) -> RecipeResult:
    """Zeros 2 of every 4 weights (see the module docstring) of every prunable matrix matching
    `include`; "wanda" needs `calibration` feeds. params report the matrices pruned and the
    fraction of weights now zero."""
    if method not in METHODS:
        raise RecipeError("recipe.method", f"unknown method {method!r}; use one of {METHODS}")
    pattern = _compile(include)
    if method == "wanda" and not calibration:
        raise RecipeError("eval.calibration_samples", "wanda scores weights by activation "
                                                      "norms; it needs calibration feeds")
    src = Path(src)
    model = load_model(src)
    if method == "wanda":
        check_feeds(calibration, model_facts(model), "eval.calibration_samples")
    matrices, notes = _prunable(model, pattern)
    if not matrices:
        raise RecipeError("recipe.include", f"no prunable MatMul/Gemm weight matches {include!r} "
                                            "(rank-2 float initializer, input dimension "
                                            "divisible by 4)")
    import onnx
    from onnx import numpy_helper

    with workspace(src, dst_dir) as ws:
        norms = _feature_norms(model, matrices, calibration, ws) if method == "wanda" else {}
        initializers = {t.name: t for t in model.graph.initializer}
        pruned_size = pruned_zero = 0
        for matrix in matrices:
            tensor = initializers[matrix.weight]
            weights = numpy_helper.to_array(tensor)
            scores = np.abs(weights.astype(np.float32))
            if method == "wanda":
                norm = norms[matrix.weight]
                scores *= norm[:, None] if matrix.axis == 0 else norm[None, :]
            drop = _two_smallest_of_four(scores, matrix.axis)
            del scores
            weights = np.where(drop, np.zeros((), weights.dtype), weights)
            tensor.CopyFrom(numpy_helper.from_array(weights, matrix.weight))
            pruned_size += weights.size
            pruned_zero += int(weights.size - np.count_nonzero(weights))
        out = ws.path("sparse.onnx")
        onnx.save(model, str(out))
        total = _float_weight_count(model)
        notes += [
            f"{len(matrices)} {'matrix' if len(matrices) == 1 else 'matrices'} pruned 2:4 by "
            f"{method}: {pruned_zero} of {pruned_size} "
            f"of their weights are now zero ({pruned_zero / total:.1%} of all float weights).",
            "Dense CPU kernels get no speedup from 2:4 zeros; the saving needs sparse "
            "tensor-core kernels on a GPU. The file does not shrink either, unless the weights "
            "are stored in a sparse format.",
        ]
        params = {"method": method, "include": include, "pattern": "2:4",
                  "matrices": len(matrices), "weights_in_pruned_matrices": pruned_size,
                  "zero_fraction_pruned_matrices": round(pruned_zero / pruned_size, 6),
                  "zero_fraction_all_weights": round(pruned_zero / total, 6)}
        if method == "wanda":
            params["calibration_samples"] = len(calibration)
        return RecipeResult(ws.publish(out), params, notes)


def check_2_4(model: Path, include: str) -> dict:
    """Verifies the 2:4 pattern on the prunable matrices matching `include`:
    {"matrices": n, "groups": g, "violations": v}, a violation being a group of 4 with more
    than 2 non-zero weights."""
    from onnx import numpy_helper

    pattern = _compile(include)
    proto = load_model(Path(model))
    matrices, _ = _prunable(proto, pattern)
    initializers = {t.name: t for t in proto.graph.initializer}
    groups = violations = 0
    for matrix in matrices:
        grouped, axis = _grouped(numpy_helper.to_array(initializers[matrix.weight]), matrix.axis)
        nonzero = np.count_nonzero(grouped, axis=axis)
        groups += nonzero.size
        violations += int(np.count_nonzero(nonzero > 2))
    return {"matrices": len(matrices), "groups": groups, "violations": violations}


def _compile(include: str) -> re.Pattern:
    try:
        return re.compile(include)
    except (re.error, TypeError) as exc:
        raise RecipeError("recipe.include", f"not a valid regular expression: {exc}") from exc


def _prunable(model, pattern: re.Pattern) -> tuple[list[_Matrix], list[str]]:
    """The prunable matrices matching `pattern`, in graph order, and notes on near misses."""
    from onnx import TensorProto, helper

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE}
    initializers = {t.name: t for t in model.graph.initializer}
    found: dict[str, _Matrix] = {}
    matched: set[str] = set()
    conflicting: set[str] = set()
    indivisible: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2:
            axis, features_first = 0, False
        elif node.op_type == "Gemm" and len(node.input) >= 2:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axis, features_first = (1 if attrs.get("transB", 0) else 0), bool(attrs.get("transA"))
        else:
            continue
        activation, weight = node.input[0], node.input[1]
        tensor = initializers.get(weight)
        if tensor is None or tensor.data_type not in floats or len(tensor.dims) != 2:
            continue
        if tensor.dims[axis] % 4:
            indivisible.add(weight)
            continue
        matrix = found.setdefault(weight, _Matrix(weight, axis))
        if matrix.axis != axis:
            conflicting.add(weight)
        matrix.readers.append(_Reader(activation, features_first))
        if pattern.search(node.name) or pattern.search(weight):
            matched.add(weight)
    notes = []
    if conflicting & matched:
        notes.append(f"Skipped {len(conflicting & matched)} tied weights read as [in, out] by "
                     f"one node and [out, in] by another: {sorted(conflicting & matched)[:5]}.")
    if indivisible:
        notes.append(f"Skipped {len(indivisible)} weights whose input dimension is not "
                     f"divisible by 4: {sorted(indivisible)[:5]}.")
    tied = [m for m in found.values() if m.weight in matched and len(m.readers) > 1]
    if tied:
        notes.append(f"{len(tied)} tied weights (read by several nodes) pruned once each, "
                     "scored over all their readers.")
    return [m for m in found.values() if m.weight in matched - conflicting], notes


def _grouped(values: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """A view of a 2-D weight with its reduction axis split into (groups, 4); returns it and
    the axis of the 4."""
    rows, cols = values.shape
    if axis == 0:
        return values.reshape(rows // 4, 4, cols), 1
    return values.reshape(rows, cols // 4, 4), 2


def _two_smallest_of_four(scores: np.ndarray, axis: int) -> np.ndarray:
    """Mask (shaped like `scores`) of the 2 lowest scores in each group of 4 along `axis`.
    Ranks by pairwise comparison (ties go to the lower index) instead of argsort, whose int64
    indices would take 8 bytes per weight on large matrices."""
    grouped, gaxis = _grouped(scores, axis)
    lanes = [np.take(grouped, i, axis=gaxis) for i in range(4)]
    ranks = []
    for i in range(4):
        rank = np.zeros(lanes[i].shape, dtype=np.int8)
        for j in range(4):
            if j != i:
                rank += (lanes[j] < lanes[i]) | ((lanes[j] == lanes[i]) & (j < i))
        ranks.append(rank)
    return (np.stack(ranks, axis=gaxis) < 2).reshape(scores.shape)


def _feature_norms(model, matrices: list[_Matrix], calibration: Calibration,
                   ws: Workspace) -> dict[str, np.ndarray]:
    """||X_j||_2 per input feature of each matrix's activations (summed over its readers), from
    running the model over `calibration`. Intermediate activations are fetched by saving a
    copy of the model, with them added as graph outputs, into the workspace."""
    import onnx
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    graph_inputs = {v.name for v in model.graph.input} - set(initializers)
    wanted = {(r.activation, r.features_first) for m in matrices for r in m.readers}
    fetched = sorted({name for name, _ in wanted} - graph_inputs - set(initializers))
    sumsq: dict[tuple[str, bool], np.ndarray | float] = {key: 0.0 for key in wanted}

    def accumulate(values: dict[str, np.ndarray]) -> None:
        for name, features_first in wanted:
            if name in values:
                x = values[name].T if features_first else values[name]
                x = x.reshape(-1, x.shape[-1]).astype(np.float64)
                sumsq[(name, features_first)] = sumsq[(name, features_first)] + np.einsum(
                    "ij,ij->j", x, x)

    constants = {name: numpy_helper.to_array(initializers[name])
                 for name, _ in wanted if name in initializers}
    if not fetched:
        for feed in calibration:
            accumulate({**constants, **feed})
    else:
        elem_type = {}  # MatMul/Gemm inputs share the weight's element type
        for m in matrices:
            for r in m.readers:
                elem_type.setdefault(r.activation, initializers[m.weight].data_type)
        existing = {o.name for o in model.graph.output}
        kept = len(model.graph.output)
        model.graph.output.extend(helper.make_tensor_value_info(name, elem_type[name], None)
                                  for name in fetched if name not in existing)
        probe_path = ws.path("activations.onnx")
        try:
            onnx.save(model, str(probe_path))
        finally:  # the proto goes on to be pruned and saved without the extra outputs
            del model.graph.output[kept:]
        session = _session(probe_path)
        for feed in calibration:
            outputs = session.run(fetched, feed)
            accumulate({**constants, **feed, **dict(zip(fetched, outputs, strict=True))})
        del session
        probe_path.unlink()
    return {m.weight: np.sqrt(sum(sumsq[(r.activation, r.features_first)]
                                  for r in m.readers)).astype(np.float32)
            for m in matrices}


def _float_weight_count(model) -> int:
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer
               if t.data_type in floats)


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
