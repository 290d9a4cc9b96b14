"""ComPEFT (Yadav et al. 2023, "ComPEFT: Compression for Communicating Parameter Efficient
Updates via Sparsification and Quantization"): an update is sent as a sparse ternary tensor.

Per tensor τ: keep the k = round(density · size) entries of largest |τ| (at least one; exact
zeros are never kept, their sign is undefined), store only their positions and signs, and ONE
scale α · std(τ) (std of the whole dense tensor). Decompressed: scale · sign(τ) at the kept
positions, 0 elsewhere. α is global and tuned on validation data (`tune_alpha`): scaling up the
survivors makes up for the mass that sparsification drops.

What is compressed for a LoRA adapter (workers/compression/lora.py): the adapter's own tensors,
A [r, in] and B [out, r], not the merged ΔW = B·A·alpha/r. ΔW of a rank-8 q/v adapter on
SmolLM2-135M has 13.3 M entries against the adapter's 0.46 M; a keep-bitmask over it alone
(1.7 MB) outweighs the fp16 adapter (0.92 MB), and to be 8× smaller than that adapter ΔW could
keep well under 1% of its entries. A and B compress well enough: bench/compeft.py measured
task loss within 2% of the adapter's at 13× smaller than the fp16 adapter (density 0.3), not
at density 0.2 and below. Two readings of "the task vector" of an adapter are left to the
caller:

- the tensors themselves (an adapter of zeros is the base model), or
- `task_vector(adapter, initial)`: the change from peft's seeded initialisation (B starts at 0,
  A at a Kaiming-uniform draw that the receiver regenerates from the seed; `apply_task_vector`
  adds it back): the paper's θ_ft - θ_init applied to the PEFT parameters. It keeps A's random
  basis exact. In bench/results/compeft.md it lost less than the plain tensors at 3 of 5
  densities and at most 0.3 points of relative loss more at the others (an earlier adapter on
  another split: less at all 4, by up to 3 points). Use it when the receiver can regenerate
  A0 (same seed, same peft initialisation).

Positions are held as the smallest unsigned integer type that fits them (uint16 up to 65,536
entries, else uint32, else int64) or as a packed bitmask, whichever takes fewer bytes; signs as
packed bits. `to_bytes` is the size that counts. Pure numpy; torch tensors are accepted as input.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"CPFT"
FORMAT_VERSION = 1
_RAW, _DEFLATE = 0, 1
_MASK = "mask"
MAX_EXTEND = 4  # tune_alpha: grid extensions past its end


@dataclass
class CompressedTensor:
    shape: tuple[int, ...]
    indices: np.ndarray  # sorted flat positions (uint16/uint32/int64), or packed keep-mask bits
    signs: np.ndarray  # packed bits, 1 = positive, one per kept entry in position order
    scale: float  # alpha * std(original tensor)
    count: int  # kept entries
    bitmask: bool = False  # `indices` is np.packbits(keep mask) over the flat tensor

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def positions(self) -> np.ndarray:
        """Sorted flat positions of the kept entries (int64)."""
        if self.bitmask:
            mask = np.unpackbits(self.indices, count=self.size).astype(bool)
            return np.flatnonzero(mask)
        return self.indices.astype(np.int64)

    def sign_values(self) -> np.ndarray:
        """+1.0 / -1.0 per kept entry, in position order."""
        bits = np.unpackbits(self.signs, count=self.count)
        return np.where(bits == 1, 1.0, -1.0).astype(np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.indices.nbytes + self.signs.nbytes)


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def _index_dtype(size: int) -> np.dtype:
    if size <= 1 << 16:
        return np.dtype(np.uint16)
    if size <= 1 << 32:
        return np.dtype(np.uint32)
    return np.dtype(np.int64)


def _check(density: float, alpha: float) -> None:
    if not 0.0 < density <= 1.0:  # also rejects NaN
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")


def compress_tensor(value: Any, density: float, alpha: float) -> CompressedTensor:
    """One tensor as described in the module docstring."""
    _check(density, alpha)
    array = _as_numpy(value)
    flat = array.astype(np.float64, copy=False).ravel()
    size = flat.size
    if size == 0:
        return CompressedTensor(tuple(array.shape), np.zeros(0, np.uint16),
                                np.zeros(0, np.uint8), 0.0, 0)
    k = min(size, max(1, round(density * size)))
    magnitude = np.abs(flat)
    keep = np.arange(size) if k == size else np.argpartition(magnitude, size - k)[size - k:]
    keep = np.sort(keep[magnitude[keep] > 0])
    scale = float(alpha * flat.std())
    signs = np.packbits(flat[keep] > 0)
    index_dtype = _index_dtype(size)
    if (size + 7) // 8 < keep.size * index_dtype.itemsize:
        mask = np.zeros(size, bool)
        mask[keep] = True
        return CompressedTensor(tuple(array.shape), np.packbits(mask), signs, scale,
                                int(keep.size), bitmask=True)
    return CompressedTensor(tuple(array.shape), keep.astype(index_dtype), signs, scale,
                            int(keep.size))


def compress(update: Mapping[str, Any], density: float,
             alpha: float) -> dict[str, CompressedTensor]:
    """Every tensor of `update` compressed with the same density and alpha. Raises ValueError
    for a density outside (0, 1] or an alpha that is not positive."""
    _check(density, alpha)
    return {name: compress_tensor(value, density, alpha) for name, value in update.items()}


def decompress_tensor(c: CompressedTensor) -> np.ndarray:
    out = np.zeros(c.size, np.float32)
    out[c.positions()] = c.sign_values() * np.float32(c.scale)
    return out.reshape(c.shape)


def decompress(c: Mapping[str, CompressedTensor]) -> dict[str, np.ndarray]:
    """float32 arrays of the original shapes: scale · sign at kept positions, 0 elsewhere."""
    return {name: decompress_tensor(t) for name, t in c.items()}


def task_vector(finetuned: Mapping[str, Any], initial: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """finetuned - initial, per tensor (same keys and shapes required)."""
    if set(finetuned) != set(initial):
        raise ValueError("finetuned and initial have different tensors")
    out = {}
    for name, value in finetuned.items():
        a, b = _as_numpy(value).astype(np.float32), _as_numpy(initial[name]).astype(np.float32)
        if a.shape != b.shape:
            raise ValueError(f"{name}: shape {a.shape} vs {b.shape}")
        out[name] = a - b
    return out


def apply_task_vector(initial: Mapping[str, Any], vector: Mapping[str, Any]
                      ) -> dict[str, np.ndarray]:
    """initial + vector, per tensor: the inverse of `task_vector`."""
    if set(initial) != set(vector):
        raise ValueError("initial and vector have different tensors")
    return {name: _as_numpy(value).astype(np.float32) + _as_numpy(vector[name])
            for name, value in initial.items()}


def to_bytes(c: Mapping[str, CompressedTensor], deflate: bool = True) -> bytes:
    """`CPFT`, a format byte (0 raw, 1 zlib), then (deflated or not): a little-endian uint32
    header length, a JSON header `{"v": 1, "t": [[name, shape, scale, count, index kind]]}`
    (index kind: "mask" or a numpy dtype string such as "<u2") and, per tensor in header order,
    its index bytes then its sign bytes. Array lengths follow from shape, count and kind.
    Positions are written as gaps (first position, then differences: same dtype, as they are
    sorted), which deflate far better than the positions themselves."""
    entries, arrays = [], []
    for name, t in c.items():
        kind = _MASK if t.bitmask else t.indices.dtype.str
        entries.append([name, list(t.shape), t.scale, t.count, kind])
        index = t.indices if t.bitmask else np.diff(t.indices, prepend=t.indices.dtype.type(0))
        arrays += [np.ascontiguousarray(index).tobytes(), np.ascontiguousarray(t.signs)
                   .tobytes()]
    header = json.dumps({"v": FORMAT_VERSION, "t": entries}, separators=(",", ":")).encode()
    body = struct.pack("<I", len(header)) + header + b"".join(arrays)
    if deflate:
        return MAGIC + bytes([_DEFLATE]) + zlib.compress(body, 9)
    return MAGIC + bytes([_RAW]) + body


def from_bytes(blob: bytes) -> dict[str, CompressedTensor]:
    """The inverse of `to_bytes`. Raises ValueError for anything it did not write."""
    if blob[:4] != MAGIC or len(blob) < 5 or blob[4] not in (_RAW, _DEFLATE):
        raise ValueError("not a ComPEFT blob")
    try:
        body = zlib.decompress(blob[5:]) if blob[4] == _DEFLATE else blob[5:]
        (length,) = struct.unpack_from("<I", body)
        header = json.loads(body[4:4 + length])
    except (zlib.error, struct.error, ValueError) as e:
        raise ValueError(f"corrupt ComPEFT blob: {e}") from e
    if header.get("v") != FORMAT_VERSION:
        raise ValueError(f"unsupported ComPEFT format {header.get('v')}")
    out, offset = {}, 4 + length
    for name, shape, scale, count, kind in header["t"]:
        size = math.prod(shape)
        if kind == _MASK:
            dtype, n_index = np.dtype(np.uint8), (size + 7) // 8
        else:
            dtype, n_index = np.dtype(kind), count
        n_sign = (count + 7) // 8
        end = offset + n_index * dtype.itemsize + n_sign
        if end > len(body):
            raise ValueError(f"corrupt ComPEFT blob: {name} runs past the end")
        indices = np.frombuffer(body, dtype, n_index, offset)
        indices = indices.copy() if kind == _MASK else np.cumsum(indices, dtype=dtype)
        signs = np.frombuffer(body, np.uint8, n_sign, offset + n_index * dtype.itemsize).copy()
        out[name] = CompressedTensor(tuple(shape), indices, signs, float(scale), int(count),
                                     bitmask=kind == _MASK)
        offset = end
    if offset != len(body):
        raise ValueError("corrupt ComPEFT blob: trailing bytes")
    return out


def tune_alpha(update: Mapping[str, Any], density: float,
               evaluate: Callable[[dict[str, np.ndarray]], float],
               alphas: Iterable[float] = (0.5, 1, 2, 4, 8, 16), refine: int = 0
               ) -> tuple[float, dict[float, float]]:
    """Compress `update` at `density` with each alpha, score the decompressed update with
    `evaluate` (lower is better: a validation loss) and return the best alpha (the smallest
    score; the first tried on a tie; NaN counts as worst) with every score, in the order tried.

    With `refine` > 0 the search goes on from the grid's best: while that is the grid's largest
    (smallest) alpha, try twice (half) it, at most MAX_EXTEND times; then `refine` rounds that
    try best·f and best/f with f = 2^(1/2), 2^(1/4), ... (values rounded to 4 digits)."""
    alphas = list(alphas)
    if not alphas:
        raise ValueError("no alphas to try")
    scores: dict[float, float] = {}

    def score(alpha: float) -> None:
        alpha = float(f"{alpha:.4g}")
        if alpha not in scores:
            scores[alpha] = float(evaluate(decompress(compress(update, density, alpha))))

    def best() -> float:
        return min(scores, key=lambda a: math.inf if math.isnan(scores[a]) else scores[a])

    for alpha in alphas:
        score(alpha)
    if refine > 0:
        for _ in range(MAX_EXTEND):
            current = best()
            if current == max(scores):
                score(current * 2)
            elif current == min(scores):
                score(current / 2)
            else:
                break
            if best() == current:
                break
        for round_ in range(refine):
            factor = 2 ** (2.0 ** -(round_ + 1))
            current = best()
            score(current / factor)
            score(current * factor)
    return best(), scores
