"""The conditional model of CoLoR-Filter: the reference LM (SmolLM2-135M, the weights the
registry's `smollm2-135m-instruct@gguf-q4_1-onnx-v2` was exported from) fine-tuned with LoRA on a
small target-domain sample, the adapter merged into the weights, exported to ONNX with exactly
the prior's interface (workers/textgen/export.py, so `lm_scores.LmScorer` runs both alike), and
registered in the model registry with its provenance: the parent version, the LoRA recipe and
the sha256 of the target sample.

The version name is `lora-<hash>`, the hash covering the recipe, the parent and the target
sample: the same request makes the same version (registration is then a no-op), and the export
is cached under it like any other (shared/models/export_cache.py).

    python -m workers.curation.finetune --target SAMPLE.jsonl --name my-target-lm --register

torch, transformers and peft are needed here only (the `export` extra).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.models import export_cache

log = logging.getLogger(__name__)

# (phase, done, total, loss): phase "train" per optimiser step (loss = that step's batch
# loss), "export" once before the export starts (done = total = 0, loss NaN).
Progress = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class FineTuned:
    name: str
    version: str
    folder: Path  # model.onnx, tokenizer.json, generation.json, export.json
    facts: dict  # the export marker: recipe, target digest, losses, seconds


def target_sha256(texts: list[str]) -> str:
    """The target sample's identity: sha256 of the texts as a JSON list, in order."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


def parent() -> str:
    from workers.textgen.export import MODEL_NAME, VERSION

    return f"{MODEL_NAME}@{VERSION}"


def version_of(cfg, sample_sha256: str) -> str:
    return f"lora-{cfg.digest(parent(), sample_sha256)}"


def fine_tune(texts: list[str], cfg, name: str, progress: Progress | None = None,
              folder: Path | None = None) -> FineTuned:
    """Trains `cfg` (a workers.compression.lora.LoraConfig) on `texts` cut into blocks, merges
    and exports (unless the export cache already holds this version). ValueError when the
    texts make fewer blocks than one batch."""
    from workers.compression.lora import merged_model, token_blocks, train_lora
    from workers.textgen.export import FILES, load_reference_model, write_export

    digest = target_sha256(texts)
    version = version_of(cfg, digest)
    folder = Path(folder) if folder else export_cache.export_dir(name, version)

    def make(tmp: Path) -> dict:
        started = time.perf_counter()
        model, tok = load_reference_model()
        blocks = token_blocks(tok, texts, cfg.seq_len)
        losses: list[float] = []

        def step(done: int, total: int, loss: float) -> None:
            losses.append(loss)
            if progress is not None:
                progress("train", done, total, loss)

        adapter = train_lora(model, blocks, cfg, step)
        trained = time.perf_counter() - started
        if progress is not None:
            progress("export", 0, 0, float("nan"))
        facts = write_export(merged_model(model, adapter, cfg), tok, tmp, name, version)
        return {"name": name, "parent": parent(), "recipe": recipe(cfg),
                "target_sha256": digest, "target_documents": len(texts),
                "train_blocks": int(blocks.shape[0]), "first_loss": losses[0],
                "last_loss": losses[-1], "train_seconds": round(trained, 1),  # load + train
                **facts}

    export_cache.build(folder, version, FILES, make)
    facts = json.loads((folder / export_cache.MARKER).read_text())
    return FineTuned(name, version, folder, facts)


def recipe(cfg) -> dict:
    return {"method": "lora (peft), merged into the weights", **dataclasses.asdict(cfg),
            "target_modules": list(cfg.target_modules)}


def register(registry, tuned: FineTuned, serve: bool = False):
    """Registers the export as `tuned.name@tuned.version` (idempotent); `serve` points the
    name's serving version at it (it always does for a name with none). Returns the Manifest."""
    from shared.models.importer import has_serving, tensor_specs
    from workers.textgen.export import FILES

    inputs, outputs = tensor_specs(tuned.folder / "model.onnx")
    f = tuned.facts
    return registry.register(
        tuned.name, tuned.version, {n: tuned.folder / n for n in FILES},
        inputs=inputs, outputs=outputs,
        provenance={"parent": f["parent"], "recipe": f["recipe"],
                    "target_sha256": f["target_sha256"],
                    "target_documents": f["target_documents"],
                    "train_blocks": f["train_blocks"], "first_loss": f["first_loss"],
                    "last_loss": f["last_loss"], "train_seconds": f["train_seconds"],
                    "exporter": "workers/curation/finetune.py via workers/textgen/export.py",
                    "torch": f["torch"], "transformers": f["transformers"]},
        serve=serve or not has_serving(registry, tuned.name))


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """The texts of a JSONL file (one object per line, `text_field` a string)."""
    from workers.curation.shards import read_shard

    return [d.text for d in read_shard(Path(path).read_bytes(), Path(path).name, text_field)]


def main(argv: list[str] | None = None) -> int:
    from workers.compression.lora import LoraConfig

    parser = argparse.ArgumentParser(prog="python -m workers.curation.finetune",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, required=True,
                        help="JSONL(.gz/.zst) or Parquet of target-domain documents")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--name", required=True, help="registry name of the conditional model")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--register", action="store_true",
                        help="register in the model registry (S3 at JOBMESH_S3_ENDPOINT)")
    parser.add_argument("--serve", action="store_true", help="with --register: serve it")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s")
    cfg = LoraConfig(rank=args.rank, alpha=2 * args.rank, steps=args.steps,
                     seq_len=args.seq_len, batch=args.batch, lr=args.lr)

    def show(phase: str, done: int, total: int, loss: float) -> None:
        print(f"{phase} {done}/{total} loss {loss:.4f}" if phase == "train" else "exporting",
              flush=True)

    tuned = fine_tune(read_texts(args.target, args.text_field), cfg, args.name, show)
    print(f"{tuned.name}@{tuned.version} {tuned.folder}")
    if args.register:
        from shared.config import Settings
        from shared.models.registry import ModelRegistry
        from shared.storage.artifacts import ArtifactStore

        settings = Settings()
        store = ArtifactStore.from_settings(settings)
        store.ensure_bucket(settings.models_bucket)
        register(ModelRegistry(store, settings.models_bucket), tuned, args.serve)
        print(f"registered {tuned.name}@{tuned.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
