"""What every recipe shares: its result and error types, the workspace it writes through, the
facts it reads from a model, and how it times a model on this machine's CPU.

A recipe never modifies its source and never leaves a partial model behind: everything is
written inside a hidden temporary folder in `dst_dir`, and only the finished model is renamed to
its final name (same filesystem, so the rename is atomic).
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Calibration = list[dict[str, np.ndarray]]  # ORT feed dicts for the source model


@dataclass
class RecipeResult:
    """A recipe's output: the new ONNX file (inside dst_dir, named like the source), the
    resolved parameters actually used (JSON-serialisable) and plain-English notes on what the
    recipe measured or decided."""

    model: Path
    params: dict
    notes: list[str] = field(default_factory=list)


class RecipeError(ValueError):
    """A parameter, feed or model the recipe cannot handle; `field` names the parameter
    (e.g. "recipe.op_types") so callers can report it as an invalid argument."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass
class ModelFacts:
    """The parts of a model's graph the recipes decide on."""

    op_types: set[str]
    inputs: dict[str, tuple[np.dtype | None, tuple[int | None, ...] | None]]  # None: not declared
    optional_inputs: set[str]  # graph inputs backed by an initializer (feeding them is allowed)
    opset: int  # of the default ONNX domain


def load_model(src: Path, *, load_external_data: bool = True):
    """The ModelProto at `src`; RecipeError("model") when it is missing or not ONNX."""
    import onnx  # heavy: imported where used

    if not Path(src).is_file():
        raise RecipeError("model", f"{src} is not a file")
    try:
        return onnx.load(str(src), load_external_data=load_external_data)
    except Exception as exc:  # protobuf DecodeError and friends: the file is not a model
        raise RecipeError("model", f"{Path(src).name} is not a readable ONNX model: {exc}") from exc


def model_facts(model) -> ModelFacts:
    """Op types (main graph), feedable inputs and default-domain opset of a ModelProto."""
    from onnx import helper

    initializers = {t.name for t in model.graph.initializer}
    inputs, optional = {}, set()
    for value in model.graph.input:
        if value.name in initializers:
            optional.add(value.name)
            continue
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError):  # not a plain tensor type: leave the check to ORT
            dtype = None
        shape = (tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
                 if tensor.HasField("shape") else None)
        inputs[value.name] = (dtype, shape)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelFacts({n.op_type for n in model.graph.node}, inputs, optional, opset)


def check_feeds(feeds: Calibration | None, facts: ModelFacts, field: str) -> None:
    """Raises RecipeError(field) unless `feeds` is a non-empty list of dicts that feed every
    model input an array of the declared dtype, rank and fixed dimensions. Checking here turns
    a mismatched feed into a parameter error instead of an ONNX Runtime failure deep inside a
    quantizer."""
    if not feeds:
        raise RecipeError(field, "needs at least one feed")
    for i, feed in enumerate(feeds):
        if not isinstance(feed, dict):
            raise RecipeError(field, f"feed {i} is a {type(feed).__name__}, not a dict of arrays")
        missing = sorted(set(facts.inputs) - set(feed))
        unknown = sorted(set(feed) - set(facts.inputs) - facts.optional_inputs)
        if missing or unknown:
            wrong = ", ".join(f"{label} {names}" for label, names in
                              (("lacks", missing), ("has unknown", unknown)) if names)
            raise RecipeError(field, f"feed {i} {wrong}; the model takes "
                                     f"{sorted(facts.inputs)}")
        for name, (dtype, shape) in facts.inputs.items():
            value = feed[name]
            if not isinstance(value, np.ndarray):
                raise RecipeError(field, f"feed {i} input {name!r} is not a numpy array")
            fits = shape is None or (value.ndim == len(shape) and all(
                want is None or want == got for want, got in zip(shape, value.shape, strict=True)))
            if (dtype is not None and value.dtype != dtype) or not fits:
                declared = "x".join("?" if d is None else str(d) for d in shape or ())
                raise RecipeError(field, f"feed {i} input {name!r} is {value.dtype} "
                                         f"{list(value.shape)}; the model wants "
                                         f"{'any type' if dtype is None else dtype} "
                                         f"[{declared}]")


class Workspace:
    """A hidden temporary folder inside dst_dir plus the final model path. `publish` moves a
    finished file to its final name; everything else is deleted when the workspace closes."""

    def __init__(self, src: Path, tmp: Path, target: Path):
        self.src = src
        self.tmp = tmp
        self.target = target

    def path(self, name: str) -> Path:
        return self.tmp / name

    def staged_source(self) -> Path:
        """A copy of the source inside the workspace. ORT's quantizers write a `-inferred`
        sibling next to the model they are given; on the original that would write (and race
        between concurrent jobs) in the source's own folder."""
        staged = self.path("source.onnx")
        if not staged.exists():
            shutil.copyfile(self.src, staged)
        return staged

    def publish(self, path: Path) -> Path:
        path.replace(self.target)
        return self.target


@contextlib.contextmanager
def workspace(src: Path, dst_dir: Path) -> Iterator[Workspace]:
    """Opens a Workspace for writing `dst_dir/<src name>`; RecipeError("model") when src is not
    a file, RecipeError("dst_dir") when the output would overwrite the source."""
    src, dst_dir = Path(src), Path(dst_dir)
    if not src.is_file():
        raise RecipeError("model", f"{src} is not a file")
    dst_dir.mkdir(parents=True, exist_ok=True)
    target = dst_dir / src.name
    if target.resolve() == src.resolve():
        raise RecipeError("dst_dir", f"{dst_dir} holds the source; the output would overwrite it")
    with tempfile.TemporaryDirectory(dir=dst_dir, prefix=".recipe-") as tmp:
        yield Workspace(src, Path(tmp), target)


def _cpu_session(model: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def _timed_run(session, feed: dict) -> float:
    start = time.perf_counter()
    session.run(None, feed)
    return (time.perf_counter() - start) * 1000.0


def latency_ms(model: Path, feeds: Calibration, repeats: int = 3) -> float:
    """Median wall time in ms of one `session.run` per feed, over `repeats` passes of `feeds`,
    on the CPU execution provider with ORT's default session options, after one warm-up run
    (the first run allocates and plans)."""
    if not feeds:
        raise RecipeError("recipe.probe", "needs at least one feed to time")
    if repeats < 1:
        raise RecipeError("recipe.repeats", f"must be at least 1, got {repeats}")
    session = _cpu_session(model)
    session.run(None, feeds[0])
    times = [_timed_run(session, feed) for _ in range(repeats) for feed in feeds]
    return float(statistics.median(times))


def compare_latency(baseline: Path, candidate: Path, feeds: Calibration,
                    repeats: int = 3) -> tuple[float, float]:
    """(baseline ms, candidate ms) as in `latency_ms`, but with the two models' runs
    interleaved feed by feed (order alternating per pass): on a shared machine, background
    load then slows both alike and the ratio stays meaningful."""
    if not feeds:
        raise RecipeError("recipe.probe", "needs at least one feed to time")
    sessions = [_cpu_session(baseline), _cpu_session(candidate)]
    for session in sessions:
        session.run(None, feeds[0])
    times: list[list[float]] = [[], []]
    for rep in range(max(1, repeats)):
        order = (0, 1) if rep % 2 == 0 else (1, 0)
        for feed in feeds:
            for which in order:
                times[which].append(_timed_run(sessions[which], feed))
    return float(statistics.median(times[0])), float(statistics.median(times[1]))
