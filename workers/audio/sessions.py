"""ONNX Runtime sessions for the audio models when no worker ModelRunner made one (scripts,
tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path


def ort_session(model_path: str | Path, providers: list[str] | None = None, threads: int = 1):
    """A session with ``threads`` intra-op threads (default 1: the audio models run small
    batch-1 calls, where a second thread costs more than it gives) on ``providers`` (CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(model_path), sess_options=opts,
                                providers=providers or ["CPUExecutionProvider"])
