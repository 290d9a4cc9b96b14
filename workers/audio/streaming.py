"""Block-by-block tagging and speech detection: what lets a worker process an hour of audio
without holding it decoded (an hour at 16 kHz float32 is 230 MB).

Tagging keeps only the samples its next window needs: a tagger's windows over a buffer starting
at sample N * hop give exactly the whole signal's windows from N on, so after each
block the buffer drops every whole hop it has scored. The result equals tagging the whole
signal at once (tested). The VAD carries silero's recurrent state between blocks and keeps one
probability per 32 ms window."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from workers.audio.vad import SileroVad, speech_segments


class TagAccumulator:
    """Scores a stream of blocks with a windowed tagger (``YamnetTagger`` or ``PannsTagger``:
    anything with ``rate``, ``patch_samples``, ``hop_samples``, ``hop_s``, ``labels`` and
    ``scores(wave, pad_end=)``); the blocks must be at the tagger's ``rate``."""

    def __init__(self, tagger, rate: int | None = None):
        if rate is not None and rate != tagger.rate:
            raise ValueError(f"the tagger takes {tagger.rate} Hz audio, not {rate}")
        self.tagger = tagger
        self._buffer = np.zeros(0, np.float32)
        self._offset = 0  # windows already scored (the buffer starts at offset * hop)
        self._total = 0  # samples seen
        self._starts: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, np.asarray(block, np.float32)])
        self._total += len(block)
        self._score(pad_end=False)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(window start times in s [N], scores [N, classes]). The tail shorter than a hop is
        scored zero-padded, as a whole-signal call would, and a clip shorter than one window
        still gives one."""
        t = self.tagger
        if self._offset == 0 or len(self._buffer) > t.patch_samples - t.hop_samples:
            self._score(pad_end=True)
        if not self._scores:
            return np.zeros(0), np.zeros((0, len(t.labels)), np.float32)
        return np.concatenate(self._starts), np.concatenate(self._scores)

    def _score(self, pad_end: bool) -> None:
        starts, scores = self.tagger.scores(self._buffer, pad_end=pad_end)
        if not len(scores):
            return
        self._starts.append(starts + self._offset * self.tagger.hop_s)
        self._scores.append(scores)
        self._offset += len(scores)
        self._buffer = self._buffer[len(scores) * self.tagger.hop_samples:]


def vad_segments(vad: SileroVad, blocks: Iterable[np.ndarray], rate: int, *,
                 threshold: float, min_speech_ms: int, min_silence_ms: int
                 ) -> list[tuple[float, float]]:
    """Speech segments (start, end) in seconds over a stream of 16 kHz blocks."""
    state = vad.new_state()
    probs: list[np.ndarray] = []
    total = 0
    for block in blocks:
        p, state = vad.probs(block, state)
        probs.append(p)
        total += len(block)
    p, state = vad.probs(np.zeros(0, np.float32), state, final=True)
    probs.append(p)
    return speech_segments(np.concatenate(probs), total, threshold=threshold,
                           min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms,
                           rate=rate)
