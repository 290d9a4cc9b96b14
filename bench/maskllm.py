"""MaskLLM learned 2:4 masks against magnitude and Wanda 2:4 on SmolLM2-135M's MLP layers.

All masks are made and judged in PyTorch on the same model (fp32, dequantized from the GGUF),
on the 90 MLP linears (gate/up/down of 30 layers) that the `sparse_2_4` recipe prunes by
default: magnitude |W|; Wanda |W|·‖X‖ from calibration text; MaskLLM (workers/compression/
maskllm.py) Gumbel-softmax over the six patterns per group of 4, weights frozen, trained on the
same calibration text, logits started from Wanda's mask. Calibration: 128-token blocks of the
GPL-3 / LGPL-2.1 / GFDL-1.3 texts; perplexity: exp(mean next-token loss) on 128-token windows
of the disjoint held-out licence texts (evaluate/texts.py), as bench/compression.py does through
ONNX (that table's figures come from another evaluator and are not comparable to these).

    .venv/bin/python -m bench.maskllm                  # ~15-30 min on 2 shared cores
    .venv/bin/python -m bench.maskllm --steps 4 --no-write
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from bench import machine
from bench.report import publish
from workers.compression import maskllm
from workers.compression.evaluate import calibration_text, held_out_text
from workers.compression.lora import spread_blocks, token_blocks


def _agreement(a, b) -> float:
    """Fraction of groups of 4 where two 2:4 masks keep the same pair."""
    same = total = 0
    for name in a:
        ga = maskllm.pattern_index(a[name])
        same += int((ga == maskllm.pattern_index(b[name])).sum())
        total += ga.numel()
    return same / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.maskllm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="MaskLLM training steps")
    parser.add_argument("--batch", type=int, default=2, help="blocks per step")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--prior-strength", type=float, default=6.0)
    parser.add_argument("--tau", type=float, nargs=2, default=(0.5, 0.1))
    parser.add_argument("--wanda-blocks", type=int, default=8, help="128-token blocks")
    parser.add_argument("--eval-blocks", type=int, default=8, help="128-token windows")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)
    from workers.textgen.export import load_reference_model

    facts = machine.describe(repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    model, tok = load_reference_model()
    modules = maskllm.linears(model)
    calib = token_blocks(tok, [calibration_text()], 128)
    evaluation = spread_blocks(token_blocks(tok, [held_out_text(max_chars=60_000)], 128),
                               args.eval_blocks)
    print(f"{len(modules)} linears, {calib.shape[0]} calibration blocks", flush=True)

    rows, masks = [], {}

    def row(label: str, mask, seconds: float, **extra) -> None:
        started = time.perf_counter()
        loss = (maskllm.mean_loss(model, evaluation) if mask is None
                else maskllm.masked_loss(model, modules, mask, evaluation))
        rows.append({"mask": label, "loss": loss, "perplexity": math.exp(loss),
                     "make_s": round(seconds, 1),
                     "eval_s": round(time.perf_counter() - started, 1), **extra})
        print(f"{label}: perplexity {math.exp(loss):.3f}", flush=True)

    row("dense", None, 0.0)
    started = time.perf_counter()
    masks["magnitude"] = maskllm.magnitude_masks(modules)
    row("2:4 magnitude", masks["magnitude"], time.perf_counter() - started)
    started = time.perf_counter()
    norms = maskllm.input_norms(model, modules, spread_blocks(calib, args.wanda_blocks))
    masks["wanda"] = maskllm.wanda_masks(modules, norms)
    row("2:4 Wanda", masks["wanda"], time.perf_counter() - started)
    started = time.perf_counter()
    losses: list[float] = []

    def progress(step: int, steps: int, loss: float) -> None:
        losses.append(loss)
        print(f"  step {step}/{steps} loss {loss:.4f} ({time.perf_counter() - started:.0f} s)",
              flush=True)

    masks["maskllm"] = maskllm.learn_masks(
        model, modules, masks["wanda"], calib, steps=args.steps, batch=args.batch, lr=args.lr,
        prior_strength=args.prior_strength, tau=tuple(args.tau), progress=progress)
    row("2:4 MaskLLM (Wanda prior)", masks["maskllm"], time.perf_counter() - started,
        groups_changed_vs_wanda=1 - _agreement(masks["maskllm"], masks["wanda"]),
        train_losses=losses)
    after = maskllm.mean_loss(model, evaluation)
    figures = {"machine": facts, "args": vars(args), "rows": rows,
               "calibration_blocks": int(calib.shape[0]), "dense_loss_after": after,
               "cpu": meter.stop()}
    publish("maskllm", _table(figures, facts, args), figures, write=not args.no_write)
    return 0


def _table(f: dict, facts: dict, args) -> list[str]:
    rows = {r["mask"]: r for r in f["rows"]}
    wanda, learned = rows["2:4 Wanda"], rows["2:4 MaskLLM (Wanda prior)"]
    lines = [
        f"# MaskLLM vs magnitude and Wanda 2:4 on SmolLM2-135M ({machine.one_line(facts)})", "",
        f"git {facts.get('git', '?')}. The 90 MLP linears (gate/up/down of 30 layers) pruned "
        "2:4 along the input dimension; everything in PyTorch (fp32 from the GGUF). Wanda "
        f"norms from {args.wanda_blocks} calibration blocks of 128 tokens; MaskLLM: "
        f"{args.steps} AdamW steps (lr {args.lr}) of {args.batch}×128 tokens from "
        f"{f['calibration_blocks']} calibration blocks (GPL-3, LGPL-2.1, GFDL-1.3), weights "
        f"frozen, hard (straight-through) Gumbel-softmax samples, temperature {args.tau[0]:g} "
        f"→ {args.tau[1]:g}, logits started at {args.prior_strength:g} on Wanda's pattern "
        "(0 on the other five). Perplexity on "
        f"{args.eval_blocks} windows of 128 tokens of held-out licence text (Apache-2.0, "
        "MPL-2.0, Artistic, BSD, CC0-1.0).", "",
        "| mask | perplexity | loss (nats) | time to make | groups changed vs Wanda |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in f["rows"]:
        changed = r.get("groups_changed_vs_wanda")
        lines.append(f"| {r['mask']} | {r['perplexity']:.3f} | {r['loss']:.4f} | "
                     f"{r['make_s']:.0f} s | "
                     + (f"{changed:.4%}" if changed is not None else "") + " |")
    verdict = ("lower than" if learned["perplexity"] < wanda["perplexity"]
               else "not lower than")
    lines += ["", f"MaskLLM's perplexity is **{verdict} Wanda's** here "
              f"({learned['perplexity']:.3f} vs {wanda['perplexity']:.3f}), from one run of "
              f"{args.steps} steps that moved {learned['groups_changed_vs_wanda']:.4%} of the "
              f"groups off Wanda's pattern, judged on {args.eval_blocks} windows: a small "
              "effect from a short run, not a converged MaskLLM. Dense loss after "
              f"all runs: {f['dense_loss_after']:.4f} (before: {rows['dense']['loss']:.4f}). "
              f"Wall {f['cpu']['wall_s']} s; other processes kept "
              f"{f['cpu'].get('foreign_cores', '?')} cores busy on average."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
