"""Perplexity and prefill latency of a decoder-step language model, and calibration feeds for it.

The model is any ONNX graph with the textgen export's interface (workers/textgen/export.py):
inputs `input_ids`, `position_ids`, a 4D additive `attention_mask`, optionally `logits_index`,
and `past_key_values.{i}.key/.value` [B, kv_heads, P, head_dim]; outputs `logits` then the
present KV. Compressed variants (int8, fp16 inside with fp32 IO, pruned) keep that interface, so
their KV shapes and IO dtypes are read from the graph's own input declarations.

Every window is one prefill with no past (P = 0) and a causal mask, as `decoding.Generator`
starts a request; the NLL of token t is taken from the logits at position t - 1, so a window of
n tokens scores n - 1 of them. Windows do not overlap and carry no context between them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.textgen.export import causal_mask, kv_input_names

_KV_PREFIX = "past_key_values."
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
           "tensor(double)": np.float64}


@dataclass
class LmEval:
    perplexity: float  # exp(mean NLL over every predicted token)
    tokens: int  # predicted tokens (window length - 1, summed over windows)
    latency_ms: float  # median prefill time per window


@dataclass(frozen=True)
class _KvSpec:
    name: str
    heads: int
    head_dim: int
    dtype: type


def _token_windows(tokenizer_json: Path, text: str, window: int, count: int) -> list[np.ndarray]:
    """The first `count` non-overlapping windows of `window` token ids (the last may be
    shorter); windows under 2 tokens predict nothing and are dropped."""
    from tokenizers import Tokenizer

    if window < 2 or count < 1:
        raise ValueError("need window >= 2 and at least one window")
    # No special tokens: SmolLM2 adds no BOS (generation.json "add_bos_token": false).
    ids = Tokenizer.from_file(str(tokenizer_json)).encode(text, add_special_tokens=False).ids
    windows = [np.asarray(ids[i:i + window], np.int64) for i in range(0, len(ids), window)]
    windows = [w for w in windows if len(w) >= 2][:count]
    if not windows:
        raise ValueError(f"text gives {len(ids)} tokens; need at least 2")
    return windows


def _prefill_feeds(ids: np.ndarray, kv: Sequence[_KvSpec], mask_dtype: type,
                   logits_index: np.ndarray | None) -> dict[str, np.ndarray]:
    n = len(ids)
    # -1e9 is -inf in fp16; clip to the dtype's own minimum so an fp16-IO graph sees a finite
    # mask as the fp32 one does.
    floor = np.finfo(mask_dtype).min
    mask = np.maximum(causal_mask(1, n, 0), floor).astype(mask_dtype)
    feeds = {"input_ids": ids[None], "position_ids": np.arange(n, dtype=np.int64)[None],
             "attention_mask": mask}
    if logits_index is not None:
        feeds["logits_index"] = logits_index
    for spec in kv:
        feeds[spec.name] = np.zeros((1, spec.heads, 0, spec.head_dim), spec.dtype)
    return feeds


def _session_layout(session) -> tuple[list[_KvSpec], type, bool]:
    """(KV specs, mask dtype, has logits_index) from the graph's input declarations; raises
    ValueError for inputs this module does not know how to feed."""
    kv, mask_dtype, has_index = [], np.float32, False
    for arg in session.get_inputs():
        if arg.name.startswith(_KV_PREFIX):
            heads, head_dim = arg.shape[1], arg.shape[3]
            if not isinstance(heads, int) or not isinstance(head_dim, int):
                raise ValueError(f"{arg.name}: KV heads and head_dim must be fixed, got "
                                 f"{arg.shape}")
            kv.append(_KvSpec(arg.name, heads, head_dim, _DTYPES[arg.type]))
        elif arg.name == "attention_mask":
            mask_dtype = _DTYPES[arg.type]
        elif arg.name == "logits_index":
            has_index = True
        elif arg.name not in ("input_ids", "position_ids"):
            raise ValueError(f"unexpected model input {arg.name!r}")
    return kv, mask_dtype, has_index


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits [k, V]."""
    logits = logits.astype(np.float64)
    peak = logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[:, 0]
    return log_z - logits[np.arange(len(targets)), targets]


def evaluate_lm(model: Path, tokenizer_json: Path, text: str, window: int = 128,
                max_windows: int = 8,
                providers: Sequence[str] = ("CPUExecutionProvider",)) -> LmEval:
    """Perplexity of `model` on the first `max_windows` windows of `window` tokens of `text`
    (see the module docstring), and the median prefill latency per window after one untimed
    warm-up call. Raises ValueError when the text has under 2 tokens or the model's inputs are
    not the export's."""
    import onnxruntime as ort

    windows = _token_windows(tokenizer_json, text, window, max_windows)
    session = ort.InferenceSession(str(model), providers=list(providers))
    kv, mask_dtype, has_index = _session_layout(session)
    outputs = [o.name for o in session.get_outputs()]
    logits_at = outputs.index("logits") if "logits" in outputs else 0

    def feeds_for(ids: np.ndarray) -> dict[str, np.ndarray]:
        # Positions 0..n-2 predict tokens 1..n-1; the last position predicts nothing we have.
        index = np.arange(len(ids) - 1, dtype=np.int64) if has_index else None
        return _prefill_feeds(ids, kv, mask_dtype, index)

    session.run([outputs[logits_at]], feeds_for(windows[0]))  # warm-up
    total, count, times = 0.0, 0, []
    for ids in windows:
        feeds = feeds_for(ids)
        t0 = time.perf_counter()
        logits = session.run([outputs[logits_at]], feeds)[0]
        times.append(time.perf_counter() - t0)
        nll = _nll(logits[0, :len(ids) - 1], ids[1:])
        total += float(nll.sum())
        count += len(nll)
    return LmEval(perplexity=math.exp(total / count), tokens=count,
                  latency_ms=float(np.median(times)) * 1000)


def calibration_feeds(tokenizer_json: Path, text: str, window: int = 64, count: int = 4,
                      config: dict | None = None) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime feed dicts for calibrating the LM (static quantisation, Wanda activation
    norms): prefills of the first `count` windows of `window` tokens of `text`, no past, fp32
    mask and KV, with `logits_index` covering every position so the vocabulary projection sees
    all of them. The KV layout comes from `config` (generation.json: num_layers, num_kv_heads,
    head_dim), read from the tokenizer's folder when not given."""
    if config is None:
        config = json.loads((Path(tokenizer_json).parent / "generation.json").read_text())
    layers, heads, head_dim = (int(config[k]) for k in ("num_layers", "num_kv_heads",
                                                          "head_dim"))
    kv = [_KvSpec(name, heads, head_dim, np.float32) for name in kv_input_names(layers)]
    return [_prefill_feeds(ids, kv, np.float32, np.arange(len(ids), dtype=np.int64))
            for ids in _token_windows(tokenizer_json, text, window, count)]

