"""Text generation benchmark: our ORT decoding (greedy, Token Recycling, prompt lookup, AUTO)
next to Hugging Face transformers `generate()` on the same model, with and without
`prompt_lookup_num_tokens`, over three prompt sets (code, grounded, open chat), in-process.

Reported per set and mode: tokens/s (completion tokens / generate() wall time, prefill
included), forward passes per token, mean accepted tokens per verification step (tokens produced
by decoding steps / decoding steps, the bonus token included; 1.0 without speculation), the
speedup over our greedy, time to first token, and how many outputs equal our greedy tokens.

Fairness: every mode runs every prompt; our four modes run interleaved, in a seeded random order
per prompt, and the transformers peers afterwards (torch's spinning OpenMP threads slow whatever
runs right after them); each of our speculative modes has its own Token-Recycling matrix,
warmed by the same separate warm-up prompts (a worker's state after earlier traffic) and then
only by its own requests, so no mode sees another mode's output for the measured prompt. Other
sessions may share the machine: the foreign CPU load during the run is recorded with the
figures.

Also measured first: the forward cost versus tokens fed (the curve that sizes the draft tree),
and with --sweep, Token Recycling's speed per tree size on the code set.

Usage: python -m bench.textgen [--quick] [--no-hf] [--sweep] [--max-new-tokens N] [--no-write]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench import machine
from bench.report import publish
from bench.textgen_mesh import TextgenMesh, stream_once, stream_summary
from workers.textgen.decoding import GenerationParams
from workers.textgen.export import export_model, load_reference_model
from workers.textgen.session import OrtSession, load_generator
from workers.textgen.speculation import TokenRecycler, size_tree

OURS = ("off", "token_recycling", "prompt_lookup", "auto")
PEERS = ("hf_greedy", "hf_prompt_lookup")


def _doc(module_name: str, limit: int = 1400) -> str:
    import importlib

    return " ".join((importlib.import_module(module_name).__doc__ or "").split())[:limit]


def prompt_sets() -> dict[str, list]:
    """(set name) -> list of prompts: a messages list (chat template) or raw text."""
    code = [
        [{"role": "user", "content": "Write a Python function that parses a CSV file and "
                                     "returns a list of dicts, with a docstring and type hints."}],
        [{"role": "user", "content": "Write a Python class `LRUCache` with get and put methods "
                                     "in O(1), using a dict and a doubly linked list."}],
        [{"role": "user", "content": "Write a JavaScript function that deep-clones an object, "
                                     "handling arrays and nested objects."}],
        [{"role": "user", "content": "Write a C function that reverses a singly linked list, "
                                     "with the struct definition."}],
        "import os\nimport sys\n\n\ndef walk_python_files(root):\n    \"\"\"Yield the paths "
        "of all .py files under root.\"\"\"\n",
        "class Matrix:\n    def __init__(self, rows, cols):\n        self.rows = rows\n"
        "        self.cols = cols\n        self.data = [[0] * cols for _ in range(rows)]\n\n"
        "    def __add__(self, other):\n",
        [{"role": "user", "content": "Write a SQL schema for a blog with users, posts and "
                                     "comments tables, with foreign keys."}],
        [{"role": "user", "content": "Write a bash script that backs up a directory to a "
                                     "timestamped tar.gz file and keeps the last 5 backups."}],
    ]
    grounded = []
    for module, task in (("argparse", "Summarize the passage in three sentences."),
                         ("hashlib", "List every function or algorithm name the passage "
                                     "mentions."),
                         ("uuid", "Extract the UUID versions the passage describes, one per "
                                  "line."),
                         ("copy", "Summarize the passage, then quote its most important "
                                  "sentence."),
                         ("sched", "Explain, using the passage, how to schedule an event."),
                         ("struct", "Extract the functions the passage names and say what "
                                    "each does."),
                         ("socket", "List the functions and classes mentioned in the passage."),
                         ("unittest", "Summarize the passage for a beginner.")):
        grounded.append([{"role": "user", "content": f"Passage:\n{_doc(module)}\n\n{task}"}])
    chat = [[{"role": "user", "content": c}] for c in (
        "What are some good habits for staying productive while working from home?",
        "Explain the difference between a virus and a bacterium.",
        "Give me a recipe for a simple vegetable soup.",
        "What should I consider when buying a used car?",
        "Write a short poem about the ocean at night.",
        "How does a bill become a law in the United States?",
        "What are the pros and cons of electric cars?",
        "Plan a one-day itinerary for a visit to Paris.",
    )]
    return {"code": code, "grounded": grounded, "chat": chat}


def warmup_prompts() -> list:
    """Separate prompts that warm the Token-Recycling matrices before measuring."""
    texts = ["Write a Python function that computes the median of a list.",
             "Write a Go function that reads a file line by line.",
             "Write a Python script that downloads a web page and counts its words.",
             "Implement a queue with two stacks in Java.",
             "Explain what recursion is with an example in Python.",
             "What is the difference between TCP and UDP?",
             "Give me five tips for learning a new language.",
             "Summarize the causes of the French Revolution."]
    return [[{"role": "user", "content": t}] for t in texts] + [
        [{"role": "user", "content": f"Passage:\n{_doc('tempfile')}\n\nSummarize the passage."}],
        [{"role": "user", "content": f"Passage:\n{_doc('io')}\n\nList the classes it names."}]]


def _encode(tok, prompt) -> list[int]:
    return tok.encode_messages(prompt) if isinstance(prompt, list) else tok.encode(prompt)


def run_ours(gen, ids, mode, max_new) -> dict:
    res = gen.generate(ids, GenerationParams(max_new_tokens=max_new, speculation=mode))
    prefill = -(-len(ids) // gen.prefill_chunk)
    steps = res.usage.forward_passes - prefill
    n = len(res.token_ids) + (res.finish_reason == "eos")
    return {"tokens": len(res.token_ids), "seconds": res.seconds,
            "ttft": res.first_token_seconds, "forwards": res.usage.forward_passes,
            "decode_steps": steps, "decode_tokens": max(0, n - 1),
            "accepted": res.usage.accepted_draft_tokens, "ids": res.token_ids}


def run_hf(model, ids, max_new, lookup: bool) -> dict:
    import torch

    kw = {"prompt_lookup_num_tokens": 10} if lookup else {}
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long), **kw)
    seconds = time.perf_counter() - t0
    gen = out[0, len(ids):].tolist()
    eos = next((i for i, t in enumerate(gen) if t in (0, 2)), len(gen))
    return {"tokens": eos, "seconds": seconds, "ttft": None, "ids": gen[:eos]}


def summarize(rows: list[dict], greedy_rows: list[dict]) -> dict:
    tokens = sum(r["tokens"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    out = {"prompts": len(rows), "tokens": tokens, "seconds": round(seconds, 2),
           "tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
           "same_as_greedy": sum(r["ids"] == g["ids"] for r, g in zip(rows, greedy_rows,
                                                                         strict=True))}
    if "forwards" in rows[0]:
        steps = sum(r["decode_steps"] for r in rows)
        out["forwards_per_token"] = round(sum(r["forwards"] for r in rows) / max(tokens, 1), 3)
        out["mean_accepted_per_step"] = round(
            sum(r["decode_tokens"] for r in rows) / max(steps, 1), 2)
        out["ttft_median_s"] = round(statistics.median(r["ttft"] for r in rows), 3)
    return out


def measure_streaming(redis_url: str, sets: dict, tok, rows: dict, max_new: int) -> dict:
    """GenerateStream through a mesh of its own, AUTO, each set's prompts one at a time, after
    the worker has seen the same warm-up prompts as the in-process generators."""
    mesh = TextgenMesh(redis_url)
    try:
        mesh.start()
        with mesh.client() as client:
            for prompt in warmup_prompts():
                stream_once(client, prompt, max_new, "auto")
            out = {}
            for set_name, prompts in sets.items():
                got = [stream_once(client, p, max_new, "auto") for p in prompts]
                out[set_name] = stream_summary(got, rows[(set_name, "auto")])
                print(f"  gRPC stream {set_name}: TTFT median {out[set_name]['ttft_median_s']} s",
                      flush=True)
        return out
    finally:
        mesh.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.textgen", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 prompts per set, 32 tokens")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--per-set", type=int, default=8, help="prompts per set (max 8)")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers peers")
    parser.add_argument("--sweep", action="store_true",
                        help="also time Token Recycling per tree size on the code set")
    parser.add_argument("--threads", type=int, default=0, help="ORT/torch threads (0=cores)")
    parser.add_argument("--no-grpc", action="store_true",
                        help="skip streaming through the mesh (gRPC time to first token)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6",
                        help="Redis DB the benchmark mesh may flush (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    per_set, max_new = (2, 32) if args.quick else (min(args.per_set, 8), args.max_new_tokens)

    facts = machine.describe(repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    folder = export_model()
    session = OrtSession(folder / "model.onnx", threads=args.threads or None)
    gens = {mode: load_generator(folder, session=session, recycler_state=TokenRecycler(49152))
            for mode in OURS}
    tok = gens["off"].tokenizer

    curve = gens["off"].measure_cost_curve(repeats=7)
    base = curve[1]
    chosen = size_tree(curve)
    print("forward cost vs tokens (past 200): " + "  ".join(
        f"{n}: {t * 1000:.1f} ms ({t / base:.2f}x)" for n, t in curve.items()))
    print(f"tree size from this curve: {chosen} nodes (default {gens['off'].tree_nodes})")

    for prompt in warmup_prompts():
        ids = _encode(tok, prompt)
        for mode in OURS[1:]:
            gens[mode].generate(ids, GenerationParams(max_new_tokens=max_new, speculation=mode))

    # Phase 1: our modes, in a seeded random order per prompt. Phase 2: the transformers peers,
    # loaded only then (torch's OpenMP threads keep spinning after a call and would slow
    # whichever of our modes ran next).
    sets = {name: prompts[:per_set] for name, prompts in prompt_sets().items()}
    rows: dict[tuple[str, str], list[dict]] = {}
    shuffle = random.Random(0)
    for set_name, prompts in sets.items():
        for prompt in prompts:
            ids = _encode(tok, prompt)
            order = list(OURS)
            shuffle.shuffle(order)
            for mode in order:
                rows.setdefault((set_name, mode), []).append(run_ours(gens[mode], ids, mode,
                                                                      max_new))
            print(f"  {set_name}: {len(ids)} prompt tokens, " + ", ".join(
                f"{m} {rows[(set_name, m)][-1]['tokens'] / rows[(set_name, m)][-1]['seconds']:.1f}"
                for m in OURS) + " tok/s", flush=True)
    streaming = {} if args.no_grpc else measure_streaming(args.redis_url, sets, tok, rows,
                                                           max_new)
    modes = list(OURS)
    if not args.no_hf:
        import torch

        torch.set_num_threads(args.threads or machine.usable_cores())
        hf, _ = load_reference_model(attn_implementation="sdpa")
        modes += list(PEERS)
        for set_name, prompts in sets.items():
            for i, prompt in enumerate(prompts):
                ids = _encode(tok, prompt)
                for mode in (PEERS if i % 2 == 0 else PEERS[::-1]):
                    rows.setdefault((set_name, mode), []).append(
                        run_hf(hf, ids, max_new, lookup=mode == "hf_prompt_lookup"))

    sweep = {}
    if args.sweep:
        for nodes in (2, 4, 6, 8, 10, 12, 16, 24):
            g = load_generator(folder, session=session, recycler_state=TokenRecycler(49152),
                               tree_nodes=nodes)
            for prompt in warmup_prompts():
                g.generate(_encode(tok, prompt), GenerationParams(
                    max_new_tokens=max_new, speculation="token_recycling"))
            rs = [run_ours(g, _encode(tok, p), "token_recycling", max_new)
                  for p in sets["code"]]
            sweep[nodes] = summarize(rs, rs)
            print(f"  sweep {nodes} nodes: {sweep[nodes]['tokens_per_s']} tok/s, "
                  f"{sweep[nodes]['mean_accepted_per_step']} tokens/step", flush=True)

    load = meter.stop()
    table = {set_name: {mode: summarize(rows[(set_name, mode)], rows[(set_name, "off")])
                        for mode in modes} for set_name in sets}
    for set_name in table:
        greedy = table[set_name]["off"]["tokens_per_s"]
        for mode in modes:
            t = table[set_name][mode]
            t["speedup_vs_greedy"] = round(t["tokens_per_s"] / greedy, 2) if greedy else None

    lines = [f"# Text generation benchmark ({machine.one_line(facts)})", "",
             f"SmolLM2-135M-Instruct fp32, {per_set} prompts per set, max_new_tokens "
             f"{max_new}, greedy. Foreign CPU load during the run: "
             f"{load.get('foreign_cores', '?')} cores of {facts['cores_usable']} "
             f"(other sessions share this machine). Git {facts.get('git', '?')}.", "",
             "Forward cost vs tokens fed (past 200): " + ", ".join(
                 f"{n}: {t / base:.2f}x" for n, t in curve.items())
             + f" (n=1 {base * 1000:.1f} ms). Tree size used: {gens['off'].tree_nodes} nodes "
             f"(this curve's optimum: {chosen}).", "",
             "| set | mode | tok/s | speedup | fwd/token | tokens/step | TTFT s | = greedy |",
             "|---|---|---|---|---|---|---|---|"]
    for set_name, modes_t in table.items():
        for mode, t in modes_t.items():
            lines.append(
                f"| {set_name} | {mode} | {t['tokens_per_s']} | {t['speedup_vs_greedy']} | "
                f"{t.get('forwards_per_token', '—')} | {t.get('mean_accepted_per_step', '—')} | "
                f"{t.get('ttft_median_s', '—')} | {t['same_as_greedy']}/{t['prompts']} |")
    if streaming:
        lines += ["", "Streaming through the mesh (GenerateStream: client -> gateway -> Celery "
                  "-> worker -> the job's Redis stream -> client), AUTO, one request at a time, "
                  "next to the same prompts decoded in-process:", "",
                  "| set | TTFT gRPC median s | TTFT gRPC max s | TTFT in-process median s | "
                  "mesh cost ms | tok/s gRPC | = in-process |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {s['ttft_median_s']} | {s['ttft_max_s']} | "
                  f"{s['inproc_ttft_median_s']} | {s.get('mesh_overhead_ms', '—')} | "
                  f"{s['tokens_per_s']} | {s['same_as_inproc']}/{s['prompts']} |"
                  for name, s in streaming.items()]
    if sweep:
        lines += ["", "Token Recycling tree size sweep (code set):", "",
                  "| nodes | tok/s | tokens/step |", "|---|---|---|"]
        lines += [f"| {n} | {s['tokens_per_s']} | {s['mean_accepted_per_step']} |"
                  for n, s in sweep.items()]
    publish("textgen", lines, {
        "machine": facts, "load": load, "max_new_tokens": max_new, "cost_curve_s": curve,
        "tree_nodes": gens["off"].tree_nodes, "tree_nodes_optimum": chosen, "table": table,
        "sweep": sweep, "streaming": streaming}, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
