"""Per model call metrics for the audio models, which call their sessions themselves (a YAMNet
patch, a batch of PANNs windows, a 32 ms VAD window, a piper sentence, a Whisper window):
`compute_duration_seconds{model, stage}` for every call and `batch_size{model}` for every ORT
call (the first input's leading dimension), with the registry's `name@version` as the model.

Wrappers rather than code in the model classes: the classes stay plain (the benchmark and
tests call them in-process), and the worker wraps what it serves (`workers.audio.tasks`)."""

from __future__ import annotations

import time

from shared import metrics


class MeteredSession:
    """An ONNX Runtime session whose `run` is timed; everything else passes through."""

    def __init__(self, session, model: str, stage: str):
        self._session = session
        self._compute = metrics.COMPUTE_DURATION.labels(model=model, stage=stage)
        self._batch = metrics.BATCH_SIZE.labels(model=model)

    def run(self, output_names, feeds: dict, *args, **kwargs):
        t0 = time.perf_counter()
        out = self._session.run(output_names, feeds, *args, **kwargs)
        self._compute.observe(time.perf_counter() - t0)
        first = next(iter(feeds.values()), None)
        if getattr(first, "ndim", 0):
            self._batch.observe(first.shape[0])
        return out

    def __getattr__(self, name: str):
        return getattr(self._session, name)


class MeteredWhisper:
    """A faster-whisper model whose `transcribe` is timed from the call until its lazy segment
    generator is exhausted (decoding happens while it is consumed)."""

    def __init__(self, model, name: str, stage: str = "whisper"):
        self._model = model
        self._compute = metrics.COMPUTE_DURATION.labels(model=name, stage=stage)

    def transcribe(self, audio, **kwargs):
        t0 = time.perf_counter()
        segments, info = self._model.transcribe(audio, **kwargs)

        def timed():
            yield from segments
            self._compute.observe(time.perf_counter() - t0)

        return timed(), info

    def __getattr__(self, name: str):
        return getattr(self._model, name)
