"""TensorRT builds through ONNX Runtime's TensorRT execution provider: the engine is built on the
first run and kept in an engine cache folder that ships with the new version.

Only a machine whose onnxruntime has the TensorRT EP (onnxruntime-gpu with TensorRT libraries)
can build; everywhere else the recipe fails with FAILED_PRECONDITION saying why, instead of
silently falling back to CPU (onnxruntime-gpu does that without CUDA libraries)."""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.errors import FailedPrecondition
from workers.compression.recipes import RecipeResult

PROVIDER = "TensorrtExecutionProvider"
ENGINE_DIR = "trt_engines"


def unavailable_reason() -> str:
    """Why this process cannot build engines ("" when it can)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    providers = ort.get_available_providers()
    if PROVIDER not in providers:
        return (f"this worker's onnxruntime has no {PROVIDER} (it has "
                f"{', '.join(providers)}); run the job on a GPU worker with onnxruntime-gpu "
                "and TensorRT installed")
    return ""


def build_engine(src: Path, dst_dir: Path, probe: list[dict], *, fp16: bool) -> RecipeResult:
    reason = unavailable_reason()
    if reason:
        raise FailedPrecondition(f"recipe tensorrt: {reason}", metadata={"recipe": "tensorrt"})
    import onnxruntime as ort

    dst_dir.mkdir(parents=True, exist_ok=True)
    model = dst_dir / src.name
    shutil.copyfile(src, model)
    cache = dst_dir / ENGINE_DIR
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
               "trt_fp16_enable": fp16}
    session = ort.InferenceSession(str(model), providers=[(PROVIDER, options),
                                                          "CUDAExecutionProvider"])
    if PROVIDER not in session.get_providers():
        raise FailedPrecondition(f"recipe tensorrt: the session fell back to "
                                 f"{session.get_providers()}", metadata={"recipe": "tensorrt"})
    for feed in probe:  # builds (and caches) the engine for these shapes
        session.run(None, feed)
    engines = sorted(p.name for p in cache.glob("*")) if cache.exists() else []
    return RecipeResult(model, {"fp16": fp16, "engines": engines},
                        [f"TensorRT engines built for the probe shapes: {', '.join(engines)}; "
                         "other shapes build on first use"])
