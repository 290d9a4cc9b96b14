"""Per model call metrics: every ORT call of a wrapped session and every Whisper window."""

from __future__ import annotations

import numpy as np
from prometheus_client import REGISTRY

from workers.audio.metered import MeteredSession, MeteredWhisper
from workers.audio.sessions import ort_session
from workers.audio.vad import SileroVad, model_file


def _count(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_vad_window_is_one_timed_call_of_batch_one():
    model = "silero-vad@metered-test"
    vad = SileroVad(model_file(), session=MeteredSession(ort_session(model_file()), model,
                                                         "vad"))
    calls = _count("jobmesh_compute_duration_seconds_count", model=model, stage="vad")
    batches = _count("jobmesh_batch_size_sum", model=model)
    probs, _ = vad.probs(np.zeros(512 * 10, np.float32), vad.new_state(), final=True)
    windows = len(probs)
    assert windows >= 10
    assert _count("jobmesh_compute_duration_seconds_count", model=model,
                  stage="vad") - calls == windows
    assert _count("jobmesh_batch_size_sum", model=model) - batches == windows  # batch 1 each
    assert vad.session.get_inputs()[0].name  # everything else passes through


class _Whisper:
    """Stands in for faster-whisper's lazy transcribe (segments decode while consumed)."""

    model = "inner"

    def transcribe(self, audio, **kwargs):
        return iter(["a", "b"]), {"language": "en"}


def test_a_whisper_window_is_timed_once_its_segments_are_consumed():
    model = "whisper@metered-test"
    w = MeteredWhisper(_Whisper(), model)
    before = _count("jobmesh_compute_duration_seconds_count", model=model, stage="whisper")
    segments, info = w.transcribe(np.zeros(16000, np.float32), beam_size=1)
    assert info == {"language": "en"} and w.model == "inner"
    assert _count("jobmesh_compute_duration_seconds_count", model=model,
                  stage="whisper") == before  # not consumed yet
    assert list(segments) == ["a", "b"]
    assert _count("jobmesh_compute_duration_seconds_count", model=model,
                  stage="whisper") == before + 1
