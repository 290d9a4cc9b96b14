"""`python -m bench.curation_color`: CoLoR-Filter at small scale, measured as the paper measures
it: fine-tune the same small model for the same number of tokens on the CoLoR-selected subset
and on a random subset of equal size, and compare their loss on held-out target-domain text.

Target domain: module docstrings of this Python's standard library (`bench.curation_data.
stdlib_docstrings`), each file assigned by a hash of its content to the target sample (what
the conditional model is fine-tuned on), the held-out test set, or the candidate pool. The pool
mixes those remaining docstrings with other real text from this machine's packages: man pages,
Debian licences and copyright files. Every document is cut to its first MAX_CHARS characters.

1. Conditional model: `workers.curation.finetune.fine_tune` (LoRA on SmolLM2-135M, merged,
   exported to ONNX: the code path the service's fine-tune job runs; cached by version).
2. Scores: `workers.curation.color.color_scores` with the prior (the registry export of
   SmolLM2) and the conditional ONNX models, `select` with keep_fraction = k / pool.
3. Subsets of k documents: CoLoR top-k; random k (several seeds); and the k with the lowest
   conditional loss alone (the paper's ablation; --no-ablation skips it).
4. Each subset trains a fresh LoRA (same config, same steps × batch × tokens) on the base
   model; loss on the held-out target blocks (mean next-token cross-entropy, nats).

    .venv/bin/python -m bench.curation_color    # 1904 s on 2 cores shared with other work
    .venv/bin/python -m bench.curation_color --render   # the table again from the saved figures
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import time
from pathlib import Path

from bench import machine
from bench.compeft import _version
from bench.curation_data import licence_texts, man_pages, stdlib_docstrings
from bench.report import publish
from workers.curation.documents import Document

MAX_CHARS = 1500
SPLIT_SEED = 0
SAMPLE_FRACTION, TEST_FRACTION = 0.12, 0.15  # of the stdlib files; the rest go to the pool


def _point(text: str) -> float:
    return int(hashlib.sha256(f"{SPLIT_SEED}:{text}".encode()).hexdigest()[:8], 16) / 2 ** 32


def _cut(doc: Document) -> Document:
    text = doc.text[:MAX_CHARS]
    if len(doc.text) > MAX_CHARS and "\n" in text:
        text = text.rsplit("\n", 1)[0]
    return Document(doc.id, text, doc.metadata)


def build_data(pool_target: int, pool_other: int, man_count: int) -> dict[str, list[Document]]:
    """sample / test (stdlib only) and pool (stdlib; man pages; licences and copyright files),
    deterministic for a given machine: splits by content hash, the pool's members by a seeded
    shuffle."""
    stdlib = [_cut(d) for d in stdlib_docstrings() if len(d.text) >= 300]
    sample = [d for d in stdlib if _point(d.text) < SAMPLE_FRACTION]
    test = [d for d in stdlib if SAMPLE_FRACTION <= _point(d.text)
            < SAMPLE_FRACTION + TEST_FRACTION]
    rest = [d for d in stdlib if _point(d.text) >= SAMPLE_FRACTION + TEST_FRACTION]
    man = [_cut(d) for d in man_pages(man_count) if len(d.text) >= 300]
    legal = [_cut(d) for d in licence_texts() if len(d.text) >= 300]
    rng = random.Random(SPLIT_SEED)
    for part in (rest, man, legal):
        rng.shuffle(part)
    half = pool_other // 2  # half man pages, half licences and copyright files
    pool = rest[:pool_target] + man[:half] + legal[:pool_other - half]
    rng.shuffle(pool)
    return {"sample": sample, "test": test, "pool": pool}


def _share(docs: list[Document]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in docs:
        out[d.metadata["source"]] = out.get(d.metadata["source"], 0) + 1
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.curation_color", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool-target", type=int, default=60,
                        help="stdlib docstrings in the pool")
    parser.add_argument("--pool-other", type=int, default=180,
                        help="other-domain documents in the pool")
    parser.add_argument("--man", type=int, default=250, help="man pages to draw from")
    parser.add_argument("--k", type=int, default=60, help="documents selected")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens scored per doc")
    parser.add_argument("--conditional-steps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=24, help="LoRA steps on each subset")
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=128, help="LoRA block length (tokens)")
    parser.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate")
    parser.add_argument("--test-blocks", type=int, default=24)
    parser.add_argument("--no-ablation", dest="ablation", action="store_false",
                        help="skip the subset of the k lowest-conditional-loss documents")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the table from the last run's saved figures")
    args = parser.parse_args(argv)
    if args.render:
        figures = json.loads(_saved().read_text())
        publish("curation_color", _table(figures), figures, write=not args.no_write)
        return 0

    from workers.compression.lora import LoraConfig, task_loss, token_blocks, train_lora
    from workers.curation import color, finetune
    from workers.curation.steps import ColorFilterStep
    from workers.textgen.export import MODEL_NAME, export_model, load_reference_model

    facts = machine.describe(repo=Path(__file__).resolve().parents[1])
    facts["versions"].update({k: _version(k) for k in ("torch", "transformers", "peft")})
    meter = machine.CpuMeter()
    started = time.perf_counter()
    data = build_data(args.pool_target, args.pool_other, args.man)
    print({k: len(v) for k, v in data.items()}, _share(data["pool"]), flush=True)

    # 1. the conditional model, through the service's fine-tune code
    cond_cfg = LoraConfig(steps=args.conditional_steps, seq_len=args.seq_len, lr=args.lr)
    t0 = time.perf_counter()
    tuned = finetune.fine_tune([d.text for d in data["sample"]], cond_cfg,
                               "bench-color-stdlib",
                               lambda p, i, n, loss: print(f"  conditional {p} {i}/{n} "
                                                           f"{loss:.4f}", flush=True))
    conditional_s = time.perf_counter() - t0
    prior = export_model()

    # 2. CoLoR scores over the pool, and the subsets
    t0 = time.perf_counter()
    pool = data["pool"]
    prior_nll = color.mean_nlls(pool, prior, args.max_tokens)
    cond_nll = color.mean_nlls(pool, tuned.folder, args.max_tokens)
    scores = [p - c for p, c in zip(prior_nll, cond_nll, strict=True)]  # = color.color_scores
    score_s = time.perf_counter() - t0
    print(f"scored {len(pool)} documents under both models in {score_s:.0f} s", flush=True)
    by_id = {d.id: d for d in pool}
    step = ColorFilterStep(conditional_model=f"bench-color-stdlib@{tuned.version}",
                           keep_fraction=args.k / len(pool), max_tokens=args.max_tokens)
    removed = color.select({d.id: s for d, s in zip(pool, scores, strict=True)}, step)
    subsets = {"CoLoR-Filter top-k": [d for d in pool if d.id not in removed][:args.k]}
    for seed in range(args.random_seeds):
        subsets[f"random (seed {seed})"] = random.Random(seed).sample(pool, args.k)
    if args.ablation:
        finite = [(n, d.id) for d, n in zip(pool, cond_nll, strict=True) if math.isfinite(n)]
        subsets["lowest conditional loss"] = [by_id[i] for _, i in sorted(finite)[:args.k]]

    # 3. the same LoRA on each subset, judged on held-out target text
    model, tok = load_reference_model()
    cfg = LoraConfig(steps=args.steps, seq_len=args.seq_len, lr=args.lr)
    test = token_blocks(tok, [d.text for d in data["test"]], cfg.seq_len)
    test = test[::max(1, test.shape[0] // args.test_blocks)][:args.test_blocks]  # spread out
    base_loss = task_loss(model, test, None, cfg)
    print(f"base {base_loss:.4f}", flush=True)
    rows = []
    for name, docs in subsets.items():
        t0 = time.perf_counter()
        blocks = token_blocks(tok, [d.text for d in docs], cfg.seq_len)
        adapter = train_lora(model, blocks, cfg)
        loss = task_loss(model, test, adapter, cfg)
        rows.append({"subset": name, "documents": len(docs), "sources": _share(docs),
                     "train_blocks": int(blocks.shape[0]), "test_loss": loss,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)

    randoms = [r["test_loss"] for r in rows if r["subset"].startswith("random")]
    figures = {
        "machine": facts, "cpu": meter.stop(), "wall_s": round(time.perf_counter() - started, 1),
        "data": {"max_chars": MAX_CHARS, "split_seed": SPLIT_SEED,
                 "sample_fraction": SAMPLE_FRACTION, "test_fraction": TEST_FRACTION,
                 "sample": len(data["sample"]), "test": len(data["test"]),
                 "test_blocks": int(test.shape[0]), "pool": len(pool),
                 "pool_sources": _share(pool), "k": args.k, "max_tokens": args.max_tokens},
        "conditional": {"name": tuned.name, "version": tuned.version,
                        "recipe": tuned.facts["recipe"], "train_blocks":
                        tuned.facts["train_blocks"], "first_loss": tuned.facts["first_loss"],
                        "last_loss": tuned.facts["last_loss"],
                        "train_seconds": tuned.facts["train_seconds"],
                        "export_seconds": tuned.facts.get("export_seconds"),
                        "seconds_this_run": round(conditional_s, 1)},
        "scoring": {"documents": len(pool), "seconds": round(score_s, 1),
                    "score_median": statistics.median(s for s in scores if math.isfinite(s))},
        "subset_lora": {"rank": cfg.rank, "alpha": cfg.alpha, "steps": cfg.steps,
                        "batch": cfg.batch, "seq_len": cfg.seq_len, "lr": cfg.lr,
                        "tokens": cfg.steps * cfg.batch * cfg.seq_len},
        "base_loss": base_loss, "rows": rows,
        "random_mean_loss": statistics.mean(randoms) if randoms else None,
        "prior_model": MODEL_NAME,
    }
    _saved().parent.mkdir(parents=True, exist_ok=True)
    _saved().write_text(json.dumps(figures, indent=2))  # a table fix need not rerun it all
    publish("curation_color", _table(figures), figures, write=not args.no_write)
    return 0


def _saved() -> Path:
    root = os.environ.get("JOBMESH_BENCH_CACHE") or Path.home() / ".cache" / "jobmesh" / "bench"
    return Path(root) / "curation_color.json"


def _table(f: dict) -> list[str]:
    d, c, lo, v = f["data"], f["conditional"], f["subset_lora"], f["machine"]["versions"]
    base = f["base_loss"]
    lines = [
        f"# CoLoR-Filter at small scale ({machine.one_line(f['machine'])})", "",
        f"torch {v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}; "
        f"git {f['machine'].get('git', '?')}.", "",
        "**Data** (real text from this machine's packages, each document cut to its first "
        f"{d['max_chars']} characters at a line end): target domain = module docstrings of "
        "Python's standard library (module, class and function docstrings of one file, read "
        "with `ast`), split by a hash of each file's content into a target sample "
        f"({d['sample']} files), a held-out test set ({d['test']} files, {d['test_blocks']} "
        f"{f['subset_lora']['seq_len']}-token blocks spread over it) and the rest; candidate "
        f"pool = {d['pool']} documents "
        f"({', '.join(f'{k} {n}' for k, n in d['pool_sources'].items())}).", "",
        f"**Conditional model**: SmolLM2-135M-Instruct + LoRA rank {c['recipe']['rank']} on "
        f"{'/'.join(c['recipe']['target_modules'])}, {c['recipe']['steps']} steps of "
        f"{c['recipe']['batch']}×{c['recipe']['seq_len']} tokens on the target sample "
        f"({c['train_blocks']} blocks; batch loss {c['first_loss']:.3f} → "
        f"{c['last_loss']:.3f}), merged and exported to ONNX by `workers.curation.finetune` "
        f"({c['name']}@{c['version']}; model load + training {c['train_seconds']:.0f} s, "
        f"whole build with export {c['export_seconds']} s when it was built).", "",
        f"**Selection**: score = mean NLL under the prior (the registry's SmolLM2 ONNX) − under "
        f"the conditional model, first {d['max_tokens']} tokens of each pool document "
        f"({f['scoring']['seconds']:.0f} s for both models over the pool); k = {d['k']} "
        "documents by CoLoR-Filter (`color.select`, keep_fraction = k / pool) and uniformly at "
        "random" + (", and by lowest conditional loss alone (the paper's ablation)"
                    if any(r["subset"].startswith("lowest") for r in f["rows"]) else "")
        + ".", "",
        f"**Judged by**: a fresh LoRA (rank {lo['rank']}, alpha {lo['alpha']}, lr {lo['lr']}) "
        f"trained for {lo['steps']} steps of {lo['batch']}×{lo['seq_len']} tokens "
        f"({lo['tokens']:,} tokens, equal for every subset) on each subset, then mean "
        "next-token cross-entropy (nats) on the held-out target blocks. Lower is better.", "",
        "| subset | documents by source | train blocks | held-out target loss | vs base | "
        "time |",
        "|---|---|---|---|---|---|",
        f"| base model (no fine-tune) | | | {base:.4f} | 0 | |",
    ]
    for r in f["rows"]:
        src = ", ".join(f"{k} {n}" for k, n in r["sources"].items())
        lines.append(f"| {r['subset']} | {src} | {r['train_blocks']} | {r['test_loss']:.4f} | "
                     f"{r['test_loss'] - base:+.4f} | {r['seconds']:.0f} s |")
    color_row = f["rows"][0]
    if f["random_mean_loss"] is not None:
        gap = color_row["test_loss"] - f["random_mean_loss"]
        lines += ["", f"CoLoR-selected minus mean of random: {gap:+.4f} nats "
                  f"({'better' if gap < 0 else 'not better'} than random)."]
    lines += ["", f"Wall {f['wall_s']:.0f} s; other processes kept "
              f"{f['cpu'].get('foreign_cores', '?')} cores busy on average."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
