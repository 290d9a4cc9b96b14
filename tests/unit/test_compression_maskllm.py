"""Learned 2:4 masks (workers/compression/maskllm.py) on a tiny randomly initialised Llama: the
masks are valid 2:4, start from the prior, and the model comes back unchanged."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from workers.compression import maskllm  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    blocks = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    return model, blocks


def _is_2_4(mask) -> bool:
    return bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2).all())


def test_patterns_are_the_six_pairs():
    p = maskllm.patterns()
    assert p.shape == (6, 4) and (p.sum(1) == 2).all() and len({tuple(r) for r in
                                                                 p.tolist()}) == 6


def test_magnitude_and_wanda_masks_are_2_4_and_pattern_index_inverts(tiny):
    model, blocks = tiny
    modules = maskllm.linears(model)
    assert len(modules) == 6  # gate, up, down of 2 layers
    norms = maskllm.input_norms(model, modules, blocks)
    for masks in (maskllm.magnitude_masks(modules), maskllm.wanda_masks(modules, norms)):
        for name, mask in masks.items():
            assert mask.shape == modules[name].weight.shape and _is_2_4(mask)
            index = maskllm.pattern_index(mask)
            rebuilt = maskllm.patterns()[index].reshape(mask.shape).bool()
            assert torch.equal(rebuilt, mask)
    w = modules["model.layers.0.mlp.down_proj"].weight.detach().abs()
    kept = maskllm.magnitude_masks(modules)["model.layers.0.mlp.down_proj"]
    groups, keep = w.reshape(w.shape[0], -1, 4), kept.reshape(w.shape[0], -1, 4)
    assert (groups[keep].reshape(*groups.shape[:2], 2).min(-1).values
            >= groups[~keep].reshape(*groups.shape[:2], 2).max(-1).values).all()


def test_learned_masks_are_2_4_and_leave_the_model_as_it_was(tiny):
    model, blocks = tiny
    modules = maskllm.linears(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = maskllm.mean_loss(model, blocks)
    prior = maskllm.magnitude_masks(modules)
    # A prior so strong that 2 small steps cannot move it: the prior comes back.
    same = maskllm.learn_masks(model, modules, prior, blocks, steps=2, batch=2, lr=1e-3,
                               prior_strength=50.0)
    assert all(torch.equal(same[n], prior[n]) for n in prior)
    losses = []
    learned = maskllm.learn_masks(model, modules, prior, blocks, steps=6, batch=2, lr=0.5,
                                  prior_strength=1.0,
                                  progress=lambda s, n, loss: losses.append(loss))
    assert len(losses) == 6 and all(_is_2_4(m) for m in learned.values())
    assert not hasattr(modules["model.layers.0.mlp.up_proj"], "parametrizations")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())
    masked = maskllm.masked_loss(model, modules, learned, blocks)
    assert masked != dense and maskllm.mean_loss(model, blocks) == pytest.approx(dense)
