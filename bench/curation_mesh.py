"""`python -m bench.curation_mesh`: the heuristic curation pipeline through the mesh, per worker.

The same four heuristic filters as `bench.curation_data` section 1 (gopher_repetition →
gopher_quality → c4_quality → fineweb_quality, datatrove's defaults) over the same kind of
corpus (man pages, standard-library docstrings, licences, Debian copyright files; 4 JSONL
shards), run three ways in one run, interleaved:

* **in-process**: `read_shard` + `run_filters` in this process (the path `bench.curation_data`
  compares with datatrove's LocalPipelineExecutor, 1.006× its documents/s there);
* **mesh, 1 worker child**: the shards uploaded once through `CreateShardUpload`, then
  `SubmitCurate` to a real curation gateway, one Celery shard task per shard on one prefork
  worker with concurrency 1, the global stage (outputs, `removed/`, report) at the end; timed
  from the submit to the job's SUCCEEDED as the client sees it (`WaitJob`);
* **mesh, N worker children** (default 2: this machine's cores): the same, concurrency N.

Each mesh run writes to its own output prefix (the same prefix would resume and skip every
shard). Parity: the job's documents kept and per-reason removal counts against in-process.
Writes `bench/results/curation_mesh.md` and `.json`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import machine
from bench import ocr_mesh as om
from bench.curation_data import HEURISTICS, build_corpus, ours, write_shards
from bench.report import publish


def start_mesh(redis_url: str):
    """rclone S3 + one curation gateway on a Redis DB of the benchmark's own; workers are
    started per run. Returns (stack, gateway address)."""
    from shared.local.stack import LocalStack, free_port

    om.claim_db(redis_url)
    s3_port, gw_port = free_port(), free_port()
    root = Path(tempfile.mkdtemp(prefix="jobmesh-bench-curation-"))
    stack = LocalStack(root, {**om.bench_env(redis_url, s3_port), "JOBMESH_METRICS_PORT": "0"})
    stack.start_s3(s3_port)
    from shared.config import Settings
    from shared.storage.artifacts import ArtifactStore

    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    ArtifactStore.from_settings(settings).ensure_bucket(settings.artifacts_bucket)
    stack.start_gateway("curation", gw_port)
    return stack, f"127.0.0.1:{gw_port}"


def mesh_run(stack, client, children: int, prefix: str, out: str) -> tuple[float, dict]:
    """(seconds from submit to SUCCEEDED, summary) with one worker of `children` children."""
    from shared.client import job_response

    name = f"worker-curation-{children}"
    stack.start_worker("curation", name=name, concurrency=children)
    stack.wait_consumers("curation.cpu", timeout=120)
    try:
        t0 = time.perf_counter()
        job = client.curation_submit([{"step": s} for s in HEURISTICS], out,
                                     input_prefix=prefix)
        done = client.wait_job(job.name, timeout_s=3600)
        seconds = time.perf_counter() - t0
    finally:
        stack.stop(name)
        _until_no_consumer(stack)
    if done.state != 3:  # JOB_STATE_SUCCEEDED
        raise RuntimeError(f"curation job ended {done.state}: {done.error.message}")
    s = job_response(done)
    reasons = Counter()
    for step in s.steps:
        for reason, n in step.reasons.items():
            reasons[reason] += n
    return seconds, {"kept": s.documents_kept, "in": s.documents_in, "reasons": reasons}


def _until_no_consumer(stack, timeout: float = 30.0) -> None:
    """A stopped worker's beat lingers for the consumer TTL; the next run must not count the
    next worker's start-up, so it starts only once no beat is fresh."""
    import redis

    from shared.jobs.records import consumers_key

    client = redis.Redis.from_url(stack.env["JOBMESH_REDIS_URL"])
    ttl = float(stack.env.get("JOBMESH_CONSUMER_TTL_S", "6"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and client.zcount(
            consumers_key("curation.cpu"), time.time() - ttl, "+inf"):
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.curation_mesh", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--man-pages", type=int, default=500, help="man pages in the corpus")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per path (interleaved)")
    p.add_argument("--children", type=int, default=2, help="worker children of the wide run")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)

    from shared.client import Client, ClientSettings

    facts = machine.describe(args.redis_url, repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    corpus = build_corpus(args.man_pages)
    sources = Counter(d.metadata["source"] for d in corpus)
    widths = sorted({1, args.children})
    runs: dict[str, list[float]] = {"in-process": [], **{f"mesh-{c}": [] for c in widths}}
    stack = None
    try:
        stack, address = start_mesh(args.redis_url)
        with tempfile.TemporaryDirectory(prefix="curation-shards-") as tmp, Client(
                ClientSettings(endpoint=address, api_key=om.API_KEY), timeout_s=120) as client:
            paths = write_shards(corpus, Path(tmp))
            t0 = time.perf_counter()
            for path in paths:
                client.curation_upload(f"bench/in/{path.name}", path.read_bytes())
            upload_s = time.perf_counter() - t0
            order = ["in-process", *(f"mesh-{c}" for c in widths)]
            summaries, parity = {}, {}
            for r in range(args.repeats):
                for path_name in order if r % 2 == 0 else order[::-1]:
                    if path_name == "in-process":
                        (wall, _), kept, removed, stats = ours(paths)
                        runs[path_name].append(wall)
                        local_reasons = Counter({k.replace(".removed:", ":"): v
                                                 for k, v in stats.items() if ".removed:" in k})
                        local = {"kept": len(kept), "in": len(kept) + len(removed)}
                    else:
                        children = int(path_name.split("-")[1])
                        wall, summary = mesh_run(stack, client, children, "bench/in",
                                                 f"bench/out-{path_name}-{r}")
                        runs[path_name].append(wall)
                        summaries[path_name] = summary
                    print(f"  {path_name} run {r}: {runs[path_name][-1]:.1f} s", flush=True)
            for name, s in summaries.items():
                parity[name] = {
                    "kept": s["kept"], "kept_in_process": local["kept"],
                    "reasons_differ": sorted(k for k in s["reasons"].keys() | local_reasons
                                             if s["reasons"][k] != local_reasons[k])}
    finally:
        om.release(stack, args.redis_url)
    load = meter.stop()
    n = local["in"]
    medians = {k: statistics.median(v) for k, v in runs.items()}
    base = medians["in-process"]
    rows = []
    for name, sec in medians.items():
        children = 1 if name == "in-process" else int(name.split("-")[1])
        rows.append({"path": name, "children": children, "seconds": [round(x, 1) for x in
                                                                     runs[name]],
                     "docs_per_s": round(n / sec, 1),
                     "docs_per_s_per_child": round(n / sec / children, 1),
                     "ratio_vs_in_process": round(base / sec, 3)})
    result = {"machine": facts, "load": load, "documents": n, "sources": dict(sources),
              "upload_seconds": round(upload_s, 1), "repeats": args.repeats, "rows": rows,
              "parity": parity}
    lines = [f"# Curation through the mesh ({facts['cores_usable']} cores, {facts['cpu_model']}, "
             f"{facts['date']})", "",
             f"{n} real documents ({', '.join(f'{v} {k}' for k, v in sources.items())}) in 4 "
             "JSONL shards; pipeline " + " → ".join(HEURISTICS) + " (datatrove's defaults). "
             f"Shards uploaded once through presigned URLs ({upload_s:.1f} s). Mesh: rclone S3, "
             "one curation gateway, one prefork worker per run, the machine's Redis; timed "
             "from SubmitCurate to SUCCEEDED (WaitJob), global stage included. Median of "
             f"{args.repeats} interleaved runs per path. Foreign CPU load during the run: "
             f"{load.get('foreign_cores', '?')} cores of {facts['cores_usable']}. Git "
             f"{facts.get('git', '?')}.", "",
             "| path | worker children | documents/s | documents/s per child | ratio vs "
             "in-process | seconds per run |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['path']} | {r['children']} | {r['docs_per_s']} | "
              f"{r['docs_per_s_per_child']} | {r['ratio_vs_in_process']} | {r['seconds']} |"
              for r in rows]
    lines += [""] + [f"Parity, {name}: kept {p['kept']} (in-process {p['kept_in_process']}); "
                     "removal reasons whose counts differ: "
                     f"{', '.join(p['reasons_differ']) or 'none'}." for name, p in parity.items()]
    publish("curation_mesh", lines, result, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
