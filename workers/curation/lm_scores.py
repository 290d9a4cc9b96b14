"""Per-document language-model statistics: how surprised a reference LM is by a text (mean
negative log-likelihood) and how uncertain it expected to be (mean entropy of its predictive
distributions), for curation signals such as perplexity filters and machine-text detection.

The LM is an ONNX decoder step with the textgen export's interface (workers/textgen/export.py),
run the way `workers.compression.evaluate.lm_perplexity` runs it: each window of tokens is one
prefill with no past and a causal mask, and token t is scored by the logits at position t - 1,
so a window of n tokens scores n - 1 of them. Windows do not overlap and carry no context.

Only the first `max_tokens` tokens of a text are read (no BOS: SmolLM2 adds none). Windows of
all texts in a call are sorted by length and run `batch_size` at a time, right-padded: under a
causal mask a padded tail cannot change the positions before it, so a batched window scores as
it would alone (up to float summation order).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.textgen.export import causal_mask

_KV_PREFIX = "past_key_values."
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
           "tensor(double)": np.float64}
_CHARS_PER_TOKEN_CAP = 64  # text read per wanted token before tokenizing (long documents)


@dataclass
class LmScores:
    tokens: int  # tokens scored (each window's first token has no prediction)
    mean_nll: float  # nats per token: the log-perplexity
    perplexity: float  # exp(mean_nll)
    mean_entropy: float  # mean over scored positions of the predictive entropy, nats

    @classmethod
    def empty(cls) -> LmScores:
        """A text with under 2 tokens: nothing to score, every value NaN."""
        return cls(tokens=0, mean_nll=math.nan, perplexity=math.nan, mean_entropy=math.nan)


def nll_and_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `logits` [k, V]: the NLL of `targets` [k] and the entropy of softmax(row),
    both in nats, computed in float64."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    z = e.sum(axis=-1)
    log_z = np.log(z)
    nll = log_z - x[np.arange(len(targets)), targets]
    entropy = log_z - (e * x).sum(axis=-1) / z
    return nll, entropy


class LmScorer:
    """Loads the model once; `score` maps texts to a same-length list of LmScores."""

    def __init__(self, model: Path, tokenizer_json: Path, *, max_tokens: int = 256,
                 window: int = 128, batch_size: int = 4, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if window < 2 or max_tokens < 2 or batch_size < 1:
            raise ValueError("need window >= 2, max_tokens >= 2 and batch_size >= 1")
        self.max_tokens, self.window, self.batch_size = max_tokens, window, batch_size
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get("JOBMESH_ORT_THREADS", "0"))
        self.session = ort.InferenceSession(str(model), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self._read_inputs()

    def _read_inputs(self) -> None:
        """KV shapes and IO dtypes from the graph's declarations, so compressed variants (fp16
        inside, fp32 IO, or fp16 IO) are fed what they declare."""
        self._kv: list[tuple[str, int, int, type]] = []
        self._mask_dtype: type = np.float32
        self._has_index = False
        for arg in self.session.get_inputs():
            if arg.name.startswith(_KV_PREFIX):
                heads, head_dim = arg.shape[1], arg.shape[3]
                if not isinstance(heads, int) or not isinstance(head_dim, int):
                    raise ValueError(f"{arg.name}: KV heads and head_dim must be fixed")
                self._kv.append((arg.name, heads, head_dim, _DTYPES[arg.type]))
            elif arg.name == "attention_mask":
                self._mask_dtype = _DTYPES[arg.type]
            elif arg.name == "logits_index":
                self._has_index = True
            elif arg.name not in ("input_ids", "position_ids"):
                raise ValueError(f"unexpected model input {arg.name!r}")
        outputs = [o.name for o in self.session.get_outputs()]
        self._logits_name = "logits" if "logits" in outputs else outputs[0]

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """The first `max_tokens` token ids of each text."""
        cap = self.max_tokens * _CHARS_PER_TOKEN_CAP  # far past the last token kept
        encoded = self.tokenizer.encode_batch([t[:cap] for t in texts],
                                              add_special_tokens=False)
        return [e.ids[:self.max_tokens] for e in encoded]

    def score(self, texts: list[str]) -> list[LmScores]:
        """LmScores for each text (see the module docstring); a text with under 2 tokens gets
        `LmScores.empty()`."""
        windows: list[tuple[int, np.ndarray]] = []  # (text index, ids)
        for i, ids in enumerate(self.token_ids(texts)):
            for start in range(0, len(ids), self.window):
                chunk = ids[start:start + self.window]
                if len(chunk) >= 2:
                    windows.append((i, np.asarray(chunk, np.int64)))
        windows.sort(key=lambda w: -len(w[1]))
        sums = np.zeros((len(texts), 3))  # tokens, nll, entropy
        for b in range(0, len(windows), self.batch_size):
            batch = windows[b:b + self.batch_size]
            for (i, ids), logits in zip(batch, self._forward([w for _, w in batch]),
                                        strict=True):
                nll, entropy = nll_and_entropy(logits[:len(ids) - 1], ids[1:])
                sums[i] += (len(nll), nll.sum(), entropy.sum())
        out = []
        for tokens, nll, entropy in sums:
            if tokens == 0:
                out.append(LmScores.empty())
                continue
            mean_nll = float(nll / tokens)
            out.append(LmScores(tokens=int(tokens), mean_nll=mean_nll,
                                perplexity=math.exp(mean_nll),
                                mean_entropy=float(entropy / tokens)))
        return out

    def _forward(self, windows: list[np.ndarray]) -> np.ndarray:
        """Logits [B, n - 1, V] of the positions that predict a token, for windows right-padded
        to the longest length n."""
        n = max(len(w) for w in windows)
        ids = np.zeros((len(windows), n), np.int64)  # id 0 pads; padding is never read
        for row, w in enumerate(windows):
            ids[row, :len(w)] = w
        floor = np.finfo(self._mask_dtype).min  # an fp16 mask stays finite
        mask = np.maximum(causal_mask(len(windows), n, 0), floor).astype(self._mask_dtype)
        feeds = {"input_ids": ids,
                 "position_ids": np.tile(np.arange(n, dtype=np.int64), (len(windows), 1)),
                 "attention_mask": mask}
        if self._has_index:
            feeds["logits_index"] = np.arange(n - 1, dtype=np.int64)
        for name, heads, head_dim, dtype in self._kv:
            feeds[name] = np.zeros((len(windows), heads, 0, head_dim), dtype)
        logits = self.session.run([self._logits_name], feeds)[0]
        return logits[:, :n - 1]
