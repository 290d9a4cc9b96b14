"""Tokenizer, chat template and incremental detokenization on the real exported tokenizer.json
(the export is built once and cached in ~/.cache/jobmesh/export)."""

from __future__ import annotations

import pytest

from workers.textgen.export import export_model
from workers.textgen.tokenizer import InvalidGenerationParam, TextTokenizer

SYSTEM_DEFAULT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  "Hugging Face<|im_end|>\n")


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.from_folder(export_model())


def test_chat_template_adds_default_system_and_generation_prompt(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == SYSTEM_DEFAULT + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(text)
    assert ids[0] == 1 and ids.count(2) == 2  # <|im_start|>, two <|im_end|> as single tokens


def test_chat_template_keeps_given_system(tok):
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Hello"},
                                    {"role": "user", "content": "Bye"}],
                                   add_generation_prompt=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "SmolLM" not in text and not text.endswith("assistant\n")


@pytest.mark.parametrize("messages, field", [
    ([], "messages"),
    ([{"role": "robot", "content": "x"}], "messages[0].role"),
    ([{"role": "user", "content": "ok"}, {"role": "user"}], "messages[1].content"),
])
def test_bad_messages_name_the_field(tok, messages, field):
    with pytest.raises(InvalidGenerationParam) as exc:
        tok.apply_chat_template(messages)
    assert exc.value.field == field and isinstance(exc.value, ValueError)


def test_encode_decode_round_trip(tok):
    text = "def f(x):\n    return x * 2  # naïve — 日本語 😀"
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", [
    "plain ascii text, with punctuation!",
    "héllo wörld — naïve café",
    "日本語のテキストと中文字符",
    "emoji 😀🎉👍🏽 and flags 🇫🇷",
    "mixed: \u0915\u094d\u0937 क्ष, ✓ ✗, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
])
def test_incremental_deltas_never_split_characters(tok, text):
    ids = tok.encode(text)
    dec = tok.incremental()
    deltas = [dec.push([t]) for t in ids]
    deltas.append(dec.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    # the prefix map finds the tokens that produced the first n characters
    for n in (1, len(text) // 2, len(text)):
        k = dec.tokens_covering(n)
        assert tok.decode(ids[:k]).startswith(text[:n])
        assert k == 0 or not tok.decode(ids[:k - 1]).startswith(text[:n])


def test_incremental_skips_special_tokens(tok):
    ids = tok.encode("<|im_start|>assistant\nHi<|im_end|>")
    dec = tok.incremental()
    assert dec.push(ids) + dec.flush() == "assistant\nHi"
