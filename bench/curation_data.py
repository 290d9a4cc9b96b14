"""`python -m bench.curation_data`: the curation building blocks on real text from this machine's
packages (man pages, Python's standard library, licences, Debian copyright files), in one run:

1. **Heuristic filters, ours vs datatrove**: documents/s of `workers.curation.filters.run_filters`
   with [gopher_repetition, gopher_quality, c4_quality, fineweb_quality] (reading the four JSONL
   shards with `read_shard`) next to datatrove's LocalPipelineExecutor (tasks=1, workers=1)
   running the same four datatrove filters over the same shards with its JsonlReader; one
   process each, spaCy loaded before either is timed. Decision parity: documents kept by one and
   removed by the other, kept texts that differ (C4 rewrites text), removal reasons counted.
2. **Near-dedup on planted near-duplicates**: 300 corpus documents that are far apart (estimated
   Jaccard < 0.3 to each other), one variant each (word edits of 2-5%, sentence reorders, an
   appended boilerplate paragraph), MinHash signatures and the LSH global pass at thresholds 0.8
   and 0.7: precision and recall of the detected pairs against the planted pairs.
3. **The whole corpus**: exact and near duplicate groups, language and profanity filters.

Writes `bench/results/curation_data.md` and `.json`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench import machine
from bench.report import publish
from workers.curation.documents import Document

HEURISTICS = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
MAN_SECTIONS = [Path(f"/usr/share/man/man{i}") for i in range(1, 9)]
LICENSES = Path("/usr/share/common-licenses")
DOC = Path("/usr/share/doc")
BOILERPLATE = (
    "This page is provided for information only and may be changed without notice. All "
    "trademarks are the property of their respective owners. To report a problem with this "
    "page, to ask for help, or to subscribe to our newsletter, please use the contact form. "
    "Copyright all rights reserved. Cookies help us deliver our services; by using them you "
    "agree to our use of cookies.")
PACKAGES = ("datatrove", "spacy", "datasketch", "py3langid", "alt-profanity-check",
            "scikit-learn", "pyarrow", "zstandard")


# --- the corpus -----------------------------------------------------------------------------

def _render_man(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    out = subprocess.run(["man", "--nh", "--nj", "-P", "cat", "-l", str(path)], env=env,
                         capture_output=True, timeout=60).stdout
    return out.decode("utf-8", "replace").strip()


def man_pages(count: int) -> list[Document]:
    """`count` English man pages, evenly spaced over the sorted list of sections 1-8 (links
    skipped), rendered by man-db without hyphenation or justification."""
    files = sorted(p for d in MAN_SECTIONS if d.is_dir() for p in d.iterdir()
                   if p.is_file() and not p.is_symlink())
    step = max(1, len(files) // count)
    chosen = files[::step][:count]
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(_render_man, chosen))
    return [Document(f"man/{p.parent.name}/{p.name}", t, {"source": "man"})
            for p, t in zip(chosen, texts, strict=True) if t]


def stdlib_docstrings() -> list[Document]:
    """Per module of this Python's standard library (tests, idlelib and site-packages left
    out): the module docstring and those of its top-level classes and functions, read with
    `ast` (nothing imported)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "__pycache__", "idlelib"}
    docs = []
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        parts = [ast.get_docstring(tree) or ""]
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                if doc := ast.get_docstring(node):
                    parts.append(f"{node.name}: {doc}")
        text = "\n\n".join(p for p in parts if p)
        if text:
            docs.append(Document(f"stdlib/{path.relative_to(root)}", text, {"source": "stdlib"}))
    return docs


def licence_texts() -> list[Document]:
    docs = [Document(f"licenses/{p.name}", p.read_text("utf-8", "replace"),
                     {"source": "common-licenses"})
            for p in sorted(LICENSES.iterdir()) if p.is_file() and not p.is_symlink()]
    docs += [Document(f"copyright/{p.parent.name}", p.read_text("utf-8", "replace"),
                      {"source": "copyright"})
             for p in sorted(DOC.glob("*/copyright")) if p.is_file() and not p.is_symlink()]
    return [d for d in docs if d.text.strip()]


def build_corpus(man_count: int) -> list[Document]:
    return man_pages(man_count) + stdlib_docstrings() + licence_texts()


def write_shards(docs: list[Document], folder: Path, shards: int = 4) -> list[Path]:
    from workers.curation.shards import write_shard

    order = list(docs)
    random.Random(0).shuffle(order)
    paths = []
    for i in range(shards):
        path = folder / f"shard-{i:04d}.jsonl"
        path.write_bytes(write_shard(order[i::shards], path.name))
        paths.append(path)
    return paths


# --- 1. heuristic filters, ours vs datatrove ------------------------------------------------

def ours(paths: list[Path]) -> tuple[tuple[float, float], dict[str, str], set[str], Counter]:
    """((wall s, CPU s), kept id -> text, removed ids, stats) of read_shard + run_filters."""
    from workers.curation.filters import build_filter, run_filters
    from workers.curation.shards import read_shard
    from workers.curation.steps import parse_pipeline

    filters = [build_filter(s) for s in parse_pipeline([{"step": s} for s in HEURISTICS])]
    stats: Counter = Counter()
    kept: dict[str, str] = {}
    removed: set[str] = set()
    t0, c0 = time.perf_counter(), time.process_time()
    for path in paths:
        k, r = run_filters(read_shard(path.read_bytes(), path.name), filters, stats)
        kept.update((d.id, d.text) for d in k)
        removed.update(d.id for d, _ in r)
    return (time.perf_counter() - t0, time.process_time() - c0), kept, removed, stats


def datatrove_run(folder: Path) -> tuple[tuple[float, float], dict[str, str], Counter]:
    """((wall s, CPU s) of executor.run(), kept id -> text, dropped reasons) of datatrove's
    own pipeline over the same shards (workers=1 runs it in this process)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader

    kept: dict[str, str] = {}

    def collect(data, rank: int = 0, world_size: int = 1):
        for doc in data:
            kept[doc.id] = doc.text
            yield doc

    steps = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(),
             FineWebQualityFilter()]
    with tempfile.TemporaryDirectory(prefix="datatrove-logs-") as logs:
        executor = LocalPipelineExecutor(
            pipeline=[JsonlReader(str(folder), glob_pattern="*.jsonl"), *steps, collect],
            tasks=1, workers=1, logging_dir=logs)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = executor.run()
        seconds = time.perf_counter() - t0, time.process_time() - c0
    reasons: Counter = Counter()
    for step in stats.stats:  # named "<type>: <filter name>"
        ours_name = next((n for s, n in zip(steps, HEURISTICS, strict=True)
                          if step.name.endswith(s.name)), None)
        for key, value in step.stats.items() if ours_name else ():
            if key.startswith("dropped_"):
                reasons[f"{ours_name}.removed:{key.removeprefix('dropped_')}"] += value.total
    return seconds, kept, reasons


def heuristics(folder: Path, paths: list[Path], repeats: int) -> dict:
    from datatrove.utils.text import split_into_words
    from loguru import logger

    logger.disable("datatrove")  # its per-step INFO lines; the figures come from here
    split_into_words("Load spaCy before anything is timed.")
    runs_ours, runs_dt = [], []
    for r in range(repeats):  # interleaved, who goes first alternating
        for side in ("ours", "datatrove")[::1 if r % 2 == 0 else -1]:
            if side == "ours":
                t, kept_ours, removed_ours, stats = ours(paths)
                runs_ours.append(t)
            else:
                t, kept_dt, reasons_dt = datatrove_run(folder)
                runs_dt.append(t)
    n = len(kept_ours) + len(removed_ours)
    wall_ours, cpu_ours = (statistics.median(x) for x in zip(*runs_ours, strict=True))
    wall_dt, cpu_dt = (statistics.median(x) for x in zip(*runs_dt, strict=True))
    reasons_ours = Counter({k: v for k, v in stats.items() if ".removed:" in k})
    return {
        "documents": n, "repeats": repeats,
        "ours_docs_per_s": round(n / wall_ours, 1), "datatrove_docs_per_s": round(n / wall_dt, 1),
        "ratio_ours_over_datatrove": round(wall_dt / wall_ours, 3),
        "ours_docs_per_cpu_s": round(n / cpu_ours, 1),
        "datatrove_docs_per_cpu_s": round(n / cpu_dt, 1),
        "ratio_cpu_ours_over_datatrove": round(cpu_dt / cpu_ours, 3),
        "ours_seconds": [round(w, 1) for w, _ in runs_ours],
        "datatrove_seconds": [round(w, 1) for w, _ in runs_dt],
        "kept": len(kept_ours), "kept_datatrove": len(kept_dt),
        "decisions_differ": len(set(kept_ours) ^ set(kept_dt)),
        "kept_texts_differ": sum(kept_ours[i] != kept_dt[i] for i in set(kept_ours) & set(
            kept_dt)),
        "c4_rewrote": stats_rewrites(paths, kept_ours),
        "removal_reasons_differ": sorted(k for k in reasons_ours.keys() | reasons_dt.keys()
                                         if reasons_ours[k] != reasons_dt[k]),
        "removed_by": dict(sorted(reasons_ours.items(), key=lambda kv: -kv[1])),
    }


def stats_rewrites(paths: list[Path], kept: dict[str, str]) -> int:
    """Kept documents whose text C4 changed (lines dropped)."""
    from workers.curation.shards import read_shard

    return sum(kept[d.id] != d.text for p in paths for d in read_shard(p.read_bytes(), p.name)
               if d.id in kept)


# --- 2. planted near-duplicates ---------------------------------------------------------------

def _sentences(text: str) -> tuple[list[str], str]:
    parts = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if len(parts) >= 4:
        return parts, " "
    return [s for s in text.split("\n") if s.strip()], "\n"


def make_variant(text: str, kind: str, vocab: list[str], rng: random.Random) -> str:
    if kind == "word_edits":  # substitute, delete or insert 2-5% of the words
        words = text.split()
        for _ in range(max(1, round(rng.uniform(0.02, 0.05) * len(words)))):
            i = rng.randrange(len(words))
            op = rng.choice(("substitute", "delete", "insert"))
            if op == "substitute":
                words[i] = rng.choice(vocab)
            elif op == "delete" and len(words) > 1:
                del words[i]
            else:
                words.insert(i, rng.choice(vocab))
        return " ".join(words)
    if kind == "sentence_reorder":  # swap pairs of sentences (or lines), 1 per 8
        parts, sep = _sentences(text)
        for _ in range(max(1, len(parts) // 8)):
            i, j = rng.sample(range(len(parts)), 2)
            parts[i], parts[j] = parts[j], parts[i]
        return sep.join(parts)
    return text.rstrip() + "\n\n" + BOILERPLATE  # appended boilerplate


KINDS = ("word_edits", "sentence_reorder", "boilerplate")


def planted_pairs(corpus: list[Document], count: int
                  ) -> tuple[list[Document], dict[tuple[str, str], tuple[str, float]]]:
    """`count` far-apart originals (`o0000`...) and one variant each (`v0000`...), the kinds in
    turn; and the planted pairs: (original id, variant id) -> (kind, true Jaccard of their word
    5-gram shingle sets)."""
    from workers.curation.dedup import minhash_signatures, shingles

    rng = random.Random(1)
    pool = [d for d in corpus if 150 <= len(d.text.split()) <= 20000]
    rng.shuffle(pool)
    sigs = minhash_signatures(pool)
    picked, picked_sigs = [], []
    for doc, sig in zip(pool, sigs, strict=True):  # far apart: estimated Jaccard < 0.3
        if not picked_sigs or (np.stack(picked_sigs) == sig).mean(axis=1).max() < 0.3:
            picked.append(doc)
            picked_sigs.append(sig)
            if len(picked) == count:
                break
    vocab = sorted({w for d in picked for w in d.text.split() if w.isalpha()})
    docs, truth = [], {}
    for k, doc in enumerate(picked):
        kind = KINDS[k % 3]
        variant = make_variant(doc.text, kind, vocab, rng)
        a, b = f"o{k:04d}", f"v{k:04d}"
        docs += [Document(a, doc.text), Document(b, variant)]
        sa, sb = shingles(doc.text), shingles(variant)
        truth[(a, b)] = (kind, len(sa & sb) / len(sa | sb))
    return docs, truth


def clustered_pairs(groups: dict[str, str]) -> set[tuple[str, str]]:
    """Every pair of ids (smaller first) that a dedup pass put in one cluster."""
    clusters: dict[str, list[str]] = {}
    for doc_id, kept in groups.items():
        clusters.setdefault(kept, []).append(doc_id)
    return {tuple(sorted((a, b))) for ids in clusters.values() for a in ids for b in ids
            if a < b}


def pair_scores(found: set[tuple[str, str]], truth: dict) -> dict:
    """Precision and recall of the detected pairs against the planted ones, and recall per
    kind of variant."""
    hits = found & truth.keys()
    row = {"pairs_found": len(found), "true_positives": len(hits),
           "precision": round(len(hits) / len(found), 3) if found else None,
           "recall": round(len(hits) / len(truth), 3)}
    for kind in KINDS:
        of_kind = [p for p, (k, _) in truth.items() if k == kind]
        row[f"recall_{kind}"] = round(sum(p in hits for p in of_kind) / len(of_kind), 3)
    return row


def planted(corpus: list[Document], count: int, thresholds: list[float]) -> dict:
    from workers.curation.dedup import minhash_signatures, near_duplicate_groups

    docs, truth = planted_pairs(corpus, count)
    t0 = time.perf_counter()
    sigs = minhash_signatures(docs)
    sig_s = time.perf_counter() - t0
    by_id = {d.id: s.tobytes() for d, s in zip(docs, sigs, strict=True)}
    rows = []
    for threshold, fn_weight in [(t, 0.9) for t in thresholds] + [(thresholds[0], 0.5)]:
        t0 = time.perf_counter()
        groups = near_duplicate_groups(by_id, threshold=threshold, false_negative_weight=fn_weight)
        lsh_s = time.perf_counter() - t0
        found = clustered_pairs(groups)
        hits = found & truth.keys()
        above = [p for p, (_, j) in truth.items() if j >= threshold]
        rows.append({"threshold": threshold, "false_negative_weight": fn_weight,
                     **pair_scores(found, truth),
                     "pairs_true_jaccard_at_least_threshold": len(above),
                     "recall_of_those": round(sum(p in hits for p in above) / len(above), 3)
                     if above else None,
                     "lsh_seconds": round(lsh_s, 2)})
    jaccards = {kind: [j for k, j in truth.values() if k == kind] for kind in KINDS}
    return {"originals": len(truth), "variants": len(truth),
            "signature_docs_per_s": round(len(docs) / sig_s, 1),
            "true_jaccard_median": {k: round(statistics.median(v), 3)
                                    for k, v in jaccards.items()},
            "true_jaccard_min": {k: round(min(v), 3) for k, v in jaccards.items()},
            "rows": rows}


# --- 3. the whole corpus ----------------------------------------------------------------------

def corpus_facts(corpus: list[Document]) -> dict:
    from workers.curation.dedup import (
        duplicate_groups,
        exact_keys,
        minhash_signatures,
        near_duplicate_groups,
    )
    from workers.curation.filters import build_filter, run_filters
    from workers.curation.steps import parse_pipeline

    exact = duplicate_groups(dict(zip([d.id for d in corpus], exact_keys(corpus), strict=True)))
    t0 = time.perf_counter()
    sigs = minhash_signatures(corpus)
    sig_s = time.perf_counter() - t0
    near = near_duplicate_groups({d.id: s for d, s in zip(corpus, sigs, strict=True)})
    out = {"exact_duplicates_dropped": sum(k != v for k, v in exact.items()),
           "exact_groups": len(set(exact.values())),
           "near_duplicates_dropped_0.8": sum(k != v for k, v in near.items()),
           "near_clusters_0.8": len(set(near.values())),
           "signature_docs_per_s": round(len(corpus) / sig_s, 1)}
    for step in ("language", "profanity"):
        f = build_filter(parse_pipeline([{"step": step}])[0])
        f.decide(corpus[0])  # load the model before timing
        stats: Counter = Counter()
        t0 = time.perf_counter()
        kept, _ = run_filters(corpus, [f], stats)
        out[step] = {"kept": len(kept), "docs_per_s": round(len(corpus) / (
            time.perf_counter() - t0), 1),
            "removed_by": dict(Counter({k.split(":", 1)[1]: v for k, v in stats.items()
                                        if ".removed:" in k}).most_common(6))}
    return out


# --- report -----------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curation_data", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--man-pages", type=int, default=1500, help="man pages in the corpus")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (interleaved)")
    p.add_argument("--planted", type=int, default=300, help="originals with a planted variant")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    facts = machine.describe(repo=Path(__file__).resolve().parents[1])
    facts["versions"].update(_versions())
    meter = machine.CpuMeter()
    t0 = time.perf_counter()
    corpus = build_corpus(args.man_pages)
    build_s = time.perf_counter() - t0
    sources = Counter(d.metadata["source"] for d in corpus)
    words = sum(len(d.text.split()) for d in corpus)
    print(f"  corpus: {len(corpus)} documents {dict(sources)}, {words} words, built in "
          f"{build_s:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="curation-shards-") as tmp:
        paths = write_shards(corpus, Path(tmp))
        heur = heuristics(Path(tmp), paths, args.repeats)
    print(f"  heuristics: ours {heur['ours_docs_per_s']} docs/s, datatrove "
          f"{heur['datatrove_docs_per_s']} docs/s, decisions differ "
          f"{heur['decisions_differ']}", flush=True)
    near = planted(corpus, args.planted, [0.8, 0.7])
    print(f"  planted: {near['rows']}", flush=True)
    whole = corpus_facts(corpus)
    print(f"  corpus facts: {whole}", flush=True)
    load = meter.stop()
    v = facts["versions"]
    result = {"machine": facts, "load": load, "corpus": {"documents": len(corpus),
              "sources": dict(sources), "words": words, "build_seconds": round(build_s, 1),
              "shards": 4}, "heuristics": heur, "planted": near, "whole_corpus": whole}
    lines = [f"# Curation data ({facts['cores_usable']} cores, {facts['cpu_model']}, "
             f"{facts['memory_gib']} GiB RAM, {facts['os']}, Python {v['python']}, "
             f"datatrove {v.get('datatrove')}, spaCy {v.get('spacy')}, datasketch "
             f"{v.get('datasketch')}, py3langid {v.get('py3langid')}, {facts['date']})", "",
             f"Corpus: {len(corpus)} real documents, {words:,} words, from this machine's "
             f"packages: {sources['man']} man pages (sections 1-8 of /usr/share/man, evenly "
             "spaced, rendered by `man --nh --nj -P cat`, MANWIDTH=100), "
             f"{sources['stdlib']} Python {sys.version.split()[0]} standard-library modules "
             "(module, class and function docstrings, read with `ast`), "
             f"{sources['common-licenses']} texts of /usr/share/common-licenses and "
             f"{sources['copyright']} /usr/share/doc/*/copyright files; shuffled into 4 JSONL "
             f"shards. Foreign CPU load during the run: {load.get('foreign_cores', '?')} cores "
             f"of {facts['cores_usable']}. Git {facts.get('git', '?')}.", "",
             "## 1. Heuristic filters: ours vs datatrove, one process", "",
             "Pipeline gopher_repetition → gopher_quality → c4_quality → fineweb_quality, "
             "datatrove's defaults. Ours: `read_shard` + `run_filters` over the 4 shards. "
             "datatrove: `LocalPipelineExecutor(tasks=1, workers=1)` with `JsonlReader` over "
             "the same 4 files, the same four filters, a collecting step at the end. spaCy "
             f"loaded before timing; median of {heur['repeats']} interleaved runs (who goes "
             "first alternates). Documents per second of wall time, and per CPU second of "
             "this process (less sensitive to other load on the machine).", "",
             "| | documents/s (wall) | documents/CPU-s | wall seconds per run |",
             "|---|---|---|---|",
             f"| ours (read_shard + run_filters) | {heur['ours_docs_per_s']} | "
             f"{heur['ours_docs_per_cpu_s']} | {heur['ours_seconds']} |",
             f"| datatrove LocalPipelineExecutor | {heur['datatrove_docs_per_s']} | "
             f"{heur['datatrove_docs_per_cpu_s']} | {heur['datatrove_seconds']} |",
             f"| ratio ours / datatrove | {heur['ratio_ours_over_datatrove']} | "
             f"{heur['ratio_cpu_ours_over_datatrove']} | |", "",
             f"Parity over {heur['documents']} documents: kept {heur['kept']} (datatrove "
             f"{heur['kept_datatrove']}); documents whose keep/remove differs: "
             f"**{heur['decisions_differ']}**; kept texts that differ: "
             f"{heur['kept_texts_differ']} (C4 rewrote {heur['c4_rewrote']} kept documents); "
             "removal reasons whose counts differ: "
             f"{', '.join(heur['removal_reasons_differ']) or 'none'}.", "",
             "| removed by | documents |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in heur["removed_by"].items()]
    lines += ["", f"## 2. Near-dedup on planted near-duplicates ({near['originals']} originals "
              f"+ {near['variants']} variants)", "",
              "Originals: corpus documents of 150-20,000 words, picked so that no two have an "
              "estimated Jaccard ≥ 0.3. One variant each, in turn: word edits (2-5% of the "
              "words substituted, deleted or inserted), sentence reorder (one swap of two "
              "sentences, or lines, per 8), appended boilerplate (a 64-word footer). Word "
              "5-gram shingles, 128 permutations. True Jaccard of the planted pairs (exact, on "
              "shingle sets), median / min: " + ", ".join(
                  f"{k} {near['true_jaccard_median'][k]} / {near['true_jaccard_min'][k]}"
                  for k in near["true_jaccard_median"]) +
              f". Signatures: {near['signature_docs_per_s']} docs/s.", "",
              "| threshold | LSH FN weight | pairs found | precision | recall | recall: word "
              "edits | recall: reorder | recall: boilerplate | planted pairs with true J ≥ "
              "threshold | recall of those |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['threshold']} | {r['false_negative_weight']} | {r['pairs_found']} | "
              f"{r['precision']} | {r['recall']} | {r['recall_word_edits']} | "
              f"{r['recall_sentence_reorder']} | {r['recall_boilerplate']} | "
              f"{r['pairs_true_jaccard_at_least_threshold']} | {r['recall_of_those']} |"
              for r in near["rows"]]
    lines += ["", "(LSH FN weight 0.9 is ours: candidates are verified by estimated Jaccard, so "
              "bands favour recall; 0.5 is datasketch's default.)", "",
              f"## 3. The whole corpus ({len(corpus)} documents)", "",
              f"- Exact duplicates (normalised text): {whole['exact_duplicates_dropped']} "
              f"dropped in {whole['exact_groups']} groups.",
              f"- Near duplicates at 0.8: {whole['near_duplicates_dropped_0.8']} dropped in "
              f"{whole['near_clusters_0.8']} clusters; signatures "
              f"{whole['signature_docs_per_s']} docs/s.",
              f"- language (py3langid, en, min_score 0.65): kept {whole['language']['kept']}, "
              f"{whole['language']['docs_per_s']} docs/s; removed as "
              f"{whole['language']['removed_by']}.",
              f"- profanity (alt-profanity-check, threshold 0.5, whole text): kept "
              f"{whole['profanity']['kept']}, {whole['profanity']['docs_per_s']} docs/s; "
              f"removed {whole['profanity']['removed_by']}."]
    publish("curation_data", lines, result, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
