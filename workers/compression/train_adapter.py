"""Admin path for the first version of a LoRA adapter entry: train a small rank-8 adapter on
SmolLM2 for the DEP-5 copyright-file task (evaluate/dep5.py) and register it in the model
registry (S3 at JOBMESH_S3_ENDPOINT) with its held-out validation and test documents, ready
for the `compeft` recipe.

    python -m workers.compression.train_adapter                  # 60 steps: ~10 min on 2 cores
    python -m workers.compression.train_adapter --steps 8 --version quick

Registers `smollm2-dep5-lora@<version>` (runtime `peft-lora`; provenance: base model, training
config and data); `serving` moves to it when the name has none yet or with --serve.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from workers.compression import adapters
from workers.compression.evaluate import dep5
from workers.compression.lora import LoraConfig, save_adapter, token_blocks, train_lora

log = logging.getLogger(__name__)

ADAPTER_NAME = "smollm2-dep5-lora"


def train_and_register(registry, version: str, cfg: LoraConfig, *, name: str = ADAPTER_NAME,
                       max_files: dict[str, int] | None = None, serve: bool | None = None,
                       progress: Callable[[int, int, float], None] | None = None):
    """Trains on the DEP-5 train split (the first `max_files["train"]` files when given; the
    same for validation and test), registers `name@version` and returns its Manifest. `serve`
    None: serve it when the name has no serving version yet."""
    from shared.models.importer import has_serving
    from workers.textgen.export import MODEL_NAME, VERSION

    split = dep5.split_documents(dep5.copyright_documents())
    texts = {part: [text for _, text in docs[:(max_files or {}).get(part)]]
             for part, docs in split.items()}
    model, tok = adapters.base_model(MODEL_NAME)
    adapter = train_lora(model, token_blocks(tok, texts["train"], cfg.seq_len), cfg, progress)
    spec = adapters.AdapterSpec(base_model=f"{MODEL_NAME}@{VERSION}", lora=cfg)
    data = {part: len(t) for part, t in texts.items()}
    with tempfile.TemporaryDirectory(prefix="jobmesh-adapter-") as tmp:
        folder = Path(tmp)
        save_adapter(adapter, folder / adapters.SAFETENSORS, {"config_hash": cfg.digest()})
        (folder / adapters.SPEC).write_text(spec.to_json())
        adapters.write_texts(folder / adapters.VALIDATION, texts["validation"])
        adapters.write_texts(folder / adapters.TEST, texts["test"])
        manifest = adapters.register_adapter(
            registry, name, version, folder,
            provenance={"source": "workers/compression/train_adapter.py: LoRA on DEP-5 "
                                  f"copyright files {json.dumps(data, sort_keys=True)}"},
            serve=serve if serve is not None else not has_serving(registry, name))
    log.info("adapter registered", extra={"model": name, "version": version})
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.compression.train_adapter",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=ADAPTER_NAME)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--steps", type=int, default=LoraConfig.steps)
    parser.add_argument("--serve", action="store_true", help="point `serving` at it")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s")
    from shared.config import Settings
    from shared.models.registry import ModelRegistry
    from shared.storage.artifacts import ArtifactStore

    settings = Settings()
    registry = ModelRegistry(ArtifactStore.from_settings(settings), settings.models_bucket)
    manifest = train_and_register(
        registry, args.version, LoraConfig(steps=args.steps), name=args.name,
        serve=args.serve or None,
        progress=lambda step, steps, loss: print(f"step {step}/{steps} loss {loss:.4f}",
                                                 flush=True))
    print(f"registered {manifest.name}@{manifest.version}: "
          + ", ".join(f"{f.path} ({f.size:,} bytes)" for f in manifest.files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
