"""`python -m bench.curation_embed`: near-dedup by meaning (`embed_dedup`: all-MiniLM-L6-v2 ONNX
embeddings, exact cosine pairs, union-find) against MinHash-LSH (`minhash_dedup`) on the planted
near-duplicates of `bench.curation_data` (the same real corpus, the same 300 far-apart originals
and their variants: word edits, sentence reorders, an appended boilerplate footer), through the
functions the pipeline's shard and global stages call. Precision and recall of the detected
pairs, per kind of variant, and the time each pass takes.

Writes `bench/results/curation_embed.md` and `.json`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench import machine
from bench.curation_data import KINDS, build_corpus, clustered_pairs, pair_scores, planted_pairs
from bench.report import publish

MINHASH_THRESHOLDS = (0.8, 0.7)
EMBED_THRESHOLDS = (0.95, 0.9, 0.85)


def minhash_rows(docs, truth) -> list[dict]:
    from workers.curation.dedup import minhash_signatures, near_duplicate_groups

    t0 = time.perf_counter()
    sigs = {d.id: s.tobytes() for d, s in zip(docs, minhash_signatures(docs), strict=True)}
    shard_s = time.perf_counter() - t0
    rows = []
    for threshold in MINHASH_THRESHOLDS:
        t0 = time.perf_counter()
        groups = near_duplicate_groups(sigs, threshold=threshold)
        rows.append({"step": "minhash_dedup", "threshold": threshold,
                     **pair_scores(clustered_pairs(groups), truth),
                     "shard_stage_docs_per_s": round(len(docs) / shard_s, 1),
                     "global_seconds": round(time.perf_counter() - t0, 2)})
    return rows


def embed_rows(docs, truth, max_chars: int) -> tuple[list[dict], dict]:
    from workers.curation.embed_dedup import decode, encode, near_duplicate_groups
    from workers.curation.embeddings import export_model

    folder = export_model()
    encode(docs[:4], folder)  # load the session before timing
    t0 = time.perf_counter()
    stored = dict(zip([d.id for d in docs], encode(docs, folder, max_chars=max_chars),
                      strict=True))
    shard_s = time.perf_counter() - t0
    rows = []
    for threshold in EMBED_THRESHOLDS:
        t0 = time.perf_counter()
        groups = near_duplicate_groups(stored, threshold=threshold)
        found = clustered_pairs(groups)
        rows.append({"step": "embed_dedup", "threshold": threshold,
                     **pair_scores(found, truth),
                     "shard_stage_docs_per_s": round(len(docs) / shard_s, 1),
                     "global_seconds": round(time.perf_counter() - t0, 2),
                     "false_pairs": sorted(found - truth.keys())[:10]})
    ids = list(stored)
    vectors = decode([stored[d] for d in ids])
    index = {d: i for i, d in enumerate(ids)}
    planted_cos = {kind: [float(vectors[index[a]] @ vectors[index[b]])
                          for (a, b), (k, _) in truth.items() if k == kind] for kind in KINDS}
    originals = np.array([index[a] for a, _ in truth])
    sims = vectors[originals] @ vectors[originals].T
    np.fill_diagonal(sims, -1.0)
    cosines = {"planted_median": {k: round(statistics.median(v), 4)
                                  for k, v in planted_cos.items()},
               "planted_min": {k: round(min(v), 4) for k, v in planted_cos.items()},
               "originals_max": round(float(sims.max()), 4),
               "originals_pairs_at_least_0.9": int((np.triu(sims, 1) >= 0.9).sum())}
    return rows, cosines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curation_embed", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--man-pages", type=int, default=1500,
                   help="man pages in the corpus (bench.curation_data's default)")
    p.add_argument("--planted", type=int, default=300, help="originals with a planted variant")
    p.add_argument("--max-chars", type=int, default=2000, help="embed_dedup's max_chars")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    facts = machine.describe(repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    docs, truth = planted_pairs(build_corpus(args.man_pages), args.planted)
    print(f"  {len(docs)} documents, {len(truth)} planted pairs", flush=True)
    rows = minhash_rows(docs, truth)
    embed, cosines = embed_rows(docs, truth, args.max_chars)
    rows += embed
    load = meter.stop()
    figures = {"machine": facts, "load": load, "documents": len(docs),
               "planted_pairs": len(truth), "max_chars": args.max_chars, "rows": rows,
               "embedding_cosines": cosines}
    lines = [f"# Near-dedup by meaning vs MinHash ({facts['cores_usable']} cores, "
             f"{facts['cpu_model']}, {facts['date']})", "",
             f"The planted set of `bench.curation_data` ({args.man_pages} man pages, Python "
             f"standard-library docstrings, licences and Debian copyright files): {len(truth)} "
             "originals of 150-20,000 words, no two with an estimated Jaccard ≥ 0.3, and one "
             "variant each, in turn: word edits (2-5% of words), sentence reorder (one swap per "
             f"8 sentences), appended 64-word boilerplate footer; {len(docs)} documents. "
             "A pair counts as found when both land in one cluster; precision is over all "
             "pairs found (a pair of two originals is a false positive). minhash_dedup: word "
             "5-grams, 128 permutations, LSH false-negative weight 0.9. embed_dedup: "
             f"all-MiniLM-L6-v2 ONNX (fp32, CPU) over the first {args.max_chars} characters "
             "(at most 256 tokens), float16 vectors, every pair compared. Shard stage = "
             "signatures or embeddings (docs/s, one process); global = clustering. Foreign "
             f"CPU load: {load.get('foreign_cores', '?')} cores. Git {facts.get('git', '?')}.",
             "", "| step | threshold | pairs found | precision | recall | recall: word edits | "
             "recall: reorder | recall: boilerplate | shard stage docs/s | global s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['threshold']} | {r['pairs_found']} | {r['precision']} | "
              f"{r['recall']} | {r['recall_word_edits']} | {r['recall_sentence_reorder']} | "
              f"{r['recall_boilerplate']} | {r['shard_stage_docs_per_s']} | "
              f"{r['global_seconds']} |" for r in rows]
    lines += ["", "Cosine of the planted pairs, median / min: " + ", ".join(
        f"{k} {cosines['planted_median'][k]} / {cosines['planted_min'][k]}" for k in KINDS) +
        f". Highest cosine between two originals: {cosines['originals_max']} "
        f"({cosines['originals_pairs_at_least_0.9']} pairs of originals at ≥ 0.9)."]
    publish("curation_embed", lines, figures, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
