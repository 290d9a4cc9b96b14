"""ComPEFT compression (sparsify to top-k by magnitude, one sign bit each, one scale per tensor)
and the LoRA helpers that need no model: on small seeded random tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.compression import compeft


def _update(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"layer.lora_A.weight": rng.standard_normal((8, 96)).astype(np.float32),
            "layer.lora_B.weight": rng.standard_normal((64, 8)).astype(np.float32) * 0.01,
            "big": rng.standard_normal((300, 300)).astype(np.float32)}  # > 65,536 entries


@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.3, 0.9, 1.0])
def test_round_trip_keeps_top_k_with_signs_and_scale(density):
    update = _update()
    alpha = 2.5
    restored = compeft.decompress(compeft.compress(update, density, alpha))
    assert set(restored) == set(update)
    for name, value in update.items():
        out = restored[name]
        assert out.shape == value.shape and out.dtype == np.float32
        k = max(1, round(density * value.size))
        top = set(np.argsort(-np.abs(value).ravel(), kind="stable")[:k].tolist())
        kept = set(np.flatnonzero(out.ravel()).tolist())
        assert kept == top
        scale = alpha * float(value.astype(np.float64).std())
        flat_in, flat_out = value.ravel(), out.ravel()
        idx = np.array(sorted(kept))
        np.testing.assert_allclose(np.abs(flat_out[idx]), scale, rtol=1e-6)
        assert np.array_equal(np.sign(flat_out[idx]), np.sign(flat_in[idx]))


def test_positions_use_the_smaller_of_indices_and_bitmask():
    value = np.random.default_rng(1).standard_normal((8, 96))
    sparse = compeft.compress_tensor(value, 0.02, 1.0)  # 15 entries: uint16 beats 96 mask bytes
    assert not sparse.bitmask and sparse.indices.dtype == np.uint16
    dense = compeft.compress_tensor(value, 0.5, 1.0)  # 384 entries: the mask is smaller
    assert dense.bitmask and dense.indices.nbytes == value.size // 8
    big = compeft.compress_tensor(np.random.default_rng(2).standard_normal(70_000), 0.01, 1.0)
    assert big.indices.dtype == np.uint32
    for c in (sparse, dense, big):
        assert c.signs.nbytes == math.ceil(c.count / 8)


def test_zeros_are_never_kept():
    value = np.zeros(100, np.float32)
    value[[3, 50]] = [2.0, -1.0]
    c = compeft.compress_tensor(value, 0.5, 1.0)
    assert c.count == 2
    out = compeft.decompress_tensor(c)
    assert np.flatnonzero(out).tolist() == [3, 50] and out[3] > 0 > out[50]


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    value = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    out = compeft.decompress(compeft.compress({"w": value}, 0.25, 1.0))["w"]
    assert np.count_nonzero(out) == 64


@pytest.mark.parametrize("density", [0.0, -0.1, 1.01, float("nan")])
def test_density_outside_unit_interval_is_rejected(density):
    with pytest.raises(ValueError, match="density"):
        compeft.compress(_update(), density, 1.0)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("inf")])
def test_bad_alpha_is_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        compeft.compress(_update(), 0.1, alpha)


@pytest.mark.parametrize("deflate", [True, False])
def test_bytes_round_trip(deflate):
    for density in (0.01, 0.2, 0.7):
        c = compeft.compress(_update(), density, 1.5)
        back = compeft.from_bytes(compeft.to_bytes(c, deflate=deflate))
        assert list(back) == list(c)
        for name, t in c.items():
            b = back[name]
            assert (b.shape, b.scale, b.count, b.bitmask) == (t.shape, t.scale, t.count,
                                                               t.bitmask)
            assert np.array_equal(compeft.decompress_tensor(b), compeft.decompress_tensor(t))


def test_size_shrinks_with_density():
    update = _update()
    dense_bytes = sum(v.nbytes for v in update.values())
    sizes = {d: len(compeft.to_bytes(compeft.compress(update, d, 1.0)))
             for d in (0.01, 0.05, 0.1, 0.2, 0.5)}
    ordered = [sizes[d] for d in sorted(sizes)]
    assert ordered == sorted(ordered) and ordered[0] < ordered[-1] / 4
    # 1% of entries: positions + signs cost far less than a tenth of the fp32 tensors
    assert sizes[0.01] < dense_bytes / 30
    # without deflate the size is the arrays plus a small header
    c = compeft.compress(update, 0.1, 1.0)
    payload = sum(t.nbytes for t in c.values())
    assert payload < len(compeft.to_bytes(c, deflate=False)) < payload + 512


@pytest.mark.parametrize("blob", [b"", b"XXXX\x00", b"CPFT\x07abc", b"CPFT\x01not zlib"])
def test_foreign_bytes_are_rejected(blob):
    with pytest.raises(ValueError):
        compeft.from_bytes(blob)


def test_truncated_bytes_are_rejected():
    blob = compeft.to_bytes(compeft.compress(_update(), 0.1, 1.0), deflate=False)
    with pytest.raises(ValueError):
        compeft.from_bytes(blob[:-3])


def test_tune_alpha_picks_the_minimum():
    update = _update()
    target = 3.0 * float(update["big"].std())

    def evaluate(restored):  # best when the kept magnitude is 3 std
        return abs(float(np.abs(restored["big"]).max()) - target)

    best, scores = compeft.tune_alpha(update, 0.1, evaluate, alphas=(0.5, 1, 2, 3, 4, 8))
    assert best == 3 and list(scores) == [0.5, 1, 2, 3, 4, 8]
    assert scores[3] == pytest.approx(0, abs=1e-5)
    nan_first, _ = compeft.tune_alpha(update, 0.1, lambda r: math.nan if
                                      np.abs(r["big"]).max() < target * 0.5 else 1.0, (1, 2))
    assert nan_first == 2
    with pytest.raises(ValueError):
        compeft.tune_alpha(update, 0.1, evaluate, alphas=())


def test_task_vector_round_trip():
    update, initial = _update(0), _update(1)
    vector = compeft.task_vector(update, initial)
    back = compeft.apply_task_vector(initial, vector)
    for name in update:
        np.testing.assert_allclose(back[name], update[name], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        compeft.task_vector({"a": np.zeros(2)}, {"b": np.zeros(2)})


class _CharTokenizer:
    """One id per character; EOS 0 after every text (as a transformers tokenizer adds it)."""

    eos_token_id = 0

    def encode(self, text, add_special_tokens=False):
        return [ord(ch) for ch in text]


class _IdsTokenizer:
    """tokenizers-style: encode returns an object with .ids and takes no keyword."""

    class _Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode(self, text):
        return self._Enc([ord(ch) for ch in text])


def test_token_blocks_concatenates_and_chunks():
    torch = pytest.importorskip("torch")
    from workers.compression.lora import token_blocks

    blocks = token_blocks(_CharTokenizer(), ["abcdefg", "hij"], 4)  # 7+1+3+1 = 12 ids
    assert blocks.dtype == torch.int64 and tuple(blocks.shape) == (3, 4)
    assert blocks.flatten().tolist() == [*map(ord, "abcdefg"), 0, *map(ord, "hij"), 0]
    blocks = token_blocks(_IdsTokenizer(), ["abcdefg", "hij"], 4)  # 10 ids, no EOS
    assert tuple(blocks.shape) == (2, 4) and blocks[1].tolist() == [ord(c) for c in "efgh"]
    with pytest.raises(ValueError):
        token_blocks(_CharTokenizer(), ["ab"], 8)


def test_lora_config_digest_follows_every_field():
    from workers.compression.lora import LoraConfig

    base = LoraConfig()
    assert base.digest("v1") == LoraConfig().digest("v1")
    assert base.digest("v1") != LoraConfig(steps=61).digest("v1") != base.digest("v2")
    assert LoraConfig(target_modules=["q_proj"]).target_modules == ("q_proj",)
    with pytest.raises(ValueError):
        LoraConfig(rank=0)


def _peaked_at(target_alpha: float, update: dict[str, np.ndarray]):
    """A validation loss whose minimum is where the kept magnitude is target_alpha · std."""
    std = float(update["big"].astype(np.float64).std())
    return lambda restored: abs(math.log(float(np.abs(restored["big"]).max()) / std
                                         / target_alpha))


def test_tune_alpha_refines_between_and_beyond_the_grid():
    update = _update()
    best, scores = compeft.tune_alpha(update, 0.1, _peaked_at(2.7, update), (1, 2, 4), refine=1)
    assert best == pytest.approx(2 * 2 ** 0.5, rel=1e-3) and len(scores) == 5
    best, scores = compeft.tune_alpha(update, 0.1, _peaked_at(20, update), (1, 2, 4), refine=2)
    # the grid's end doubles to 8, 16, 32; then 16·√2 = 22.6, then 22.6 / 2^(1/4) = 19.0
    assert best == pytest.approx(16 * 2 ** 0.25, rel=1e-3)
    assert {8.0, 16.0, 32.0} <= set(scores)
    best, _ = compeft.tune_alpha(update, 0.1, _peaked_at(0.2, update), (1, 2, 4), refine=1)
    assert best == pytest.approx(0.25 / 2 ** 0.5, rel=1e-3)


def test_lora_train_and_task_loss_leave_a_tiny_model_unchanged(tmp_path):
    """The one model test: a 2-layer random Llama (no download), trained for a few steps."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from workers.compression import lora

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = {name: type(m) for name, m in model.named_modules()}
    blocks = torch.arange(16).repeat(6, 1) % 7 + 3  # a pattern a few steps can learn
    cfg = lora.LoraConfig(rank=4, steps=8, seq_len=16, batch=2, lr=1e-2)
    steps = []

    base = lora.task_loss(model, blocks, None, cfg)
    adapter = lora.train_lora(model, blocks, cfg, lambda s, n, loss: steps.append((s, n)))
    assert steps[-1] == (8, 8) and len(adapter) == 2 * 2 * 2  # layers × (q, v) × (A, B)
    assert lora.adapter_parameters(adapter) == 2 * (4 * (32 + 32) + 4 * (32 + 16))
    tuned = lora.task_loss(model, blocks, adapter, cfg)
    assert tuned < base - 0.1
    initial = lora.initial_adapter(model, cfg)  # B = 0: the base model exactly
    assert lora.task_loss(model, blocks, initial, cfg) == pytest.approx(base, abs=1e-6)
    as_numpy = {k: v.numpy() for k, v in adapter.items()}
    assert lora.task_loss(model, blocks, as_numpy, cfg) == pytest.approx(tuned, abs=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        lora.task_loss(model, blocks, adapter, lora.LoraConfig(rank=4, seq_len=16,
                                                               target_modules=("q_proj",)))

    path = lora.save_adapter(adapter, tmp_path / "a.safetensors")
    loaded = lora.load_adapter(path)
    assert all(torch.equal(loaded[k], adapter[k]) for k in adapter)
    assert {name: type(m) for name, m in model.named_modules()} == modules
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())
    assert lora.task_loss(model, blocks, None, cfg) == base
