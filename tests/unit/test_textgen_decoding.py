"""The decoding engine on the real exported model: stop sequences, EOS, sampling, cancellation,
deadline, parameter and length guards, streaming deltas and batched generation."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workers.textgen.decoding import GenerationParams, Generator, sample
from workers.textgen.export import export_model
from workers.textgen.session import OrtSession, load_generator
from workers.textgen.speculation import TokenRecycler
from workers.textgen.tokenizer import InvalidGenerationParam

NEAR_TIE = 1e-4


class _GapRecorder(OrtSession):
    """Records the top-2 logit gap of each row's last position per call."""

    def __init__(self, path):
        super().__init__(path)
        self.gaps: list[np.ndarray] = []

    def run(self, feeds, stage="forward"):
        out = super().run(feeds, stage)
        last = out[0][:, -1]
        top2 = np.partition(last, -2, axis=-1)[:, -2:]
        self.gaps.append(top2[:, 1] - top2[:, 0])
        return out


@pytest.fixture(scope="module")
def gen() -> Generator:
    folder = export_model()
    return load_generator(folder, session=_GapRecorder(folder / "model.onnx"),
                          recycler_state=TokenRecycler(49152))


def chat(gen, text: str) -> list[int]:
    return gen.tokenizer.encode_messages([{"role": "user", "content": text}])


def test_greedy_generates_and_streams(gen):
    deltas = []
    res = gen.generate(chat(gen, "Name three primary colors."),
                       GenerationParams(max_new_tokens=12, speculation="off"),
                       on_delta=lambda text, ids: deltas.append((text, ids)))
    assert res.finish_reason in ("length", "eos") and 0 < len(res.token_ids) <= 12
    assert res.text == gen.tokenizer.decode(res.token_ids)
    assert "".join(t for t, _ in deltas) == res.text
    assert [i for _, ids in deltas for i in ids] == res.token_ids
    u = res.usage
    assert u.prompt_tokens > 0 and u.completion_tokens == len(res.token_ids)
    assert u.forward_passes == len(res.token_ids) + (res.finish_reason == "eos")
    assert 0 < res.first_token_seconds <= res.seconds


def test_eos_ends_generation_and_is_not_returned(gen):
    res = gen.generate(chat(gen, "What is 2+2? Answer with a number only."),
                       GenerationParams(max_new_tokens=30, speculation="off"))
    assert res.finish_reason == "eos" and "4" in res.text
    assert res.usage.forward_passes == len(res.token_ids) + 1  # the EOS was decoded too
    assert not set(res.token_ids) & set(gen.eos)


def test_stop_sequence_trims_text_and_is_never_streamed(gen):
    ids = chat(gen, "Count from 1 to 10, one number per line.")
    full = gen.generate(ids, GenerationParams(max_new_tokens=24, speculation="off"))
    assert "4" in full.text
    stop = full.text[full.text.index("4"):][:3]  # e.g. "4\n5": spans tokens
    deltas = []
    res = gen.generate(ids, GenerationParams(max_new_tokens=24, stop=["never-there", stop],
                                             speculation="auto"),
                       on_delta=lambda text, toks: deltas.append(text))
    assert res.finish_reason == "stop"
    assert res.text == full.text[:full.text.index(stop)]
    assert "".join(deltas) == res.text and stop not in "".join(deltas)
    assert gen.tokenizer.decode(res.token_ids).startswith(res.text)
    assert res.token_ids == full.token_ids[:len(res.token_ids)]
    assert res.usage.completion_tokens == len(res.token_ids)


def test_seeded_sampling_is_reproducible(gen):
    ids = chat(gen, "Write a sentence about the sea.")
    params = dict(max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=50)
    a = gen.generate(ids, GenerationParams(seed=7, **params))
    b = gen.generate(ids, GenerationParams(seed=7, **params))
    c = gen.generate(ids, GenerationParams(seed=8, **params))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    greedy = gen.generate(ids, GenerationParams(max_new_tokens=6, speculation="off"))
    top1 = gen.generate(ids, GenerationParams(max_new_tokens=6, temperature=0.8, top_k=1,
                                              seed=1))
    assert top1.token_ids == greedy.token_ids


def test_sample_filters():
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 5.0, 4.9, -3.0], np.float32)
    assert {sample(logits, 1.0, 1.0, 2, rng) for _ in range(200)} == {1, 2}
    assert {sample(logits, 1.0, 0.3, 0, rng) for _ in range(50)} == {1}
    seen = {sample(logits, 5.0, 1.0, 0, rng) for _ in range(400)}
    assert seen == {0, 1, 2, 3}


def test_should_stop_cancels_between_steps(gen):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    res = gen.generate(chat(gen, "Tell me about the moon."),
                       GenerationParams(max_new_tokens=50, speculation="off"),
                       should_stop=should_stop)
    assert res.finish_reason == "cancelled"
    assert 1 <= len(res.token_ids) <= 3
    assert res.usage.forward_passes == len(calls) - 1


def test_deadline_is_honoured(gen):
    ids = chat(gen, "Tell me about the moon.")
    res = gen.generate(ids, GenerationParams(max_new_tokens=50),
                       deadline=time.monotonic() - 1)
    assert res.finish_reason == "cancelled" and res.token_ids == []
    assert res.usage.forward_passes == 0 and res.first_token_seconds is None
    res = gen.generate(ids, GenerationParams(max_new_tokens=4),
                       deadline=time.monotonic() + 600)
    assert res.finish_reason == "length"


@pytest.mark.parametrize("change, field", [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -5}, "max_new_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"seed": -3}, "seed"),
    ({"stop": [""]}, "stop"),
    ({"speculation": "medusa"}, "speculation"),
])
def test_bad_parameters_name_the_field(gen, change, field):
    with pytest.raises(InvalidGenerationParam) as exc:
        gen.generate([1, 2, 3], GenerationParams(**change))
    assert exc.value.field == field and isinstance(exc.value, ValueError)


def test_context_window_guard_names_the_field(gen):
    ctx = gen.context_length
    with pytest.raises(InvalidGenerationParam) as exc:
        gen.generate([198] * (ctx - 10), GenerationParams(max_new_tokens=11))
    assert exc.value.field == "max_new_tokens" and str(ctx) in str(exc.value)
    with pytest.raises(InvalidGenerationParam) as exc:
        gen.generate([198] * ctx, GenerationParams(max_new_tokens=1))
    assert exc.value.field == "prompt"
    with pytest.raises(InvalidGenerationParam) as exc:
        gen.generate([], GenerationParams())
    assert exc.value.field == "prompt"
    with pytest.raises(InvalidGenerationParam) as exc:
        gen.generate([5, 10 ** 6], GenerationParams())
    assert exc.value.field == "prompt"
    with pytest.raises(InvalidGenerationParam) as exc:
        gen.generate_batch([[1, 2], [1] * ctx], [GenerationParams(), GenerationParams()])
    assert exc.value.field == "prompts[1]"


def test_batch_equals_individual_greedy(gen):
    texts = ["What is 2 + 2?", "Write a Python function that reverses a string.",
             "Describe the water cycle in detail, covering evaporation, condensation, "
             "precipitation and collection, and explain why each step matters for life on "
             "Earth.", "Hi"]
    prompts = [chat(gen, t) for t in texts] + [gen.tokenizer.encode("def add(a, b):")]
    params = [GenerationParams(max_new_tokens=n, speculation="off") for n in (10, 16, 12, 6, 14)]
    session = gen.session
    singles, gaps = [], []
    for p, gp in zip(prompts, params, strict=True):
        session.gaps.clear()
        singles.append(gen.generate(p, gp))
        gaps.append([g[0] for g in session.gaps])  # prefill fits one chunk: gaps[t] = token t
    deltas: dict[int, str] = {}
    batch = gen.generate_batch(prompts, params, on_delta=lambda r, text, ids: deltas.update(
        {r: deltas.get(r, "") + text}))
    near_ties = 0
    for r, (one, many) in enumerate(zip(singles, batch, strict=True)):
        assert many.finish_reason in ("length", "eos", "stop")
        assert deltas.get(r, "") == many.text
        if one.token_ids == many.token_ids:
            assert one.finish_reason == many.finish_reason
            continue
        d = next(i for i, (a, b) in enumerate(zip(one.token_ids + [-1], many.token_ids + [-1],
                                                  strict=False))
                 if a != b)
        assert gaps[r][d] < NEAR_TIE, (r, d, one.token_ids, many.token_ids)
        near_ties += 1
    print(f"batch vs single: {near_ties} near-tie divergences")
    # one prefill, then one batched forward per step until the longest row is done
    steps = max(len(b.token_ids) + (b.finish_reason == "eos") for b in batch)
    assert all(b.usage.forward_passes == steps for b in batch)


def test_batch_cancellation_and_mixed_params(gen):
    prompts = [chat(gen, "Tell me a joke."), chat(gen, "List five fruits.")]
    res = gen.generate_batch(prompts, [GenerationParams(max_new_tokens=40),
                                       GenerationParams(max_new_tokens=40)],
                             should_stop=lambda: True)
    assert [r.finish_reason for r in res] == ["cancelled", "cancelled"]
    params = [GenerationParams(max_new_tokens=8, temperature=0.9, seed=11),
              GenerationParams(max_new_tokens=8, stop=["\n"])]
    a = gen.generate_batch(prompts, params)
    b = gen.generate_batch(prompts, params)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert "\n" not in a[1].text


def test_model_calls_are_timed_as_prefill_and_decode():
    """Through the worker's ModelRunner: one `jobmesh_compute_duration_seconds` observation per
    forward, `prefill` per prompt chunk and `decode` per generation step, single and batched."""
    from prometheus_client import REGISTRY

    from shared.runners.onnx import ModelRunner

    folder = export_model()
    name = "smollm2-stage-test@v0"  # a model label of its own: other tests do not move it
    gen = load_generator(folder, session=ModelRunner(folder / "model.onnx", name),
                         recycler_state=TokenRecycler(49152), prefill_chunk=8)

    def calls(stage: str) -> float:
        return REGISTRY.get_sample_value("jobmesh_compute_duration_seconds_count",
                                         {"model": name, "stage": stage}) or 0.0

    prompt = chat(gen, "Name three colours.")
    chunks = -(-len(prompt) // 8)
    one = gen.generate(prompt, GenerationParams(max_new_tokens=5, speculation="auto"))
    assert calls("prefill") == chunks
    assert calls("decode") == one.usage.forward_passes - chunks > 0
    assert calls("forward") == 0
    both = gen.generate_batch([prompt, prompt[:5]], [GenerationParams(max_new_tokens=3)] * 2)
    assert calls("prefill") == 2 * chunks  # the batch is padded to the longer prompt
    assert calls("decode") == one.usage.forward_passes - chunks + \
        both[0].usage.forward_passes - chunks
