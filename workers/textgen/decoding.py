"""The decoding engine: prefill, KV-cached decoding, sampling, stop sequences, cancellation and
lossless speculative decoding, over any session with `run(feeds, stage) -> list[np.ndarray]`
and `input_names` (shared/runners/onnx.py's ModelRunner, or `session.OrtSession`).

Contract of `Generator.generate`:
- Greedy (temperature 0) output is the argmax chain of our own one-token-per-step decoding
  (`speculation="off"`). Every speculative mode returns the same tokens: a draft token is kept
  only when it equals the argmax of the verifying forward at its parent. A tree or multi-token
  forward sums floats in a different order than a one-token forward, so where the top two
  logits are within ~1e-4 (a near-tie) either token may come out; nothing else differs.
- Sampling (temperature > 0) uses a numpy Generator seeded with `seed` (random when None), in
  float64, top-k then top-p (nucleus) filtering; the same seed, prompt and parameters give the
  same tokens. Speculation is OFF while sampling (no accept/reject rule is implemented), so the
  output distribution is exactly the model's.
- Stop sequences match the decoded text; the text is cut before the first match, and
  `token_ids` are the shortest token prefix that produced the returned text. Streaming deltas
  hold back any tail that could still become a stop sequence, so a stop string is never
  streamed. The EOS token is not part of `token_ids` or `text`.
  `usage.completion_tokens == len(token_ids)`.
- `should_stop()` and `deadline` (time.monotonic()) are checked before every forward pass
  (prefill chunks included); either ends the request with finish_reason "cancelled" and the
  tokens produced so far.
- `prompt + max_new_tokens` must fit the context window; bad parameters raise
  `InvalidGenerationParam` (a ValueError) naming the field.

Prefill runs in chunks of `prefill_chunk` tokens (bounded memory). With an export that has the
`logits_index` input (v2), a chunk computes logits only for its last `prefill_logits` positions:
the vocabulary projection is a fifth of the compute per token, and those last positions still
feed Token Recycling's matrix with successor candidates from the prompt. A v1 export (no such
input) returns logits for every position and all of them feed the matrix.

Every forward names its stage, which ModelRunner records as the `stage` label of
`jobmesh_compute_duration_seconds` (one observation per model call, as Triton counts a model
execution): `prefill` for each prompt chunk, `decode` for each generation step (one token per
row in a batch, or one speculative tree verified in a single forward, which may accept several
tokens), `calibrate` for the start-up cost-curve forwards. Time to first token is then about the
request's prefill calls plus its first decode; the mean decode observation is the time per step.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workers.textgen.speculation import (
    CPU_TREE_NODES,
    GPU_TREE_NODES,
    Drafter,
    DraftTree,
    TokenRecycler,
    shared_recycler,
    size_tree,
)
from workers.textgen.tokenizer import IncrementalDecoder, InvalidGenerationParam

SPECULATION_MODES = ("off", "token_recycling", "prompt_lookup", "auto")
FINISH_REASONS = ("stop", "length", "eos", "cancelled")
MASK_MIN = -1e9  # the additive mask value the export uses (generation.json "mask_min")
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# Stage names of the model calls (the `stage` label of jobmesh_compute_duration_seconds).
PREFILL, DECODE, CALIBRATE = "prefill", "decode", "calibrate"


@dataclass
class GenerationParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    speculation: str = "auto"  # "off" | "token_recycling" | "prompt_lookup" | "auto"

    def validate(self) -> None:
        if not isinstance(self.max_new_tokens, numbers.Integral) or self.max_new_tokens < 1:
            raise InvalidGenerationParam("max_new_tokens", "must be a positive integer")
        if not isinstance(self.temperature, numbers.Real) or not np.isfinite(self.temperature) \
                or self.temperature < 0:
            raise InvalidGenerationParam("temperature", "must be >= 0")
        if not isinstance(self.top_p, numbers.Real) or not (0.0 < self.top_p <= 1.0):
            raise InvalidGenerationParam("top_p", "must be in (0, 1]")
        if not isinstance(self.top_k, numbers.Integral) or self.top_k < 0:
            raise InvalidGenerationParam("top_k", "must be >= 0 (0 = no limit)")
        if self.seed is not None and (not isinstance(self.seed, numbers.Integral)
                                      or self.seed < 0):
            raise InvalidGenerationParam("seed", "must be a non-negative integer")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidGenerationParam("stop", "stop sequences must be non-empty strings")
        if self.speculation not in SPECULATION_MODES:
            raise InvalidGenerationParam("speculation", f"must be one of {SPECULATION_MODES}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    forward_passes: int  # prefill chunks included
    accepted_draft_tokens: int  # draft tokens kept by verification (excludes the bonus token)
    draft_steps: int  # decoding steps that verified at least one draft token


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length" | "eos" | "cancelled"
    usage: Usage
    seconds: float
    first_token_seconds: float | None


class _Output:
    """Accumulates one request's tokens: EOS, length and stop checks, streaming deltas."""

    def __init__(self, tokenizer, params: GenerationParams, eos: frozenset[int],
                 on_delta: Callable[[str, list[int]], None] | None):
        self.decoder: IncrementalDecoder = tokenizer.incremental()
        self.params = params
        self.eos = eos
        self.on_delta = on_delta
        self.stops = list(params.stop)
        self.longest_stop = max((len(s) for s in self.stops), default=0)
        self.stop_at: int | None = None  # char index where a stop sequence starts
        self.finish: str | None = None
        self.generated = 0  # tokens produced, EOS included
        self._emitted_chars = 0
        self._emitted_tokens = 0
        self._searched = 0

    @property
    def ids(self) -> list[int]:
        return self.decoder.ids

    def add(self, tokens: Sequence[int]) -> int:
        """Takes tokens in order until one finishes the request; returns how many it took."""
        taken = 0
        for token in tokens:
            if self.finish:
                break
            taken += 1
            self.generated += 1
            if token in self.eos:
                self.finish = "eos"
                break
            self.decoder.push([token])
            if self.stops and self._find_stop():
                self.finish = "stop"
                break
            if self.generated >= self.params.max_new_tokens:
                self.finish = "length"
        self._emit(final=self.finish is not None)
        return taken

    def _find_stop(self) -> bool:
        text = self.decoder.text
        start = max(0, self._searched - self.longest_stop + 1)
        hits = [i for i in (text.find(s, start) for s in self.stops) if i >= 0]
        self._searched = len(text)
        if hits:
            self.stop_at = min(hits)
            return True
        return False

    def _holdback(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop sequence."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _emit(self, final: bool) -> None:
        if final and self.finish != "stop":
            self.decoder.flush()
        text = self.text
        upto = len(text) if final else len(text) - self._holdback(text)
        if upto <= self._emitted_chars and not final:
            return
        n_tokens = len(self.ids) if final and self.finish != "stop" else \
            self.decoder.tokens_covering(upto)
        delta = text[self._emitted_chars:upto]
        ids = self.ids[self._emitted_tokens:n_tokens]
        self._emitted_chars, self._emitted_tokens = upto, max(self._emitted_tokens, n_tokens)
        if self.on_delta is not None and (delta or ids):
            self.on_delta(delta, ids)

    @property
    def text(self) -> str:
        text = self.decoder.text
        return text[:self.stop_at] if self.stop_at is not None else text

    def cancel(self) -> None:
        self.finish = "cancelled"
        self._emit(final=True)

    def token_ids(self) -> list[int]:
        if self.finish == "stop":
            return self.ids[:self.decoder.tokens_covering(len(self.text))]
        return list(self.ids)


class Generator:
    """Decoding over one model session. One Generator per loaded model and process; it keeps no
    per-request state, so it may be reused for any number of requests (one at a time per
    thread: the session decides whether concurrent `run` calls are safe)."""

    def __init__(self, session, tokenizer, config: dict,
                 recycler_state: TokenRecycler | None = None, *, tree_nodes: int | None = None,
                 prefill_chunk: int = 256, prefill_logits: int = 32):
        self.session = session
        self.tokenizer = tokenizer
        self.config = config
        self.layers = int(config["num_layers"])
        self.kv_heads = int(config["num_kv_heads"])
        self.head_dim = int(config["head_dim"])
        self.vocab_size = int(config["vocab_size"])
        self.context_length = int(config["context_length"])
        self.eos = frozenset(int(t) for t in config["eos_token_ids"])
        self.pad_id = int(config.get("pad_token_id", min(self.eos)))
        self.mask_min = float(config.get("mask_min", MASK_MIN))
        self.kv_names = [f"past_key_values.{i}.{k}" for i in range(self.layers)
                         for k in ("key", "value")]
        self._out_index = self._output_order(session)
        self.recycler = recycler_state or shared_recycler(
            (config.get("model"), config.get("version")), self.vocab_size)
        providers = getattr(session, "providers", None) or []
        self.on_gpu = any(p in _GPU_PROVIDERS for p in providers)
        self.tree_nodes = tree_nodes or (GPU_TREE_NODES if self.on_gpu else CPU_TREE_NODES)
        self.prefill_chunk = max(1, prefill_chunk)
        self.prefill_logits = max(1, prefill_logits)
        self._has_index = "logits_index" in (getattr(session, "input_names", None) or ())

    def _output_order(self, session) -> list[int] | None:
        names = getattr(session, "output_names", None)
        if not names:
            return None  # assume the export's order: logits, present.0.key, present.0.value...
        want = ["logits"] + [n.replace("past_key_values.", "present.") for n in self.kv_names]
        index = {n: i for i, n in enumerate(names)}
        return [index[n] for n in want]

    # -- model calls -----------------------------------------------------------------------

    def _empty_kv(self, batch: int) -> list[np.ndarray]:
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32)
        return [empty] * (2 * self.layers)

    def _forward(self, ids: np.ndarray, pos: np.ndarray, mask: np.ndarray,
                 kv: list[np.ndarray], stage: str, last: int | None = None,
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decoder forward, timed under `stage` (PREFILL, DECODE, CALIBRATE). `last`:
        logits only for the last `last` positions (when the export supports it; otherwise all
        positions come back and are sliced here)."""
        n = ids.shape[1]
        keep = n if last is None else min(last, n)
        feeds = {"input_ids": ids.astype(np.int64, copy=False),
                 "position_ids": pos.astype(np.int64, copy=False),
                 "attention_mask": mask}
        if self._has_index:
            feeds["logits_index"] = np.arange(n - keep, n, dtype=np.int64)
        feeds.update(zip(self.kv_names, kv, strict=True))
        out = self.session.run(feeds, stage=stage)
        if self._out_index is not None:
            out = [out[i] for i in self._out_index]
        logits = out[0]
        if logits.shape[1] != keep:
            logits = logits[:, n - keep:]
        return logits, out[1:]

    def measure_cost_curve(self, sizes: Sequence[int] | None = None, past: int = 200,
                           repeats: int = 5) -> dict[int, float]:
        """Median seconds of one forward over n tokens after `past` cached tokens, for each n
        in `sizes` (default up to 32 on CPU, 96 on a GPU provider; interleaved runs after one
        warm-up each). About 3 s on the 2-core CPU."""
        if sizes is None:
            sizes = (1, 2, 4, 6, 8, 12, 16, 24, 32) + ((48, 64, 80, 96) if self.on_gpu else ())
        rng = np.random.default_rng(0)
        kv = [rng.standard_normal((1, self.kv_heads, past, self.head_dim)).astype(np.float32)
              for _ in range(2 * self.layers)]
        feeds = {}
        for n in sizes:
            ids = rng.integers(0, self.vocab_size, (1, n))
            feeds[n] = (ids, np.arange(past, past + n)[None],
                        np.zeros((1, 1, n, past + n), np.float32))
            self._forward(*feeds[n], kv, CALIBRATE)
        times: dict[int, list[float]] = {n: [] for n in sizes}
        for rep in range(repeats):
            for n in (sizes if rep % 2 == 0 else list(reversed(sizes))):
                t0 = time.perf_counter()
                self._forward(*feeds[n], kv, CALIBRATE)
                times[n].append(time.perf_counter() - t0)
        return {n: float(np.median(t)) for n, t in times.items()}

    def calibrate(self, **kwargs) -> dict[int, float]:
        """Measures the cost curve on this device and sizes the draft tree from it
        (`speculation.size_tree`); returns the curve. Call once per process, at start-up."""
        curve = self.measure_cost_curve(**kwargs)
        self.tree_nodes = size_tree(curve)
        return curve

    # -- validation ------------------------------------------------------------------------

    def check(self, prompt_ids: Sequence[int], params: GenerationParams,
              field_prefix: str = "") -> None:
        """Raises InvalidGenerationParam when the request cannot run."""
        params.validate()
        if not len(prompt_ids):
            raise InvalidGenerationParam(f"{field_prefix}prompt", "must not be empty")
        if len(prompt_ids) >= self.context_length:
            raise InvalidGenerationParam(
                f"{field_prefix}prompt", f"{len(prompt_ids)} tokens do not fit the context "
                f"window of {self.context_length}")
        if len(prompt_ids) + params.max_new_tokens > self.context_length:
            raise InvalidGenerationParam(
                f"{field_prefix}max_new_tokens",
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({params.max_new_tokens}) "
                f"exceeds the context window of {self.context_length}")
        bad = [t for t in prompt_ids if not 0 <= int(t) < self.vocab_size]
        if bad:
            raise InvalidGenerationParam(f"{field_prefix}prompt", f"token id {bad[0]} is out "
                                         f"of the vocabulary (0..{self.vocab_size - 1})")

    # -- single request --------------------------------------------------------------------

    def generate(self, prompt_ids: list[int], params: GenerationParams,
                 on_delta: Callable[[str, list[int]], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 deadline: float | None = None) -> GenerationResult:
        """Generates one completion (see the module docstring for the contract). `on_delta`
        receives (text delta, token ids) after each step that produced visible text."""
        self.check(prompt_ids, params)
        t0 = time.monotonic()
        mode = params.speculation if params.greedy else "off"
        drafter = Drafter(mode, self.recycler, self.tree_nodes)
        rng = np.random.default_rng(params.seed)
        out = _Output(self.tokenizer, params, self.eos, on_delta)
        prompt = np.asarray(prompt_ids, np.int64)
        # tokens seen so far (prompt + generated): prompt lookup searches it
        context = np.empty(len(prompt) + params.max_new_tokens, np.int64)
        context[:len(prompt)] = prompt
        length = len(prompt)
        forwards = accepted_drafts = draft_steps = 0
        first_token_s = None

        def stopped() -> bool:
            return bool((should_stop is not None and should_stop()) or
                        (deadline is not None and time.monotonic() >= deadline))

        kv = self._empty_kv(1)
        past = 0
        logits = None
        for start in range(0, len(prompt), self.prefill_chunk):
            if stopped():
                out.cancel()
                return self._result(out, prompt, forwards, 0, 0, t0, None)
            chunk = prompt[start:start + self.prefill_chunk]
            n = len(chunk)
            mask = np.zeros((1, 1, n, past + n), np.float32)
            mask[0, 0, :, past:] = np.triu(np.full((n, n), self.mask_min, np.float32), 1)
            logits, kv = self._forward(chunk[None], np.arange(past, past + n)[None], mask, kv,
                                       PREFILL, last=self.prefill_logits)
            forwards += 1
            self.recycler.update(chunk[n - logits.shape[1]:], logits[0])
            past += n
        token = self._choose(logits[0, -1], params, rng)
        out.add([token])
        first_token_s = time.monotonic() - t0
        context[length] = token
        length += 1

        while out.finish is None:
            if stopped():
                out.cancel()
                break
            remaining = params.max_new_tokens - out.generated
            tree = drafter.draft(context[:length], max_depth=remaining - 1)
            logits, present = self._verify(tree, past, kv)
            forwards += 1
            self.recycler.update(tree.tokens, logits)
            if params.greedy:
                greedy = np.argmax(logits, axis=-1)
                path = tree.accept(greedy)
                new_tokens = [int(t) for t in tree.tokens[path[1:]]] + [int(greedy[path[-1]])]
            else:
                path = [0]
                new_tokens = [self._choose(logits[0], params, rng)]
            drafter.feedback(path)
            kv = self._keep(present, past, path, len(tree))
            past += len(path)
            if tree.drafts:
                draft_steps += 1
            taken = out.add(new_tokens)
            accepted_drafts += min(len(path) - 1, taken)
            context[length:length + taken] = new_tokens[:taken]
            length += taken
        return self._result(out, prompt, forwards, accepted_drafts, draft_steps, t0,
                            first_token_s)

    def _verify(self, tree: DraftTree, past: int,
                kv: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward over the tree's nodes; returns logits [m, V] and the full present KV."""
        m = len(tree)
        mask = np.zeros((1, 1, m, past + m), np.float32)
        if m > 1:
            mask[0, 0, :, past:] = np.where(tree.ancestors(), 0.0, self.mask_min)
        pos = (past + tree.depth)[None]
        logits, present = self._forward(tree.tokens[None], pos, mask, kv, DECODE)
        return logits[0], present

    @staticmethod
    def _keep(present: list[np.ndarray], past: int, path: list[int], m: int) -> list[np.ndarray]:
        """The KV of the past plus the accepted nodes (their slices, in path order)."""
        if path == list(range(len(path))):
            if len(path) == m:
                return present
            return [p[:, :, :past + len(path)] for p in present]
        keep = np.concatenate([np.arange(past), past + np.asarray(path)])
        return [p[:, :, keep] for p in present]

    def _choose(self, logits: np.ndarray, params: GenerationParams,
                rng: np.random.Generator) -> int:
        if params.greedy:
            return int(np.argmax(logits))
        return sample(logits, params.temperature, params.top_p, params.top_k, rng)

    def _result(self, out: _Output, prompt: np.ndarray, forwards: int, accepted: int,
                draft_steps: int, t0: float, first_token_s: float | None) -> GenerationResult:
        ids = out.token_ids()
        return GenerationResult(
            token_ids=ids, text=out.text, finish_reason=out.finish or "cancelled",
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=len(ids),
                        forward_passes=forwards, accepted_draft_tokens=accepted,
                        draft_steps=draft_steps),
            seconds=time.monotonic() - t0, first_token_seconds=first_token_s)

    # -- batch -----------------------------------------------------------------------------

    def generate_batch(self, prompts: list[list[int]], params: list[GenerationParams],
                       on_delta: Callable[[int, str, list[int]], None] | None = None,
                       should_stop: Callable[[], bool] | None = None,
                       deadline: float | None = None) -> list[GenerationResult]:
        """Decodes several requests together: one batched forward per step over the rows still
        running. Prompts are left-padded to a common length; the mask hides each row's padding
        and position ids start at 0 on its first real token, so a row's tokens are those of
        `generate` with speculation off (up to float near-ties: batched matmuls sum in another
        order). Speculation is OFF inside batches (each row's `speculation` is ignored); rows
        that finish leave the batch (their KV rows are dropped). `on_delta` gets (row index,
        text delta, token ids). Cancellation and the deadline apply to all rows. Parameter
        errors name the row: `params[2].max_new_tokens`."""
        if len(prompts) != len(params):
            raise InvalidGenerationParam("params", "one GenerationParams per prompt")
        if not prompts:
            return []
        for i, (p, gp) in enumerate(zip(prompts, params, strict=True)):
            try:
                self.check(p, gp)
            except InvalidGenerationParam as exc:
                raise InvalidGenerationParam(f"params[{i}].{exc.field}" if exc.field !=
                                             "prompt" else f"prompts[{i}]", exc.problem) from exc
        t0 = time.monotonic()
        rows = len(prompts)
        rngs = [np.random.default_rng(gp.seed) for gp in params]
        outs = [_Output(self.tokenizer, gp, self.eos,
                        (lambda d, ids, r=r: on_delta(r, d, ids)) if on_delta else None)
                for r, gp in enumerate(params)]
        first_s: list[float | None] = [None] * rows
        forwards = 0

        def stopped() -> bool:
            return bool((should_stop is not None and should_stop()) or
                        (deadline is not None and time.monotonic() >= deadline))

        width = max(len(p) for p in prompts)
        pad = np.array([width - len(p) for p in prompts], np.int64)
        ids = np.full((rows, width), self.pad_id, np.int64)
        for r, p in enumerate(prompts):
            ids[r, pad[r]:] = p
        pos_all = np.maximum(np.arange(width)[None] - pad[:, None], 0)
        key_ok = np.arange(width)[None] >= pad[:, None]  # [rows, width] real tokens
        kv = self._empty_kv(rows)
        cancelled = False
        logits = None
        for start in range(0, width, self.prefill_chunk):
            if stopped():
                cancelled = True
                break
            end = min(width, start + self.prefill_chunk)
            n = end - start
            causal = np.tril(np.ones((n, end), bool), k=start)
            allowed = causal[None] & key_ok[:, None, :end]
            # a padding query would see nothing; let it see itself so softmax stays finite
            allowed[:, np.arange(n), start + np.arange(n)] |= ~key_ok[:, start:end]
            mask = np.where(allowed, 0.0, self.mask_min).astype(np.float32)[:, None]
            logits, kv = self._forward(ids[:, start:end], pos_all[:, start:end], mask, kv,
                                       PREFILL, last=1)
            forwards += 1
            real = key_ok[:, end - 1]  # rows whose padding ends before this column
            self.recycler.update(ids[real, end - 1], logits[real, 0])
        if cancelled:
            for o in outs:
                o.cancel()
            return [self._result(o, np.asarray(p), forwards, 0, 0, t0, None)
                    for o, p in zip(outs, prompts, strict=True)]

        active = list(range(rows))  # original row index of each batch row
        next_pos = np.array([len(p) for p in prompts], np.int64)
        last = logits[:, -1]
        while True:
            tokens = []
            for b, r in enumerate(active):
                token = self._choose(last[b], params[r], rngs[r])
                outs[r].add([token])
                if first_s[r] is None:
                    first_s[r] = time.monotonic() - t0
                tokens.append(token)
            keep = [b for b, r in enumerate(active) if outs[r].finish is None]
            if not keep:
                break
            if stopped():
                for b in keep:
                    outs[active[b]].cancel()
                break
            if len(keep) < len(active):
                kv = [k[keep] for k in kv]
                key_ok = key_ok[keep]
                next_pos = next_pos[keep]
                active = [active[b] for b in keep]
                tokens = [tokens[b] for b in keep]
            key_ok = np.concatenate([key_ok, np.ones((len(active), 1), bool)], axis=1)
            mask = np.where(key_ok, 0.0, self.mask_min).astype(np.float32)[:, None, None, :]
            logits, kv = self._forward(np.array(tokens, np.int64)[:, None], next_pos[:, None],
                                       mask, kv, DECODE)
            forwards += 1
            self.recycler.update(np.array(tokens, np.int64), logits[:, 0])
            next_pos = next_pos + 1
            last = logits[:, 0]
        return [self._result(o, np.asarray(p), forwards, 0, 0, t0, first_s[r])
                for r, (o, p) in enumerate(zip(outs, prompts, strict=True))]


def sample(logits: np.ndarray, temperature: float, top_p: float, top_k: int,
           rng: np.random.Generator) -> int:
    """One token from softmax(logits / temperature) restricted to the top-k (k > 0) and then
    to the smallest set whose probability reaches top_p. Deterministic for a given rng state."""
    x = logits.astype(np.float64) / temperature
    if 0 < top_k < len(x):
        idx = np.argpartition(-x, top_k - 1)[:top_k]
    else:
        idx = np.arange(len(x))
    if top_p < 1.0:
        idx = idx[np.lexsort((idx, -x[idx]))]  # by logit descending, ties by id
    vals = x[idx]
    probs = np.exp(vals - vals.max())
    probs /= probs.sum()
    if top_p < 1.0:
        cum = np.cumsum(probs)
        cut = int(np.searchsorted(cum, top_p)) + 1
        idx, probs = idx[:cut], probs[:cut] / cum[min(cut, len(cum)) - 1]
    else:
        idx = np.sort(idx)  # a fixed order for the inverse-CDF draw below
        probs = np.exp(x[idx] - x[idx].max())
        probs /= probs.sum()
    u = rng.random()
    choice = int(np.searchsorted(np.cumsum(probs), u, side="right"))
    return int(idx[min(choice, len(idx) - 1)])
