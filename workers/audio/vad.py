"""Voice activity with the silero VAD ONNX model (``silero-vad`` package), run by onnxruntime
directly: no torch at serve time.

The model scores 512-sample windows (32 ms at 16 kHz). Each call takes the window preceded by
the last 64 samples the previous call saw, plus a recurrent state [2, 1, 128], and returns the
speech probability and the next state (silero's own ONNX wrapper does the same). ``VadState``
carries all of that, and the samples that do not yet fill a window, from one chunk of a stream
to the next, so a file can be fed in blocks of any size with the same probabilities as in one
piece; one ``SileroVad`` serves any number of streams.

``speech_segments`` turns probabilities into segments with silero's ``get_speech_timestamps``
rules (threshold with a lower exit threshold, minimum silence to end a segment, minimum speech
to keep one, padding split in the middle of short gaps); our own code, checked against silero's
function in tests. Silero's maximum-speech-length splitting is not implemented: segments can be
arbitrarily long.
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512  # samples per probability
CONTEXT = 64  # samples of the previous window the model sees again
STATE_SHAPE = (2, 1, 128)


@dataclass(frozen=True)
class VadState:
    """Where one stream stands; new values are returned, never changed in place."""

    rnn: np.ndarray  # recurrent state [2, 1, 128]
    context: np.ndarray  # the last CONTEXT samples of the previous window
    pending: np.ndarray  # samples received but not yet a whole window
    windows: int = 0  # windows scored so far


class SileroVad:
    """Per-window speech probabilities from the silero ONNX model, 16 kHz only.

    ``session`` reuses an ONNX Runtime session made for ``model_path`` (a worker's ModelRunner);
    otherwise one is made with ``providers`` (default CPU) and ``threads``.
    """

    def __init__(self, model_path: str | Path, providers: list[str] | None = None, *,
                 session=None, threads: int = 1):
        if session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            # A window is ~0.2 ms of work: more threads only add synchronisation.
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3  # the export's unused initializers: a warning each
            session = ort.InferenceSession(str(model_path), sess_options=opts,
                                           providers=providers or ["CPUExecutionProvider"])
        self.session = session
        names = {i.name for i in session.get_inputs()}
        if not {"input", "state"} <= names:
            raise ValueError(f"{model_path}: inputs {sorted(names)}; expected silero's "
                             "'input' and 'state' (and 'sr')")
        # The 16k-only exports have no 'sr' input.
        self._rate = {"sr": np.array(SAMPLE_RATE, np.int64)} if "sr" in names else {}

    def new_state(self) -> VadState:
        return VadState(np.zeros(STATE_SHAPE, np.float32), np.zeros(CONTEXT, np.float32),
                        np.zeros(0, np.float32))

    def probs(self, chunk16k: np.ndarray, state: VadState, *, final: bool = False
              ) -> tuple[np.ndarray, VadState]:
        """(speech probability of each window completed by this chunk, the stream's next state).

        Window ``state.windows + i`` covers samples ``[512 * (windows + i), + 512)`` of the
        stream. With ``final`` the last partial window is zero-padded and scored too (silero
        does the same at the end of a file); the returned state then has nothing pending.
        """
        samples = np.concatenate([state.pending, np.asarray(chunk16k, np.float32).reshape(-1)])
        whole = len(samples) // WINDOW
        if final and len(samples) % WINDOW:
            samples = np.pad(samples, (0, WINDOW - len(samples) % WINDOW))
            whole += 1
        out = np.empty(whole, np.float32)
        rnn, context = state.rnn, state.context
        for i in range(whole):
            window = samples[i * WINDOW:(i + 1) * WINDOW]
            feed = np.concatenate([context, window])[None, :]
            prob, rnn = self.session.run(None, {"input": feed, "state": rnn, **self._rate})
            out[i] = prob.reshape(-1)[0]
            context = window[-CONTEXT:]
        rest = samples[whole * WINDOW:]
        return out, VadState(rnn, np.array(context), rest.copy(), state.windows + whole)

    def segments(self, wave16k: np.ndarray, threshold: float = 0.5, min_speech_ms: int = 250,
                 min_silence_ms: int = 100, pad_ms: int = 30) -> list[tuple[float, float]]:
        """Speech segments (start, end) in seconds of a whole 16 kHz recording."""
        probs, _ = self.probs(wave16k, self.new_state(), final=True)
        return speech_segments(probs, len(wave16k), threshold=threshold,
                               min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms,
                               pad_ms=pad_ms)


def speech_segments(probs: np.ndarray, total_samples: int, *, threshold: float = 0.5,
                    min_speech_ms: int = 250, min_silence_ms: int = 100, pad_ms: int = 30,
                    rate: int = SAMPLE_RATE) -> list[tuple[float, float]]:
    """Segments (start, end) in seconds from per-window probabilities of a recording
    ``total_samples`` long.

    Speech starts at the first window with p >= threshold. It ends where a run of windows
    under ``threshold - 0.15`` began, once that run has lasted ``min_silence_ms`` from its
    first window's start to the current window's start (so 100 ms takes 5 windows, as in
    silero); windows between the two thresholds neither end nor extend the run, and a window
    >= threshold cancels it.
    Segments not longer than ``min_speech_ms`` are dropped; the rest grow by ``pad_ms`` on
    each side, and where two would then meet, the gap between them is split in half.
    """
    low = max(threshold - 0.15, 0.01)
    min_speech = rate * min_speech_ms / 1000
    min_silence = rate * min_silence_ms / 1000
    pad = int(rate * pad_ms / 1000)
    spans: list[list[int]] = []
    start: int | None = None
    quiet_from: int | None = None  # where the current run of low windows began
    for i, p in enumerate(np.asarray(probs, np.float64)):
        at = i * WINDOW
        if start is None:
            if p >= threshold:
                start, quiet_from = at, None
            continue
        if p >= threshold:
            quiet_from = None
        elif p < low:
            quiet_from = at if quiet_from is None else quiet_from
            if at - quiet_from >= min_silence:
                if quiet_from - start > min_speech:
                    spans.append([start, quiet_from])
                start = quiet_from = None
    if start is not None and total_samples - start > min_speech:
        spans.append([start, total_samples])

    for i, span in enumerate(spans):
        if i == 0:
            span[0] = max(0, span[0] - pad)
        if i + 1 < len(spans):
            gap = spans[i + 1][0] - span[1]
            grow = gap // 2 if gap < 2 * pad else pad
            span[1] += grow
            spans[i + 1][0] = max(0, spans[i + 1][0] - grow)
        else:
            span[1] = min(total_samples, span[1] + pad)
    return [(s / rate, e / rate) for s, e in spans]


def model_file() -> Path:
    """silero_vad.onnx (opset 16, 8 and 16 kHz) inside the installed ``silero-vad`` package.
    Located, not imported: the package imports torch."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("silero-vad is not installed: pip install --no-deps silero-vad==6.2.3")
    path = Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the silero-vad package")
    return path


def main(argv: list[str] | None = None) -> int:
    from workers.audio.decode import AudioError, decode

    parser = argparse.ArgumentParser(
        prog="python -m workers.audio.vad",
        description="Print the speech segments (start and end, in seconds) that silero VAD "
                    "finds in a recording.")
    parser.add_argument("file", type=Path, help="wav, flac, ogg or mp3 file")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="speech probability that starts a segment (default 0.5)")
    parser.add_argument("--min-speech-ms", type=int, default=250)
    parser.add_argument("--min-silence-ms", type=int, default=100)
    parser.add_argument("--pad-ms", type=int, default=30)
    args = parser.parse_args(argv)
    vad = SileroVad(model_file())
    try:
        wave = decode(args.file.read_bytes(), SAMPLE_RATE)
    except AudioError as exc:
        parser.exit(1, f"{args.file}: {exc.problem}\n")
    segments = vad.segments(wave, args.threshold, args.min_speech_ms, args.min_silence_ms,
                            args.pad_ms)
    for start, end in segments:
        print(f"{start:8.3f}  {end:8.3f}")
    if not segments:
        print("no speech")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
