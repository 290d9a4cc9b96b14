"""The `compeft` recipe on a LoRA adapter version (adapters.py): tune alpha on validation text,
write the compressed form, and measure what it costs on the adapter's task.

Task loss (mean next-token cross-entropy, nats) of the base model, the adapter and the
compressed adapter is taken on the adapter's `test.jsonl` when the version has one (documents
disjoint from the validation text alpha was tuned on); otherwise on the validation text itself,
and a note says so. The compressed adapter is scored as `load_adapter_version` rebuilds it from
the bytes written, so the report's figure is what a loader gets. Sizes: the compressed file
against the stored adapter (`size_bytes` vs `parent_size_bytes`) and, in `params`, against the
adapter as fp32 and fp16 safetensors. Latency: the time to score the evaluation blocks with each
adapter applied (compute is the same: ComPEFT decompresses to dense LoRA tensors at load), and
the load times in `params`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.compression import adapters, compeft
from workers.compression.recipes import RecipeError

DEFAULT_DENSITY = 0.3  # the smallest density bench/compeft.py found within 2% of the adapter
DEFAULT_ALPHAS = (1.0, 2.0, 4.0, 8.0)
DEFAULT_REFINE = 2
FIELD = "recipe.compeft"


@dataclass
class AdapterOutcome:
    folder: Path  # the new version's files (adapter.json, adapter.compeft, texts)
    params: dict
    notes: list[str]
    size_bytes: int
    parent_size_bytes: int
    parent_loss: float  # the adapter's task loss
    loss: float  # the compressed adapter's
    parent_latency_ms: float
    latency_ms: float


def _timed(fn: Callable[[], float]) -> tuple[float, float]:
    started = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - started) * 1000


def compress_adapter(folder: Path, recipe: dict, validation_texts: list[str] | None,
                     blocks: int, out: Path,
                     progress: Callable[[str], None] = lambda _: None) -> AdapterOutcome:
    """Applies the `compeft` recipe (`density`, `alphas`, `task_vector`) to the peft-lora
    adapter in `folder`, writing the new version's files into `out`. `validation_texts` None:
    the adapter's own validation.jsonl. `blocks`: at most this many seq_len token blocks of
    validation (and of evaluation) text, spread over it. Raises RecipeError naming the field
    for an adapter or text the recipe cannot use."""
    import torch

    from workers.compression.lora import (
        initial_adapter,
        load_adapter,
        safetensors_bytes,
        spread_blocks,
        task_loss,
        token_blocks,
    )

    spec = adapters.read_spec(folder)
    if spec.format != "peft-lora":
        raise RecipeError(FIELD, f"the adapter is already compressed ({spec.format}); "
                          "compress its uncompressed parent")
    cfg = spec.lora
    if validation_texts is None:
        if not (folder / adapters.VALIDATION).is_file():
            raise RecipeError(f"{FIELD}.validation_texts",
                              "the adapter version has no validation.jsonl: pass validation "
                              "texts")
        validation_texts = adapters.read_texts(folder / adapters.VALIDATION)
    has_test = (folder / adapters.TEST).is_file()
    progress(f"loading the base model {spec.base_model}")
    model, tok = adapters.base_model(spec.base_name)
    try:
        val = spread_blocks(token_blocks(tok, validation_texts, cfg.seq_len), blocks)
    except ValueError as exc:
        raise RecipeError(f"{FIELD}.validation_texts", f"too short: {exc}") from exc
    test = (spread_blocks(token_blocks(tok, adapters.read_texts(folder / adapters.TEST),
                                       cfg.seq_len), blocks) if has_test else val)

    adapter = load_adapter(folder / adapters.SAFETENSORS)
    task_vector = bool(recipe.get("task_vector"))
    initial = initial_adapter(model, cfg) if task_vector else None
    update = compeft.task_vector(adapter, initial) if task_vector else dict(adapter)

    def to_adapter(dense):
        return compeft.apply_task_vector(initial, dense) if task_vector else dense

    density = recipe.get("density") or DEFAULT_DENSITY
    alphas = recipe.get("alphas") or DEFAULT_ALPHAS
    refine = 0 if recipe.get("alphas") else DEFAULT_REFINE
    progress(f"tuning alpha at density {density:g} on {val.shape[0]} validation blocks")
    alpha, scores = compeft.tune_alpha(
        update, density, lambda d: task_loss(model, val, to_adapter(d), cfg), alphas, refine)

    out.mkdir(parents=True, exist_ok=True)
    blob = compeft.to_bytes(compeft.compress(update, density, alpha))
    (out / adapters.COMPEFT).write_bytes(blob)
    new_spec = dataclasses.replace(spec, format="compeft", compeft={
        "density": density, "alpha": alpha, "task_vector": task_vector})
    (out / adapters.SPEC).write_text(new_spec.to_json())
    for name in (adapters.VALIDATION, adapters.TEST):
        if (folder / name).is_file():
            (out / name).write_bytes((folder / name).read_bytes())

    # Both adapters as a loader gets them from their files, timed.
    progress("scoring base, adapter and compressed adapter")
    parent_dense, parent_load_ms = _timed(lambda: adapters.load_adapter_version(folder))
    restored, load_ms = _timed(lambda: adapters.load_adapter_version(out, model))
    base_loss = task_loss(model, test, None, cfg)
    parent_loss, parent_ms = _timed(lambda: task_loss(model, test, parent_dense, cfg))
    loss, new_ms = _timed(lambda: task_loss(model, test, restored, cfg))
    parent_bytes = (folder / adapters.SAFETENSORS).stat().st_size
    fp32, fp16 = (safetensors_bytes(adapter, dtype) for dtype in (torch.float32, torch.float16))
    params = {
        "density": density, "alpha": alpha, "task_vector": task_vector,
        "alpha_scores": {f"{a:g}": round(s, 6) for a, s in scores.items()},
        "base_model": spec.base_model, "base_loss": base_loss, "adapter_loss": parent_loss,
        "compressed_loss": loss, "eval_text": "test.jsonl" if has_test else "validation",
        "validation_blocks": int(val.shape[0]), "eval_blocks": int(test.shape[0]),
        "seq_len": cfg.seq_len, "bytes": {"compeft": len(blob), "adapter_fp32": fp32,
                                          "adapter_fp16": fp16, "stored": parent_bytes},
        "ratio_fp32": fp32 / len(blob), "ratio_fp16": fp16 / len(blob),
        "load_ms": {"adapter": round(parent_load_ms, 1), "compressed": round(load_ms, 1)},
    }
    gap = parent_loss - base_loss
    kept = (loss - base_loss) / gap if gap else float("nan")
    notes = [
        f"alpha {alpha:g} (validation loss {scores[alpha]:.4f}; tried "
        + ", ".join(f"{a:g}" for a in scores) + ")",
        f"{len(blob):,} bytes: {fp32 / len(blob):.1f}x smaller than the fp32 adapter, "
        f"{fp16 / len(blob):.1f}x than fp16",
        f"task loss: base {base_loss:.4f}, adapter {parent_loss:.4f}, compressed {loss:.4f} "
        f"({(loss - parent_loss) / parent_loss:+.2%} vs the adapter; "
        f"{kept:.0%} of the adapter's gain kept)",
    ]
    if not has_test:
        notes.append("no test.jsonl in the adapter version: losses are on the validation text "
                     "alpha was tuned on (optimistic)")
    return AdapterOutcome(out, params, notes, len(blob), parent_bytes, parent_loss, loss,
                          parent_ms / test.shape[0], new_ms / test.shape[0])
