"""Int8 quantization with ONNX Runtime's quantizers: dynamic (int8 weights, activations
quantized on the fly) and static QDQ (activation ranges fixed from calibration feeds).

Which op types are worth quantizing is measured, never assumed: an int8 kernel is not faster
everywhere (on a 2-core AVX2 CPU, dynamic int8 Conv made the PP-OCR recognizer about 4x slower
while int8 MatMul kept its speed, and static QDQ Conv ran a little faster than fp32). With
op_types=None each candidate type present in the graph is
quantized alone and timed against the fp32 source on the probe feeds; the types whose model
stays within SLOWDOWN_LIMIT of the source's time are kept, and a note records every verdict.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from workers.compression.recipes.common import (
    Calibration,
    ModelFacts,
    RecipeError,
    RecipeResult,
    Workspace,
    check_feeds,
    compare_latency,
    load_model,
    model_facts,
    workspace,
)

CANDIDATES = ("MatMul", "Gemm", "Conv", "LSTM", "GRU", "Attention")
SLOWDOWN_LIMIT = 1.10  # a kept type may cost up to 10% latency (timing noise on a busy CPU)
PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` (per-channel scales) arrived in opset 13

Build = Callable[[list[str], Path], None]  # (op types, output path) -> writes the int8 model


def int8_dynamic(src: Path, dst_dir: Path, *, op_types: list[str] | None = None,
                 probe: Calibration | None = None) -> RecipeResult:
    """Dynamic int8 quantization (QInt8 weights) of `op_types`, or of the measured-worthwhile
    candidate types when op_types is None (then `probe` is required). With probe feeds the
    final model is also timed against the source and the figure noted."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    src = Path(src)
    facts = model_facts(load_model(src, load_external_data=False))
    _check_probe(probe, facts, op_types is None)
    types, auto = _resolve_op_types(op_types, facts, set(IntegerOpsRegistry), "dynamic")
    notes = _unsupported_notes(facts, set(IntegerOpsRegistry), "dynamic") if auto else []
    with workspace(src, dst_dir) as ws:
        staged = ws.staged_source()

        def build(types: list[str], out: Path) -> None:
            quantize_dynamic(staged, out, op_types_to_quantize=types,
                             weight_type=QuantType.QInt8, per_channel=False)

        out, selection = _quantize(ws, build, types, auto, probe, notes)
        params = {"weight_type": "QInt8", "per_channel": False, **selection}
        return RecipeResult(ws.publish(out), params, notes)


def int8_static(src: Path, dst_dir: Path, calibration: Calibration, *,
                op_types: list[str] | None = None, per_channel: bool = True,
                probe: Calibration | None = None, method: str = "percentile") -> RecipeResult:
    """Static int8 quantization in QDQ format: QUInt8 activations with ranges from
    `calibration` (at least one feed) by `method` (minmax, percentile: the 99.999th percentile
    of |x|, or entropy), QInt8 weights, per-channel when asked. The model is
    pre-processed with ORT's quant_pre_process first where that works (noted when it does
    not), and lifted to opset 13 when per-channel scales need it. Op types are chosen as in
    int8_dynamic."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.registry import QDQRegistry

    src = Path(src)
    facts = model_facts(load_model(src, load_external_data=False))
    check_feeds(calibration, facts, "eval.calibration_samples")
    if not isinstance(per_channel, bool):
        raise RecipeError("recipe.per_channel", f"must be true or false, got {per_channel!r}")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise RecipeError("recipe.method", f"must be one of {', '.join(methods)}")
    _check_probe(probe, facts, op_types is None)
    types, auto = _resolve_op_types(op_types, facts, set(QDQRegistry), "static QDQ")
    notes = _unsupported_notes(facts, set(QDQRegistry), "static QDQ") if auto else []
    with workspace(src, dst_dir) as ws:
        prepared, preparation = _prepare_static(ws, facts, per_channel, notes)

        # Kept in float: the first weight layer, which reads the raw input (on the PP-OCR
        # recognizer quantizing its stem conv alone took CER from 0.06% to about 1%, measured
        # on 200 rendered lines; the rest of the net quantized costs 0.1 point), and MatMuls of
        # two activations (attention), which hold no weights, so quantizing them saves nothing.
        graph = load_model(prepared, load_external_data=False)
        excluded = _first_weight_layer(graph) + _activation_matmuls(graph)
        if excluded:
            notes.append(f"Kept in float: {', '.join(excluded)} (the first weight layer reads "
                         "the raw input; activation-by-activation MatMuls hold no weights).")

        def build(types: list[str], out: Path) -> None:
            # QUInt8 activations x QInt8 weights: ORT's x86 int8 GEMM/conv kernels multiply
            # u8 by s8 (VPMADDUBSW, VPDPBUSD with VNNI); s8 activations take a slower path
            # (about 1.5x slower than u8 on the PP-OCR recognizer here, timed paired).
            # reduce_range (7-bit weights) stays off: no measurable speed difference here, and
            # the int16 saturation it guards against on CPUs without VNNI would show in the
            # evaluation of the result.
            quantize_static(prepared, out, _feed_reader(calibration),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=types,
                            nodes_to_exclude=excluded,
                            per_channel=per_channel, reduce_range=False,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method])

        out, selection = _quantize(ws, build, types, auto, probe, notes)
        params = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                  "per_channel": per_channel, "reduce_range": False,
                  "calibrate_method": method, "calibration_samples": len(calibration),
                  "nodes_in_float": excluded,
                  **preparation, **selection}
        return RecipeResult(ws.publish(out), params, notes)


def _first_weight_layer(model) -> list[str]:
    """The first Conv / Gemm / MatMul-with-an-initializer in graph (topological) order."""
    initializers = {t.name for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm") or (n.op_type == "MatMul"
                                             and any(i in initializers for i in n.input)):
            return [n.name]
    return []


def _activation_matmuls(model) -> list[str]:
    """Names of MatMul nodes with no initializer (and no Constant) among their inputs."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def _resolve_op_types(op_types: list[str] | None, facts: ModelFacts, supported: set[str],
                      flow: str) -> tuple[list[str], bool]:
    """(op types to quantize or candidates to measure, whether to measure)."""
    if op_types is None:
        usable = [op for op in CANDIDATES if op in facts.op_types and op in supported]
        if not usable:
            handled = ", ".join(op for op in CANDIDATES if op in supported)
            raise RecipeError("recipe.op_types", f"the model has none of the op types {flow} "
                                                 f"quantization handles ({handled})")
        return usable, True
    if (not isinstance(op_types, list | tuple) or not op_types
            or not all(isinstance(op, str) for op in op_types)):
        raise RecipeError("recipe.op_types", "must be a non-empty list of ONNX op types, or "
                                             "none to choose them by measurement")
    unsupported = [op for op in op_types if op not in supported]
    if unsupported:
        raise RecipeError("recipe.op_types", f"{flow} quantization has no int8 form for "
                                             f"{unsupported}; it handles {sorted(supported)}")
    absent = [op for op in op_types if op not in facts.op_types]
    if absent:
        raise RecipeError("recipe.op_types", f"{absent} not in the model; of the usual "
                                             f"candidates it has {_present(facts)}")
    return list(dict.fromkeys(op_types)), False


def _present(facts: ModelFacts) -> list[str]:
    return [op for op in CANDIDATES if op in facts.op_types]


def _unsupported_notes(facts: ModelFacts, supported: set[str], flow: str) -> list[str]:
    return [f"{op} left in float: ONNX Runtime's {flow} quantization has no int8 form for it."
            for op in _present(facts) if op not in supported]


def _check_probe(probe: Calibration | None, facts: ModelFacts, auto: bool) -> None:
    if probe is None:
        if auto:
            raise RecipeError("recipe.probe", "choosing op types automatically times each "
                                              "candidate on probe feeds; pass probe feeds or "
                                              "name the op types")
        return
    check_feeds(probe, facts, "recipe.probe")


def _quantize(ws: Workspace, build: Build, types: list[str], auto: bool,
              probe: Calibration | None, notes: list[str]) -> tuple[Path, dict]:
    """Builds the int8 model (choosing the types first when `auto`); returns it and the
    selection params (types, how chosen, measured latencies)."""
    per_type: dict[str, dict] = {}
    if auto:
        types, per_type, built = _choose(ws, build, types, probe, notes)
    if auto and len(types) == 1:  # the measured single-type model is the result
        out, final = built[types[0]], per_type[types[0]]
    else:
        out = ws.path("int8.onnx")
        build(types, out)
        final = None
        if probe is not None:
            base, ms = compare_latency(ws.src, out, probe)
            final = {"fp32": round(base, 3), "int8": round(ms, 3)}
            notes.append(f"The int8 model ({', '.join(types)}) ran at {ms / base:.2f}x the fp32 "
                         f"time on this CPU ({_ms(ms)} vs {_ms(base)}).")
    selection = {"op_types": types, "op_types_selection": "measured" if auto else "given"}
    if final is not None:
        selection["latency_ms"] = {**final, **({"per_op_type": per_type} if per_type else {})}
    return out, selection


def _choose(ws: Workspace, build: Build, candidates: list[str], probe: Calibration,
            notes: list[str]) -> tuple[list[str], dict[str, dict], dict[str, Path]]:
    """Quantizes each candidate alone and keeps those within SLOWDOWN_LIMIT of the source's
    latency; RecipeError("recipe.op_types") with the figures when none is."""
    kept: list[str] = []
    measured: dict[str, dict] = {}
    built: dict[str, Path] = {}
    for op in candidates:
        out = ws.path(f"only-{op}.onnx")
        build([op], out)
        base, ms = compare_latency(ws.src, out, probe)
        measured[op] = {"fp32": round(base, 3), "int8": round(ms, 3)}
        ratio = ms / base
        if ratio <= SLOWDOWN_LIMIT:
            kept.append(op)
            built[op] = out
            notes.append(f"{op} kept: quantized alone, the model ran at {ratio:.2f}x the fp32 "
                         f"time on this CPU ({_ms(ms)} vs {_ms(base)}).")
        else:
            out.unlink()  # large models: do not hold every rejected variant on disk
            notes.append(f"{op} excluded: quantizing it made the model {ratio:.1f}x slower on "
                         f"this CPU ({_ms(ms)} vs {_ms(base)}).")
    if not kept:
        figures = "; ".join(f"{op} {_ms(m['int8'])} vs {_ms(m['fp32'])} fp32"
                            for op, m in measured.items())
        raise RecipeError("recipe.op_types", f"no op type paid off on this CPU (limit "
                                             f"{SLOWDOWN_LIMIT:.2f}x the fp32 time): {figures}")
    return kept, measured, built


def _prepare_static(ws: Workspace, facts: ModelFacts, per_channel: bool,
                    notes: list[str]) -> tuple[Path, dict]:
    """The model static quantization starts from: opset lifted for per-channel scales where
    needed, then ORT's quant_pre_process (symbolic shapes + optimization + ONNX shapes), else
    the same without symbolic shapes, else the model as is. Returns it and what was done."""
    current, opset = ws.staged_source(), facts.opset
    if per_channel and opset < PER_CHANNEL_OPSET:
        current = _lift_opset(ws, current, opset)
        notes.append(f"Opset {opset} converted to {PER_CHANNEL_OPSET}: per-channel weight scales "
                     "need DequantizeLinear's axis attribute.")
        opset = PER_CHANNEL_OPSET
    prepared = ws.path("preprocessed.onnx")
    failures = []
    for label, skip_symbolic_shape in (("full", False),
                                       ("without symbolic shape inference", True)):
        try:
            _pre_process(current, prepared, skip_symbolic_shape, ws.tmp)
        except RuntimeError as exc:  # pre-processing only helps; the quantizer runs without it
            failures.append(f"{label}: {exc}")
            continue
        if failures:
            notes.append(f"quant_pre_process ran {label} ({failures[0]}).")
        return prepared, {"opset": opset, "pre_process": label}
    notes.append(f"quant_pre_process failed ({'; '.join(failures)}); quantized the model "
                 "without it.")
    return current, {"opset": opset, "pre_process": "skipped"}


_PRE_PROCESS = """
import sys
from onnxruntime.quantization.shape_inference import quant_pre_process
quant_pre_process(sys.argv[1], sys.argv[2], skip_symbolic_shape=sys.argv[3] == "1")
"""


def _pre_process(model_path: Path, out: Path, skip_symbolic_shape: bool, cwd: Path) -> None:
    """ORT's quant_pre_process in a child process working in `cwd` (the workspace): when
    symbolic shape inference fails, ORT dumps the model, with a copy of every weight, into the
    current directory; there it is cleaned up with the workspace instead of piling up wherever
    the worker runs. RuntimeError with ORT's last error line when it fails."""
    done = subprocess.run([sys.executable, "-c", _PRE_PROCESS, str(model_path.resolve()),
                           str(out.resolve()), "1" if skip_symbolic_shape else "0"],
                          cwd=cwd.resolve(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(_short(lines[-1] if lines else f"exit status {done.returncode}"))


def _lift_opset(ws: Workspace, model_path: Path, opset: int) -> Path:
    import onnx
    from onnx import version_converter

    out = ws.path(f"opset{PER_CHANNEL_OPSET}.onnx")
    try:
        lifted = version_converter.convert_version(onnx.load(str(model_path)), PER_CHANNEL_OPSET)
        onnx.save(lifted, str(out))
    except Exception as exc:  # the converter lacks adapters for some ops
        raise RecipeError("recipe.per_channel", f"per-channel scales need opset "
                                                f"{PER_CHANNEL_OPSET} and converting this opset "
                                                f"{opset} model failed ({_short(exc)}); use "
                                                "per_channel=false") from exc
    return out


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value >= 1 else f"{value:.3g} ms"


def _short(exc: Exception | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _feed_reader(feeds: Calibration):
    """An ORT CalibrationDataReader over a list of feed dicts (fresh per quantize call)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self):
            self._next = 0

        def get_next(self) -> dict | None:
            if self._next >= len(feeds):
                return None
            self._next += 1
            return feeds[self._next - 1]

        def rewind(self) -> None:
            self._next = 0

        def __len__(self) -> int:
            return len(feeds)

    return FeedReader()
