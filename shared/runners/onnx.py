"""`ModelRunner`: one ONNX Runtime session per model file and process, on the best execution
provider this machine has (TensorRT > CUDA > CPU), chosen at run time.

onnxruntime-gpu silently falls back to CPU when CUDA libraries are missing, so we log the
providers the session actually uses (`session.get_providers()`), not the ones we asked for.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from shared import metrics

log = logging.getLogger(__name__)

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: list[str], override: str = "") -> list[str]:
    """The providers to ask for, best first. `override` is a comma list (JOBMESH_PROVIDERS);
    names not available here are dropped, and CPU is always the last resort."""
    wanted = [p.strip() for p in override.split(",") if p.strip()] or list(PREFERENCE)
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _provider_options(name: str, cache_dir: Path) -> dict:
    if name == "TensorrtExecutionProvider":
        # Engines take minutes to build: cache them next to the model files.
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir / "trt"),
                "trt_fp16_enable": True}
    return {}


class ModelRunner:
    """Loads once, says `ready`, maps feeds to outputs. Satisfies the pipelines' Runner protocol
    (`run`, `input_names`, `metadata`)."""

    def __init__(self, path: str | Path, name: str, *, providers_override: str = "",
                 threads: int | None = None):
        import onnxruntime as ort  # heavy: imported where used

        self.name = name
        self.path = Path(path)
        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        # Prefork children share the cores: the worker entry point sets JOBMESH_ORT_THREADS to
        # cores / children so two children do not each spin a thread per core (0 = ORT's default).
        opts.intra_op_num_threads = threads or int(os.environ.get("JOBMESH_ORT_THREADS", "0"))
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = choose_providers(ort.get_available_providers(), providers_override)
        provider_list = [(p, _provider_options(p, self.path.parent)) for p in wanted]
        self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                            providers=provider_list)
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.load_seconds = time.perf_counter() - t0
        metrics.MODEL_LOAD.labels(model=name).observe(self.load_seconds)
        log.info("model loaded", extra={"model": name, "providers": ",".join(self.providers),
                                        "asked": ",".join(wanted),
                                        "load_s": round(self.load_seconds, 3)})
        self.ready = True

    def run(self, feeds: dict[str, np.ndarray], stage: str = "forward") -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.session.run(None, feeds)
        metrics.COMPUTE_DURATION.labels(model=self.name, stage=stage).observe(
            time.perf_counter() - t0)
        first = next(iter(feeds.values()), None)
        if first is not None and getattr(first, "ndim", 0) > 0:
            metrics.BATCH_SIZE.labels(model=self.name).observe(first.shape[0])
        return out
