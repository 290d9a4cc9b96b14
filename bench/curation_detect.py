"""`python -m bench.curation_detect`: zero-shot detection of SmolLM2-generated text with
`workers.curation.detect` (log-perplexity minus mean entropy, Radvand et al.) next to plain
log-perplexity, both under SmolLM2-135M-Instruct itself as the reference model.

Human passages (100-250 tokens, real text from this machine's packages): the DESCRIPTION
sections of man pages (gcloud's generated pages left out), module docstrings of Python's
standard library, and the Debian licences of `held_out_text`. Machine passages: SmolLM2's
answers (128-200 new tokens, pure temperature sampling at 0.7/0.8/0.9/1.0, fixed seeds) to
chat prompts built from OTHER documents of the same sources (licence prompts come from the
disjoint `calibration_text` licences): either "continue this text" with a document's first
sentences, or "explain this" with its title line. Every passage has its whitespace normalised
the same way (one space inside a paragraph, a blank line between paragraphs).

Human passages are split at random into calibration and test; the thresholds come from the
calibration humans only (`detect.calibrate`, 5% false-positive rate) and are applied to the
human test passages (realised FPR) and all machine passages (TPR). The split is also redrawn
200 times to show how much one split's figures move.

Generated and human passages are cached in ~/.cache/jobmesh/bench/curation_detect/ (generation
is the slow part: ~15 tokens/s on 2 busy cores); generation stops after `--generate-budget`
seconds, saving what it has, and a rerun continues. Writes bench/results/curation_detect.md.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import machine
from bench.report import publish
from workers.compression.evaluate.texts import calibration_text, held_out_text
from workers.curation.detect import calibrate, is_machine, statistic

CACHE = Path.home() / ".cache" / "jobmesh" / "bench" / "curation_detect"
MAN_SECTIONS = [Path(f"/usr/share/man/man{i}") for i in range(1, 9)]
MIN_TOKENS, MAX_TOKENS = 100, 250
TEMPERATURES = (0.7, 0.8, 0.9, 1.0)
CONTINUE = ("Continue the following text with two more paragraphs in the same style. Write only "
            "the continuation.\n\n{}")
EXPLAIN = "Write two paragraphs for a technical manual explaining the following:\n\n{}"
FPR = 0.05


@dataclass
class Passage:
    id: str
    source: str  # man | stdlib | licence | machine
    group: str  # the source for humans; "T=0.8 continue" etc. for machine text
    text: str


# --- text from this machine -----------------------------------------------------------------

def paragraphs(text: str) -> list[str]:
    """Prose paragraphs, whitespace collapsed: at least 60% letters, no doctest or code fence."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        para = " ".join(block.split())
        visible = para.replace(" ", "")
        if (len(para) >= 40 and ">>>" not in para and "```" not in para
                and sum(c.isalpha() for c in visible) >= 0.6 * len(visible)):
            out.append(para)
    return out


def _render_man(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8"}
    result = subprocess.run(["man", "--nh", "--nj", "-P", "cat", "-l", str(path)], env=env,
                            capture_output=True, timeout=60)
    return result.stdout.decode("utf-8", "replace")


def man_documents(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(id, title line, DESCRIPTION text) of `count` man pages chosen at random (seeded) from
    sections 1-8, gcloud's pages left out."""
    files = sorted(p for d in MAN_SECTIONS if d.is_dir() for p in d.iterdir()
                   if p.is_file() and not p.is_symlink() and not p.name.startswith("gcloud"))
    chosen = random.Random(seed).sample(files, min(count, len(files)))
    with ThreadPoolExecutor(max_workers=2) as pool:
        pages = list(pool.map(_render_man, chosen))
    docs = []
    for path, page in zip(chosen, pages, strict=True):
        sections: dict[str, list[str]] = {}
        current = None
        for line in page.splitlines():
            if re.fullmatch(r"[A-Z][A-Z0-9 ]+", line):
                current = sections.setdefault(line.strip(), [])
            elif current is not None:
                current.append(line)
        title = " ".join(" ".join(sections.get("NAME", [])).split())
        body = "\n".join(sections.get("DESCRIPTION", []))
        if title and body:
            docs.append((f"man/{path.parent.name}/{path.name}", title, body))
    return docs


def stdlib_documents() -> list[tuple[str, str, str]]:
    """(id, first line, docstring) of every standard-library module with a docstring, read
    with `ast` (tests, idlelib and site-packages left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "__pycache__", "idlelib"}
    docs = []
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_bytes()))
        except (SyntaxError, ValueError):
            continue
        if doc:
            docs.append((f"stdlib/{path.relative_to(root)}", doc.strip().splitlines()[0], doc))
    return docs


def licence_documents(text: str, prefix: str) -> list[tuple[str, str, str]]:
    """Runs of consecutive licence paragraphs (about 1,500 characters each) as documents."""
    docs, run = [], []
    for para in paragraphs(text):
        run.append(para)
        if sum(len(p) for p in run) >= 1500:
            docs.append((f"{prefix}/{len(docs)}", _first_sentences(run[0], 30),
                         "\n\n".join(run)))
            run = []
    return docs


def _first_sentences(text: str, words: int) -> str:
    """Sentences from the start of `text` until at least `words` words (or the whole text)."""
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        out.append(sentence)
        if len(" ".join(out).split()) >= words:
            break
    return " ".join(out)


def cut_to_tokens(tokenizer, text: str, limit: int) -> tuple[str, int]:
    """`text` cut at a word boundary to at most `limit` tokens; (text, its token count)."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    if len(enc.ids) > limit:
        end = enc.offsets[limit - 1][1]
        text = text[:end].rsplit(" ", 1)[0] if " " in text[:end] else text[:end]
    return text, len(tokenizer.encode(text, add_special_tokens=False).ids)


def build_corpus(tokenizer, counts: dict[str, int], prompts_per_source: dict[str, int],
                 seed: int) -> tuple[list[Passage], list[dict]]:
    """Human passages and the prompts for machine passages, from disjoint documents."""
    rng = random.Random(seed)
    pools = {"man": man_documents(3 * (counts["man"] + prompts_per_source["man"]), seed),
             "stdlib": stdlib_documents(),
             "licence": licence_documents(held_out_text(60000), "licence")}
    prompt_pools = {"licence": licence_documents(calibration_text(60000), "calibration-licence")}
    human, prompts = [], []
    for source, docs in pools.items():
        docs = list(docs)
        rng.shuffle(docs)
        taken = 0
        rest = []
        for ident, title, body in docs:
            passage = "\n\n".join(paragraphs(body))
            if taken < counts[source]:
                target = rng.randint(MIN_TOKENS + 20, MAX_TOKENS)
                text, n = cut_to_tokens(tokenizer, passage, target)
                if n >= MIN_TOKENS:
                    human.append(Passage(ident, source, source, text))
                    taken += 1
                    continue
            rest.append((ident, title, passage))
        if taken < counts[source]:
            raise RuntimeError(f"only {taken} {source} passages of >= {MIN_TOKENS} tokens")
        candidates = prompt_pools.get(source) or rest
        if source in prompt_pools:
            candidates = [(i, t, "\n\n".join(paragraphs(b))) for i, t, b in candidates]
            rng.shuffle(candidates)
        made = 0
        for ident, title, passage in candidates:
            if made == prompts_per_source[source]:
                break
            if not passage or len(passage.split()) < 25:
                continue
            style = "continue" if len(prompts) % 2 == 0 else "explain"
            seed_text = _first_sentences(passage, 30) if style == "continue" else title
            prompts.append({"id": ident, "source": source, "style": style,
                            "content": (CONTINUE if style == "continue" else EXPLAIN)
                            .format(seed_text)})
            made += 1
    # Styles alternate along the list, so each pair shares a temperature: every temperature
    # gets both styles.
    for i, p in enumerate(prompts):
        p["temperature"] = TEMPERATURES[(i // 2) % len(TEMPERATURES)]
        p["seed"] = 1000 + i
    rng.shuffle(prompts)  # sources and styles mixed through the generation batches
    return human, prompts


# --- machine text ---------------------------------------------------------------------------

def _prompt_key(prompt: dict, max_new_tokens: int) -> str:
    blob = json.dumps([prompt["content"], prompt["temperature"], prompt["seed"],
                       max_new_tokens])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def generate(folder: Path, tokenizer, prompts: list[dict], target: int, max_new_tokens: int,
             batch: int, budget_s: float, cache: Path) -> tuple[list[Passage], dict]:
    """Machine passages (cleaned, >= MIN_TOKENS tokens) for the first prompts until `target`
    are kept, with every completion cached; raises SystemExit when the time budget runs out
    before (a rerun continues from the cache)."""
    from workers.textgen.decoding import GenerationParams
    from workers.textgen.session import load_generator

    data = json.loads(cache.read_text()) if cache.exists() else {"records": {}, "tokens": 0,
                                                                  "seconds": 0.0}
    records = data["records"]

    def kept() -> list[Passage]:
        out = []
        for p in prompts:
            rec = records.get(_prompt_key(p, max_new_tokens))
            if rec and rec["tokens"] >= MIN_TOKENS:
                out.append(Passage(f"machine/{p['id']}", "machine",
                                   f"T={p['temperature']} {p['style']}", rec["text"]))
        return out[:target]

    todo = [p for p in prompts if _prompt_key(p, max_new_tokens) not in records]
    started = time.monotonic()
    generator = None
    while len(kept()) < target and todo:
        if time.monotonic() - started > budget_s:
            _save(cache, data)
            raise SystemExit(f"generation budget spent with {len(kept())}/{target} passages "
                             f"kept; rerun to continue (cache: {cache})")
        if generator is None:
            generator = load_generator(folder)
        need = target - len(kept())
        rows, todo = todo[:min(batch, need + 1)], todo[min(batch, need + 1):]
        ids = [generator.tokenizer.encode_messages([{"role": "user", "content": p["content"]}])
               for p in rows]
        params = [GenerationParams(max_new_tokens=max_new_tokens, temperature=p["temperature"],
                                   seed=p["seed"], speculation="off") for p in rows]
        t0 = time.perf_counter()
        results = generator.generate_batch(ids, params)
        data["seconds"] += time.perf_counter() - t0
        for p, r in zip(rows, results, strict=True):
            data["tokens"] += len(r.token_ids)
            text, n = cut_to_tokens(tokenizer, "\n\n".join(paragraphs(r.text)), MAX_TOKENS)
            records[_prompt_key(p, max_new_tokens)] = {
                "prompt": p, "raw": r.text, "text": text, "tokens": n,
                "finish_reason": r.finish_reason, "completion_tokens": len(r.token_ids)}
        _save(cache, data)
        print(f"  generated {len(kept())}/{target} "
              f"({data['tokens'] / max(data['seconds'], 1e-9):.1f} tok/s)", flush=True)
    passages = kept()
    if len(passages) < target:
        raise RuntimeError(f"only {len(passages)} of {target} completions reached "
                           f"{MIN_TOKENS} tokens; add prompts")
    tried = [records[_prompt_key(p, max_new_tokens)] for p in prompts
             if _prompt_key(p, max_new_tokens) in records]
    return passages, {"generated_tokens": data["tokens"],
                      "generation_seconds": round(data["seconds"], 1),
                      "completions_tried": len(tried),
                      "completions_too_short": sum(r["tokens"] < MIN_TOKENS for r in tried)}


# --- evaluation -----------------------------------------------------------------------------

def auroc(human: list[float], machine_: list[float]) -> float:
    """P(a human statistic > a machine statistic), ties counted half (low = machine)."""
    h, m = np.asarray(human)[:, None], np.asarray(machine_)[None, :]
    return float(((h > m).sum() + 0.5 * (h == m).sum()) / (h.size * m.size))


def evaluate(name: str, human_cal: list[float], human_test: list[float],
             machine_stats: list[float]) -> dict:
    cal = calibrate(human_cal, FPR)
    return {"statistic": name, "threshold": cal.threshold, "human_calibration": len(human_cal),
            "fpr_test": float(np.mean([is_machine(x, cal) for x in human_test])),
            "tpr": float(np.mean([is_machine(x, cal) for x in machine_stats])),
            "auroc_test": auroc(human_test, machine_stats),
            "median_human": statistics.median(human_cal + human_test),
            "median_machine": statistics.median(machine_stats)}


def resampled(human: list[float], machine_stats: list[float], n_cal: int, draws: int,
              seed: int) -> dict:
    """Mean (and 5th-95th percentile) of test FPR and TPR over random calibration splits."""
    rng = random.Random(seed)
    fprs, tprs = [], []
    for _ in range(draws):
        order = list(human)
        rng.shuffle(order)
        cal = calibrate(order[:n_cal], FPR)
        fprs.append(np.mean([is_machine(x, cal) for x in order[n_cal:]]))
        tprs.append(np.mean([is_machine(x, cal) for x in machine_stats]))
    return {"fpr_mean": float(np.mean(fprs)), "tpr_mean": float(np.mean(tprs)),
            "tpr_p5": float(np.percentile(tprs, 5)), "tpr_p95": float(np.percentile(tprs, 95))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.curation_detect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--human", type=int, default=80, help="human passages (all sources)")
    parser.add_argument("--calibration", type=int, default=50, help="of which calibration")
    parser.add_argument("--machine", type=int, default=60, help="machine passages")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--batch", type=int, default=6, help="generation batch rows")
    parser.add_argument("--generate-budget", type=float, default=480.0,
                        help="seconds of generation per run before saving and stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)
    from tokenizers import Tokenizer

    from workers.curation.lm_scores import LmScorer
    from workers.textgen.export import VERSION, default_export_dir, export_model

    facts = machine.describe(repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    folder = export_model(default_export_dir())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    CACHE.mkdir(parents=True, exist_ok=True)

    # Humans: 3/8 man pages, 3/8 docstrings, 1/4 licences; prompts: a few spare per source.
    counts = {"man": args.human * 3 // 8, "stdlib": args.human * 3 // 8}
    counts["licence"] = args.human - counts["man"] - counts["stdlib"]
    spare = args.machine + args.machine // 3
    prompts_per_source = {"man": spare * 3 // 8, "stdlib": spare * 3 // 8}
    prompts_per_source["licence"] = spare - 2 * (spare * 3 // 8)
    corpus_key = hashlib.sha256(json.dumps([counts, prompts_per_source, args.seed, MIN_TOKENS,
                                            MAX_TOKENS, CONTINUE, EXPLAIN, TEMPERATURES, 2]
                                           ).encode()).hexdigest()[:12]
    corpus_cache = CACHE / f"corpus-{corpus_key}.json"
    if corpus_cache.exists():
        corpus = json.loads(corpus_cache.read_text())
        human = [Passage(**p) for p in corpus["human"]]
        prompts = corpus["prompts"]
    else:
        print("building the human corpus (rendering man pages) ...", flush=True)
        human, prompts = build_corpus(tokenizer, counts, prompts_per_source, args.seed)
        _save(corpus_cache, {"human": [asdict(p) for p in human], "prompts": prompts})
    print(f"generating {args.machine} machine passages ...", flush=True)
    machine_passages, gen = generate(folder, tokenizer, prompts, args.machine,
                                     args.max_new_tokens, args.batch, args.generate_budget,
                                     CACHE / f"machine-{VERSION}.json")

    print(f"scoring {len(human) + len(machine_passages)} passages ...", flush=True)
    scorer = LmScorer(folder / "model.onnx", folder / "tokenizer.json", max_tokens=256,
                      window=128)
    scorer.score(["A warm-up call, not timed."])
    texts = [p.text for p in human + machine_passages]
    t0 = time.perf_counter()
    scores = scorer.score(texts)
    score_s = time.perf_counter() - t0
    scored_tokens = sum(s.tokens for s in scores)
    human_scores, machine_scores = scores[:len(human)], scores[len(human):]

    order = list(range(len(human)))
    random.Random(args.seed).shuffle(order)
    cal_idx, test_idx = order[:args.calibration], order[args.calibration:]
    stats = {"log-ppl − entropy (Radvand et al.)": statistic,
             "log-perplexity (baseline)": lambda s: s.mean_nll}
    results, groups = [], {}
    for name, fn in stats.items():
        h = [fn(s) for s in human_scores]
        m = [fn(s) for s in machine_scores]
        r = evaluate(name, [h[i] for i in cal_idx], [h[i] for i in test_idx], m)
        r["resampled"] = resampled(h, m, args.calibration, 200, args.seed + 1)
        results.append(r)
        cal = calibrate([h[i] for i in cal_idx], FPR)
        for p, x in zip(human + machine_passages, h + m, strict=True):
            g = groups.setdefault(p.group, {"n": 0, "values": {}})
            g["values"].setdefault(name, []).append(x)
            g.setdefault("flagged", {}).setdefault(name, 0)
            g["flagged"][name] += is_machine(x, cal)
    for g in groups.values():
        g["n"] = len(next(iter(g["values"].values())))

    figures = {"machine": facts, "settings": vars(args), "generation": gen,
               "scoring": {"texts": len(texts), "tokens": scored_tokens,
                           "seconds": round(score_s, 2),
                           "tokens_per_s": round(scored_tokens / score_s, 1)},
               "results": results,
               "groups": {k: {"n": g["n"], "flagged": g["flagged"],
                              "median": {s: statistics.median(v)
                                         for s, v in g["values"].items()}}
                          for k, g in groups.items()},
               "passages": [{"id": p.id, "group": p.group, **asdict(s)}
                            for p, s in zip(human + machine_passages, scores, strict=True)]}
    figures["cpu"] = meter.stop()
    names = list(stats)
    sources = ", ".join(f"{counts[s]} {s}" for s in counts)
    lines = [
        f"# Zero-shot machine-text detection ({machine.one_line(facts)})", "",
        f"Reference model: SmolLM2-135M-Instruct ONNX ({VERSION}), the same model that wrote "
        "the machine text. Each passage's first 256 tokens are scored in 128-token windows "
        "(`workers.curation.lm_scores`). Human: "
        f"{len(human)} passages of {MIN_TOKENS}-{MAX_TOKENS} tokens from this machine's "
        f"packages ({sources}: man-page DESCRIPTION sections, Python stdlib module "
        "docstrings, Debian licences from `held_out_text`), split at random into "
        f"{len(cal_idx)} for calibration and {len(test_idx)} for test. Machine: "
        f"{len(machine_passages)} SmolLM2 chat completions of {MIN_TOKENS}-"
        f"{args.max_new_tokens} tokens, sampled at temperature 0.7/0.8/0.9/1.0 (no top-p/k, "
        "fixed seeds) from prompts made of other documents of the same sources (continue its "
        "first sentences / explain its title; licence prompts from the calibration licences). "
        f"Threshold: `detect.calibrate` at {FPR:.0%} FPR on the calibration humans "
        "(k = floor((n+1)·0.05)-th smallest statistic; flag when below).", "",
        "| statistic | threshold | FPR on human test | TPR at 5% FPR | AUROC (test) | "
        "median human | median machine | mean FPR / TPR over 200 splits (TPR 5–95%) |",
        "|---|---|---|---|---|---|---|---|"]
    for r in results:
        rs = r["resampled"]
        lines.append(
            f"| {r['statistic']} | {r['threshold']:.3f} | {r['fpr_test']:.1%} "
            f"({round(r['fpr_test'] * len(test_idx))}/{len(test_idx)}) | {r['tpr']:.1%} "
            f"({round(r['tpr'] * len(machine_passages))}/{len(machine_passages)}) | "
            f"{r['auroc_test']:.3f} | {r['median_human']:.3f} | {r['median_machine']:.3f} | "
            f"{rs['fpr_mean']:.1%} / {rs['tpr_mean']:.1%} ({rs['tpr_p5']:.0%}–"
            f"{rs['tpr_p95']:.0%}) |")
    lines += ["", "Per group (all human passages, calibration and test; flagged with the "
              "thresholds above):", "",
              f"| group | n | median {names[0]} | flagged | median {names[1]} | flagged |",
              "|---|---|---|---|---|---|"]
    for key in sorted(groups, key=lambda k: (k.startswith("T="), k)):
        g = figures["groups"][key]
        lines.append(f"| {key} | {g['n']} | {g['median'][names[0]]:.3f} | "
                     f"{g['flagged'][names[0]]} | {g['median'][names[1]]:.3f} | "
                     f"{g['flagged'][names[1]]} |")
    sc = figures["scoring"]
    gen_rate = gen["generated_tokens"] / max(gen["generation_seconds"], 1e-9)
    lines += ["", f"Scoring: {sc['texts']} passages, {sc['tokens']} tokens in {sc['seconds']} s "
              f"= **{sc['tokens_per_s']} tokens/s** (one process, ORT CPU, batches of 4 "
              f"windows). Generation (cached across runs): {gen['generated_tokens']} tokens in "
              f"{gen['generation_seconds']} s ({gen_rate:.1f} tokens/s, batches of "
              f"{args.batch}); {gen['completions_too_short']} of {gen['completions_tried']} "
              f"completions were under {MIN_TOKENS} tokens and left out. Other processes kept "
              f"{figures['cpu'].get('foreign_cores', '?')} cores busy on average over "
              f"{figures['cpu']['wall_s']} s."]
    publish("curation_detect", lines, figures, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
