"""Streaming sample-rate conversion in numpy: a polyphase Kaiser-windowed sinc filter.

Why our own: scipy (``resample_poly``) is not a dependency of the workers, and a file hours long
must be converted block by block with output identical to converting it whole. ``Resampler``
keeps the input samples its filter still needs between ``push`` calls, so block boundaries
leave no trace (tested against a single call: equal to float32 rounding, ~2e-7).

Output sample ``n`` sits at input time ``n * down / up`` for the exact ratio
``target/source = up/down`` (44.1 kHz -> 16 kHz is 160/441): one of ``up`` phases, each with its
own precomputed row of taps. Two ways to apply them, same numbers:

- common rates: ``G`` consecutive groups of ``up`` outputs read one contiguous stretch of input,
  so a whole run of outputs is one matrix product (input windows x a banded tap matrix). BLAS
  makes that 40-50x faster than per-sample dot products although it multiplies some zeros
  (one core here: ~3,000x real time from 11.025-48 kHz, ~560x from 384 kHz).
- odd rates (44,099 Hz: 16,000 phases) would need a huge banded matrix: each output gathers its
  window instead, and the taps interpolate linearly between ``MAX_PHASES`` rows (accurate to
  float32 rounding: -140 dB against exact phases). ~75x real time: slower, and rare.

Quality (tests measure it): flat to 0.1 dB up to ~0.86 x the output Nyquist (6.9 kHz at 16 kHz),
-5 dB at 7.5 kHz, below -65 dB from the output Nyquist on. The transition band (6.9-8 kHz at
16 kHz) touches only YAMNet's top mel bands (which end at 7.5 kHz) and lies above the speech
band the VAD uses.
"""

from __future__ import annotations

import math

import numpy as np

ZERO_CROSSINGS = 32  # per side of the sinc: filter length, i.e. transition width vs cost
ROLLOFF = 0.94  # cutoff as a fraction of the lower of the two Nyquist frequencies
KAISER_BETA = 8.0  # about -80 dB sidelobes
MAX_PHASES = 1024  # table rows when the exact ratio has more phases (odd rates)
_MAX_MATRIX = 1 << 22  # elements of the banded matrix (16 MB); above, use the gather path
_CHUNK_ELEMENTS = 1 << 20  # temporary elements per step (4 MB): bounds memory per push


class Resampler:
    """Converts one mono float32 stream from ``source_rate`` to ``target_rate``.

    ``push(samples)`` returns the output that the input so far determines: the filter looks
    ``half_taps`` input samples ahead, and whole runs of outputs are computed at once, so the
    output lags the input a little. ``finish()`` treats the stream as ending in silence and
    returns the rest. Together they return ``ceil(n_in * target_rate / source_rate)`` samples,
    centred as ``scipy.signal.resample_poly`` centres them (output 0 is at input 0, no delay).
    """

    def __init__(self, source_rate: int, target_rate: int):
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError("sample rates must be positive")
        g = math.gcd(int(source_rate), int(target_rate))
        self.up = int(target_rate) // g
        self.down = int(source_rate) // g
        self._phases = min(self.up, MAX_PHASES)
        self._table, self.half_taps = _kernel_table(self.up, self.down, self._phases)
        self._matrix = self._banded_matrix()
        # Input buffer and the absolute index of its first sample; the zeros stand for the
        # silence before the stream starts.
        self._buf = np.zeros(self.half_taps, np.float32)
        self._buf0 = -self.half_taps
        self._n_in = 0
        self._n_out = 0  # next output index
        self._finished = False

    @property
    def passthrough(self) -> bool:
        return self.up == self.down

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self._finished:
            raise RuntimeError("push after finish")
        samples = np.asarray(samples, np.float32).reshape(-1)
        self._n_in += len(samples)
        if self.passthrough:
            return samples.copy()
        self._buf = np.concatenate([self._buf, samples])
        # Output n needs input up to floor(n * down / up) + half_taps.
        last_in = self._buf0 + len(self._buf) - 1 - self.half_taps
        n_end = ((last_in + 1) * self.up + self.down - 1) // self.down  # exclusive
        if self._matrix is not None:
            n_end -= n_end % self._block  # whole runs only
        return self._emit(n_end)

    def finish(self) -> np.ndarray:
        """The remaining output, with silence after the last input sample."""
        if self._finished or self.passthrough:
            self._finished = True
            return np.zeros(0, np.float32)
        self._finished = True
        n_total = -(-self._n_in * self.up // self.down)  # ceil
        n_end = n_total
        if self._matrix is not None:
            n_end += -n_end % self._block
        # Enough trailing silence for the last output's window.
        last_base = ((n_end - 1) * self.down) // self.up if n_end else 0
        pad = max(0, last_base + self.half_taps + 1 - (self._buf0 + len(self._buf)))
        self._buf = np.concatenate([self._buf, np.zeros(pad, np.float32)])
        out = self._emit(n_end)
        return out[: max(0, len(out) - (n_end - n_total))]

    def _emit(self, n_end: int) -> np.ndarray:
        if n_end <= self._n_out:
            return np.zeros(0, np.float32)
        if self._matrix is not None:
            out = self._emit_blocks(n_end)
        else:
            out = self._emit_gather(n_end)
        self._n_out = n_end
        # Keep only what the next output still needs.
        next_base = (self._n_out * self.down) // self.up
        drop = max(0, next_base - self.half_taps + 1 - self._buf0)
        if drop:
            self._buf = self._buf[drop:]
            self._buf0 += drop
        return out

    def _banded_matrix(self) -> np.ndarray | None:
        """(window, block) matrix: column m holds output m's taps at its input offset."""
        if self.passthrough or self._phases != self.up:
            return None
        taps = 2 * self.half_taps
        groups = max(1, round(taps / self.down))  # input span per run ~ filter length
        block = groups * self.up
        window = ((block - 1) * self.down) // self.up + taps
        if window * block > _MAX_MATRIX:
            return None
        matrix = np.zeros((window, block), np.float32)
        for m in range(block):
            offset = (m * self.down) // self.up
            matrix[offset:offset + taps, m] = self._table[(m * self.down) % self.up]
        self._block, self._hop, self._window = block, groups * self.down, window
        return matrix

    def _emit_blocks(self, n_end: int) -> np.ndarray:
        first, count = self._n_out // self._block, (n_end - self._n_out) // self._block
        # Run b reads input from b * hop - half_taps + 1 on.
        start = first * self._hop - self.half_taps + 1 - self._buf0
        rows_per_step = max(1, _CHUNK_ELEMENTS // self._window)
        windows = np.lib.stride_tricks.sliding_window_view(self._buf, self._window)
        parts = []
        for r in range(0, count, rows_per_step):
            n = min(rows_per_step, count - r)
            rows = windows[start + r * self._hop: start + (r + n - 1) * self._hop + 1: self._hop]
            parts.append((rows @ self._matrix).reshape(-1))
        return np.concatenate(parts)

    def _emit_gather(self, n_end: int) -> np.ndarray:
        count = n_end - self._n_out
        out = np.empty(count, np.float32)
        offsets = np.arange(-self.half_taps + 1, self.half_taps + 1)
        step = max(1, _CHUNK_ELEMENTS // len(offsets))
        for start in range(0, count, step):
            n = np.arange(self._n_out + start, self._n_out + min(count, start + step),
                          dtype=np.int64)
            pos = n * self.down
            base = pos // self.up  # input sample at or before output n
            rows = (pos % self.up) * self._phases  # phase, in 1/(up * phases) samples
            r0 = rows // self.up
            taps = self._table[r0]
            if self._phases != self.up:  # between neighbouring phase rows
                w = ((rows % self.up) / self.up).astype(np.float32)[:, None]
                taps = taps + w * (self._table[r0 + 1] - taps)
            window = self._buf[(base - self._buf0)[:, None] + offsets]
            out[start:start + len(n)] = np.einsum("ij,ij->i", window, taps)
        return out


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """One-shot conversion of a whole mono signal (same output as streaming it)."""
    r = Resampler(source_rate, target_rate)
    return np.concatenate([r.push(samples), r.finish()])


def _kernel_table(up: int, down: int, phases: int) -> tuple[np.ndarray, int]:
    """Rows of taps for phases p/phases (p = 0..phases) of an input-sample step.

    Row p, tap j (j = -half+1..half) weights input sample ``base + j`` for an output at input
    time ``base + p/phases``. Each row is normalised to unit sum so DC passes exactly.
    """
    cutoff = ROLLOFF * min(1.0, up / down)  # fraction of the input Nyquist
    half_width = ZERO_CROSSINGS / cutoff  # in input samples
    half = int(math.ceil(half_width))
    j = np.arange(-half + 1, half + 1, dtype=np.float64)
    phase = np.arange(phases + 1, dtype=np.float64)[:, None] / phases
    t = phase - j[None, :]  # distance from the output instant to each input sample
    inside = np.abs(t) < half_width
    window = np.zeros_like(t)
    window[inside] = np.i0(KAISER_BETA * np.sqrt(1.0 - (t[inside] / half_width) ** 2))
    kernel = cutoff * np.sinc(cutoff * t) * window / np.i0(KAISER_BETA)
    kernel /= kernel.sum(axis=1, keepdims=True)
    return kernel.astype(np.float32), half
