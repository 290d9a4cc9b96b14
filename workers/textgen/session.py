"""A minimal ONNX Runtime CPU session with the Runner surface (`run`, `input_names`,
`output_names`, `providers`) and `load_generator`, for tools, benchmarks and tests that run
without the worker's ModelRunner (which adds provider choice and metrics)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class OrtSession:
    def __init__(self, path: str | Path, threads: int | None = None,
                 providers: list[str] | None = None):
        import onnxruntime as ort  # heavy: imported where used

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get("JOBMESH_ORT_THREADS", "0"))
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), sess_options=opts,
                                            providers=providers or ["CPUExecutionProvider"])
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.calls = 0

    def run(self, feeds: dict[str, np.ndarray], stage: str = "forward") -> list[np.ndarray]:
        """`stage` is accepted for the Runner surface and not recorded (no metrics here)."""
        self.calls += 1
        return self.session.run(None, feeds)


def load_generator(folder: str | Path, session=None, **kwargs):
    """A `Generator` over an exported folder (model.onnx, tokenizer.json, generation.json)."""
    from workers.textgen.decoding import Generator
    from workers.textgen.tokenizer import TextTokenizer

    folder = Path(folder)
    config = json.loads((folder / "generation.json").read_text())
    session = session or OrtSession(folder / "model.onnx")
    return Generator(session, TextTokenizer(folder / "tokenizer.json", config), config, **kwargs)
