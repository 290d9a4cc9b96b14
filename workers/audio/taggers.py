"""Which tagger a registry version is: YAMNet (a [.., 96, 64] log-mel patch in, 16 kHz) or
PANNs (a waveform [batch, samples] or log-mel [batch, 1, frames, 64] in, 32 kHz), told by the
graph's first input, which the version's manifest records too. Both take the class map
(``labels.csv``: AudioSet's ``index,mid,display_name`` columns) beside ``model.onnx``."""

from __future__ import annotations

from pathlib import Path

from workers.audio.panns import PannsTagger
from workers.audio.sessions import ort_session
from workers.audio.yamnet import MEL_BANDS, PATCH_FRAMES, YamnetTagger, load_labels

Tagger = YamnetTagger | PannsTagger


def is_yamnet(input_shape: list) -> bool:
    return list(input_shape)[-2:] == [PATCH_FRAMES, MEL_BANDS]


def load_tagger(model_path: str | Path, labels_path: str | Path, *, session=None) -> Tagger:
    """The tagger for ``model_path``; raises ValueError when the graph is neither kind or its
    outputs do not match the labels, FileNotFoundError when the class map is missing."""
    labels = load_labels(labels_path)
    session = session or ort_session(model_path)
    cls = YamnetTagger if is_yamnet(session.get_inputs()[0].shape) else PannsTagger
    return cls(model_path, labels, session=session)
