"""PANNs sound tagging (CNN14 and kin: 527 AudioSet classes at 32 kHz) for an ONNX an operator
registers; no PANNs weights ship with jobmesh (none are in any installed package, and models are
never downloaded from a hub), so `yamnet` is the tagger that serves out of the box.

The front end is PANNs' own (Kong et al., ``models.py``: ``Spectrogram`` + ``LogmelFilterBank``
from torchlibrosa with CNN14's settings), in numpy:

- 32 kHz mono; frames of 1024 samples every 320 (10 ms), centred (the signal is padded by 512
  samples on each side, reflecting), periodic Hann window, power spectrum |FFT|^2;
- 64 mel bands from 50 to 14,000 Hz on the Slaney mel scale with Slaney area normalisation
  (``librosa.filters.mel``'s defaults, which torchlibrosa calls);
- 10 * log10(max(mel, 1e-10)) (ref 1.0, amin 1e-10, no top_db).

:func:`mel_matrix` matches ``librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50,
fmax=14000)`` (librosa 0.11.0) to 1.9e-9 (the largest weight is 0.018), and :func:`log_mel`
matches librosa's ``melspectrogram(center=True, pad_mode="reflect", power=2)`` +
``power_to_db(ref=1.0, amin=1e-10, top_db=None)`` to 3.8e-6 dB on 2 s of noise and 0.0027 dB
on a 440 Hz tone (float32 rounding in near-empty bands). Measured once in a scratch environment:
librosa is not a dependency; a unit test rebuilds the filterbank from the formulas and compares
the spectrogram with a PyTorch front end written as torchlibrosa's (convolution DFT).

The model sees fixed windows (:data:`WINDOW_SECONDS`, every :data:`HOP_SECONDS`), each scored on
its own like a PANNs clip; the clip's scores are the mean over windows, as for YAMNet's patches.
A window past the end is zero-padded, as PANNs pads training clips. The registered ONNX takes
either

- the waveform, ``[batch, samples]`` float32 (how PANNs' own models are written: the front end
  runs in the graph), or
- the log-mel spectrogram, ``[batch, 1, frames, 64]`` float32 (a graph cut after the front end:
  ours runs in numpy),

chosen from the graph's first input (its registry manifest records the same spec). A static
length sets the window; a dynamic one takes the default. The output is the clip-level sigmoid
scores ``[batch, classes]`` (PANNs' ``clipwise_output``; picked by that name when the graph has
several outputs, else the output with one score per label). A dynamic batch axis lets windows
run :data:`MAX_BATCH` at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.audio.sessions import ort_session

SAMPLE_RATE = 32_000
FFT = 1024  # window length too
HOP = 320  # 10 ms
MEL_BANDS = 64
MEL_MIN_HZ = 50.0
MEL_MAX_HZ = 14_000.0
AMIN = 1e-10
WINDOW_SECONDS = 2.0
HOP_SECONDS = 1.0
MAX_BATCH = 16  # windows per model call when the batch axis is dynamic
CLIP_OUTPUT = "clipwise_output"


def hz_to_mel(hz):
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)),
                    mel * (200.0 / 3))


def mel_matrix(rate: int = SAMPLE_RATE, n_fft: int = FFT, bands: int = MEL_BANDS,
               fmin: float = MEL_MIN_HZ, fmax: float = MEL_MAX_HZ) -> np.ndarray:
    """(n_fft // 2 + 1, bands) weights from power-spectrum bins to mel bands: triangles on the
    Hz axis between mel-spaced edges, each scaled to unit area (2 / its width in Hz)."""
    freqs = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), bands + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return weights.T.astype(np.float32)


_MEL = mel_matrix()
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FFT) / FFT)).astype(np.float32)


def log_mel(windows: np.ndarray) -> np.ndarray:
    """[..., samples] waveforms -> [..., frames, 64] log-mel in dB, frames = 1 + samples // 320
    (centred frames, reflect padding, as torchlibrosa's ``Spectrogram(center=True)``)."""
    wave = np.asarray(windows, np.float32)
    if wave.shape[-1] <= FFT // 2:
        raise ValueError(f"reflect padding needs more than {FFT // 2} samples")
    pad = [(0, 0)] * (wave.ndim - 1) + [(FFT // 2, FFT // 2)]
    padded = np.pad(wave, pad, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, FFT, axis=-1)[..., ::HOP, :]
    power = np.abs(np.fft.rfft(frames * _HANN, n=FFT)) ** 2
    return (10.0 * np.log10(np.maximum(power @ _MEL, AMIN))).astype(np.float32)


class PannsTagger:
    """Scores fixed windows of 32 kHz audio with a PANNs-style ONNX (see the module docstring
    for the two input forms). Same interface as ``YamnetTagger``: ``rate``, ``patch_samples``,
    ``hop_samples``, ``patch_s``, ``hop_s``, ``labels``, ``scores(wave, pad_end=...)``."""

    rate = SAMPLE_RATE

    def __init__(self, model_path: str | Path, labels: list[str],
                 providers: list[str] | None = None, *, session=None, threads: int = 1):
        self.session = session = session or ort_session(model_path, providers, threads)
        inp = session.get_inputs()[0]
        shape = list(inp.shape)
        if inp.type != "tensor(float)":
            raise ValueError(f"{model_path}: input {inp.name} is {inp.type}, not float")
        window = round(WINDOW_SECONDS * SAMPLE_RATE)
        if len(shape) == 2:
            self.waveform_input = True
            if isinstance(shape[1], int):
                window = shape[1]
        elif len(shape) == 4 and not isinstance(shape[1], int) or shape[1:2] == [1]:
            if len(shape) != 4 or shape[3] != MEL_BANDS:
                raise ValueError(f"{model_path}: input {shape} is not [batch, 1, frames, 64]")
            self.waveform_input = False
            if isinstance(shape[2], int):
                window = (shape[2] - 1) * HOP
        else:
            raise ValueError(f"{model_path}: input {shape} is neither a waveform [batch, "
                             "samples] nor a log-mel spectrogram [batch, 1, frames, 64]")
        if window <= FFT // 2:
            raise ValueError(f"{model_path}: a window of {window} samples is too short")
        self.patch_samples = window
        self.hop_samples = round(window * HOP_SECONDS / WINDOW_SECONDS)  # half a window
        self.patch_s = window / SAMPLE_RATE
        self.hop_s = self.hop_samples / SAMPLE_RATE
        self.max_batch = shape[0] if isinstance(shape[0], int) else MAX_BATCH
        self._input = inp.name
        outputs = session.get_outputs()
        named = [o for o in outputs if o.name == CLIP_OUTPUT]
        sized = [o for o in outputs if o.shape and o.shape[-1] == len(labels)]
        if not (named or sized):
            raise ValueError(f"{model_path}: no output with {len(labels)} scores (one per "
                             f"label); outputs: {[(o.name, o.shape) for o in outputs]}")
        out = (named or sized)[0]
        if isinstance(out.shape[-1], int) and out.shape[-1] != len(labels):
            raise ValueError(f"{model_path}: {out.shape[-1]} outputs but {len(labels)} labels")
        self._output = out.name
        self.labels = list(labels)

    def windows(self, wave: np.ndarray, *, pad_end: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(start times in s [N], windows [N, patch_samples]) as ``yamnet.patches`` frames:
        ``pad_end`` zero-pads so every sample falls in a window (and a non-empty clip gives
        one); without it only complete windows are returned."""
        wave = np.asarray(wave, np.float32).reshape(-1)
        n, size, hop = len(wave), self.patch_samples, self.hop_samples
        if pad_end and n:
            hops = -(-max(0, n - size) // hop)
            wave = np.pad(wave, (0, size + hops * hop - n))
        count = 0 if len(wave) < size else 1 + (len(wave) - size) // hop
        if count == 0:
            return np.zeros(0), np.zeros((0, size), np.float32)
        views = np.lib.stride_tricks.sliding_window_view(wave, size)[::hop][:count]
        return np.arange(count) * self.hop_s, views

    def scores(self, wave: np.ndarray, *, pad_end: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
        """(window start times in s [N], per-class scores [N, classes] float32)."""
        starts, windows = self.windows(wave, pad_end=pad_end)
        out = np.zeros((len(windows), len(self.labels)), np.float32)
        for i in range(0, len(windows), self.max_batch):
            batch = np.ascontiguousarray(windows[i:i + self.max_batch])
            feed = batch if self.waveform_input else log_mel(batch)[:, None]
            raw = self.session.run([self._output], {self._input: feed})[0]
            out[i:i + len(batch)] = raw.reshape(len(batch), -1)
        return starts, out
