"""Tokenizer and chat template for serving: `tokenizers` (Rust) and jinja2 only, no transformers.

- `TextTokenizer` loads the exported `tokenizer.json` and `generation.json`. `encode` adds no
  BOS (`add_bos_token` is false for SmolLM2) and parses special-token strings in the text the way
  the HF tokenizer does, so `encode(apply_chat_template(m))` equals HF's chat ids.
- `apply_chat_template` renders the GGUF's own jinja template in a sandbox, with HF's
  environment settings (`trim_blocks`, `lstrip_blocks`, `raise_exception`).
- `IncrementalDecoder` turns a growing token list into text deltas for streaming. Byte-level BPE
  tokens can end inside a UTF-8 character; such a tail decodes to U+FFFD and is held back until
  the character completes, so deltas never split a character and their concatenation equals
  `decode(all ids)`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

ROLES = ("system", "user", "assistant")
_REPLACEMENT = "\ufffd"


class InvalidGenerationParam(ValueError):
    """A request parameter is unusable. `field` names it (for INVALID_ARGUMENT field violations),
    `problem` says why; str() is "field: problem"."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class TextTokenizer:
    def __init__(self, tokenizer_json: str | Path, config: dict):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.config = config
        self.eos_token_ids = frozenset(config.get("eos_token_ids", ()))
        self._template = None
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        inverse = {v: k for k, v in vocab.items()}
        self.bos_token = inverse.get(config.get("bos_token_id", -1), "")
        self.eos_token = inverse.get(min(self.eos_token_ids, default=-1), "")

    @classmethod
    def from_folder(cls, folder: str | Path) -> TextTokenizer:
        folder = Path(folder)
        config = json.loads((folder / "generation.json").read_text())
        return cls(folder / "tokenizer.json", config)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[dict],
                            add_generation_prompt: bool = True) -> str:
        """Renders `messages` ([{"role", "content"}], roles system/user/assistant) with the
        model's template. Raises InvalidGenerationParam("messages", ...) on bad input."""
        check_messages(messages)
        if self._template is None:
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                raise TemplateError(message)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            self._template = env.from_string(self.config["chat_template"])
        return self._template.render(
            messages=[{"role": m["role"], "content": m["content"]} for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token, eos_token=self.eos_token)

    def encode_messages(self, messages: Sequence[dict]) -> list[int]:
        return self.encode(self.apply_chat_template(messages))

    def incremental(self, skip_special_tokens: bool = True) -> IncrementalDecoder:
        return IncrementalDecoder(self, skip_special_tokens)


def check_messages(messages: Sequence[dict]) -> None:
    if not messages:
        raise InvalidGenerationParam("messages", "must not be empty")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidGenerationParam(f"messages[{i}].role", f"must be one of {ROLES}")
        if not isinstance(m.get("content"), str):
            raise InvalidGenerationParam(f"messages[{i}].content", "must be a string")


class IncrementalDecoder:
    """Feed token ids with `push`; get back the text they add. Decodes a short window
    (`prefix_offset`..end) each time instead of the whole list, like vLLM's detokenizer.

    `ends[k]` is the length of the text that is final after the first k+1 tokens (it lags while a
    character is incomplete); `tokens_covering(n)` is the shortest token prefix that produced the
    first n characters.
    """

    def __init__(self, tokenizer: TextTokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""
        self.ends: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, ids: Sequence[int]) -> str:
        out = []
        for token in ids:
            self.ids.append(int(token))
            out.append(self._step())
            self.ends.append(len(self.text))
        return "".join(out)

    def _step(self) -> str:
        decode = self.tokenizer.decode
        prefix = decode(self.ids[self._prefix_offset:self._read_offset], self.skip)
        full = decode(self.ids[self._prefix_offset:], self.skip)
        if len(full) > len(prefix) and not full.endswith(_REPLACEMENT):
            delta = full[len(prefix):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end, as U+FFFD)."""
        prefix = self.tokenizer.decode(self.ids[self._prefix_offset:self._read_offset], self.skip)
        full = self.tokenizer.decode(self.ids[self._prefix_offset:], self.skip)
        delta = full[len(prefix):]
        self._prefix_offset = self._read_offset = len(self.ids)
        self.text += delta
        if self.ends:
            self.ends[-1] = len(self.text)
        return delta

    def tokens_covering(self, n_chars: int) -> int:
        """The number of leading tokens needed to produce the first `n_chars` characters."""
        import bisect

        if n_chars <= 0:
            return 0
        return min(bisect.bisect_left(self.ends, n_chars) + 1, len(self.ids))
