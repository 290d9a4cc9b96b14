"""`python -m bench.batch`: batch throughput (CreateBatch) next to the same items sent as
individual sync Recognize calls from a client at concurrency 8, on one OCR mesh in one run.

Both paths read the same images (bench/ocr_images.py, round-robin) with the same worker (2
prefork children). The batch figure is wall time from building the manifest to having the
output file downloaded (upload, validation, chunking, the workers, finalizing, download
included), so it is what a client pays. Sync calls are timed from the first request sent to the
last response received. Order A-B-B-A (median of two blocks each) evens out drift. Writes
`bench/results/batch.md` and `.json`."""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import machine
from bench import ocr_mesh as om
from bench.report import publish


def run_sync(address: str, pngs: list[bytes], concurrency: int) -> dict:
    call = om.MeshOcr(address)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            texts = list(pool.map(lambda png: call(png).text, pngs))
        seconds = time.perf_counter() - t0
    finally:
        call.close()
    return {"seconds": seconds, "items_per_s": len(pngs) / seconds, "texts": texts}


def run_batch(mesh: om.Mesh, pngs: list[bytes]) -> dict:
    from shared.client import Client, ClientSettings

    t0 = time.perf_counter()
    lines = [json.dumps({"custom_id": f"i{k}", "body": {"image": base64.b64encode(p).decode()}})
             for k, p in enumerate(pngs)]
    with Client(ClientSettings(endpoint=mesh.address, api_key=om.API_KEY), timeout_s=600) as c:
        job = c.create_batch("ocr", "Recognize", ("\n".join(lines) + "\n").encode())
        job = c.wait_job(job.name, timeout_s=600)
        _, ok, bad = c.batch_results(job.name)
    seconds = time.perf_counter() - t0
    by_id = {e["custom_id"]: e["response"].get("text", "") for e in ok}
    return {"seconds": seconds, "items_per_s": len(pngs) / seconds, "failed": len(bad),
            "state": job.state, "texts": [by_id.get(f"i{k}") for k in range(len(pngs))]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=400, help="images per block")
    p.add_argument("--concurrency", type=int, default=8, help="client threads for sync calls")
    p.add_argument("--worker-concurrency", type=int, default=2)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)

    images, source = om.load_images()
    pngs = [images[k % len(images)][1] for k in range(args.items)]
    facts = machine.describe(args.redis_url, repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    mesh = om.Mesh(args.redis_url, worker_concurrency=args.worker_concurrency).start()
    blocks: dict[str, list[dict]] = {"sync": [], "batch": []}
    try:
        run_sync(mesh.address, pngs[:16], args.concurrency)  # warm both children
        for path in ("sync", "batch", "batch", "sync"):
            r = (run_sync(mesh.address, pngs, args.concurrency) if path == "sync"
                 else run_batch(mesh, pngs))
            blocks[path].append(r)
            print(f"  {path}: {r['items_per_s']:.2f} items/s ({r['seconds']:.1f} s)", flush=True)
    finally:
        mesh.stop()
    load = meter.stop()
    same = sum(a == b for a, b in zip(blocks["sync"][0]["texts"], blocks["batch"][0]["texts"],
                                      strict=True))
    rate = {k: statistics.median(b["items_per_s"] for b in v) for k, v in blocks.items()}
    result = {"machine": facts, "load": load, "items": args.items, "images": source,
              "concurrency": args.concurrency, "worker_concurrency": args.worker_concurrency,
              "items_per_s": {k: round(v, 2) for k, v in rate.items()},
              "ratio_batch_over_sync": round(rate["batch"] / rate["sync"], 3),
              "blocks": {k: [round(b["seconds"], 2) for b in v] for k, v in blocks.items()},
              "batch_failed_lines": sum(b["failed"] for b in blocks["batch"]),
              "same_text": f"{same}/{args.items}"}
    lines = [f"# Batch throughput ({machine.one_line(facts)})", "",
             f"{args.items} OCR images per block ({source}), one OCR worker with "
             f"{args.worker_concurrency} prefork children, blocks A-B-B-A, median of 2. Foreign "
             f"CPU load during the run: {load.get('foreign_cores', '?')} cores of "
             f"{facts['cores_usable']}. Git {facts.get('git', '?')}.", "",
             "| path | items/s | blocks (s) | ratio |", "|---|---|---|---|",
             f"| sync Recognize, {args.concurrency} client threads | {rate['sync']:.2f} | "
             f"{', '.join(str(x) for x in result['blocks']['sync'])} | 1.0 |",
             f"| CreateBatch (upload to results downloaded) | {rate['batch']:.2f} | "
             f"{', '.join(str(x) for x in result['blocks']['batch'])} | "
             f"{result['ratio_batch_over_sync']} |", "",
             f"Same text from both paths: {result['same_text']}; failed batch lines: "
             f"{result['batch_failed_lines']}."]
    publish("batch", lines, result, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
