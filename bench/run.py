"""`python -m bench.run` (what `make bench` calls first): OCR through the mesh vs rapidocr
in-process, and the mesh's dispatch overhead, side by side in one run. Prints a markdown table and
writes `bench/results/ocr.md` and `bench/results/ocr.json`.

`python -m bench.run --eval [options]` (what `make bench` calls second) runs the OCR evaluation
instead (`bench/ocr_eval.py`: CER and throughput of jobmesh vs rapidocr by hand and Tesseract;
`bench/results/ocr_eval.md` / `.json`); `--eval --help` lists its options. See bench/README.md
for what each figure means."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from bench import machine
from bench import ocr_mesh as om

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where the help text already explains them."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark OCR through the jobmesh mesh (gRPC gateway -> Celery on Redis -> "
                    "prefork worker) against rapidocr called in-process on the same images, and "
                    "the dispatch overhead of an empty job. Starts its own S3 server, gateway "
                    "and worker; needs the machine's Redis.",
        formatter_class=_Help)
    g = p.add_argument_group("OCR")
    g.add_argument("--requests", type=int, default=96, metavar="N",
                   help="measured requests per path at concurrency 1 (images round-robin)")
    g.add_argument("--concurrency", type=int, default=8, metavar="C",
                   help="client threads for the throughput figure")
    g.add_argument("--throughput-requests", type=int, default=64, metavar="M",
                   help="requests per throughput block")
    g.add_argument("--blocks", type=int, default=3,
                   help="throughput blocks per path (A-B-B-A order; median reported)")
    g.add_argument("--worker-concurrency", type=int, default=2, metavar="W",
                   help="prefork children of the OCR worker")
    g.add_argument("--ort-threads", type=int, default=0, metavar="T",
                   help="ONNX Runtime intra-op threads for both paths; 0 leaves each side its "
                        "own default (worker: cores / worker concurrency per child; "
                        "in-process: ORT's, all physical cores)")
    g.add_argument("--det-limit-side-len", type=int, default=None, metavar="PX",
                   help="detector resize limit for both paths (default: the worker's own "
                        "default, JOBMESH_OCR_DET_LIMIT_SIDE_LEN)")
    g.add_argument("--det-limit-type", choices=("min", "max"), default=None,
                   help="detector resize rule for both paths (default: the worker's)")
    g.add_argument("--rec-batch-size", type=int, default=None, metavar="B",
                   help="recognition batch for both paths (default: the worker's)")
    g.add_argument("--reference-requests", type=int, default=24, metavar="R",
                   help="concurrency-1 requests for each in-process reference point "
                        "(rapidocr with a worker child's thread count; rapidocr out of the "
                        "box)")
    g.add_argument("--skip-references", action="store_true",
                   help="no in-process reference points beyond the main comparison")
    g.add_argument("--skip-inprocess", action="store_true",
                   help="measure the mesh only (no rapidocr engine in this process)")
    g.add_argument("--skip-ocr", action="store_true", help="no OCR figures at all")
    g = p.add_argument_group("dispatch overhead")
    g.add_argument("--dispatch-jobs", type=int, default=200, metavar="J",
                   help="empty jobs (jobmesh.diag.v1.noop), one at a time")
    g.add_argument("--grpc-calls", type=int, default=200, metavar="G",
                   help="gRPC-only baseline calls (GetJob and health Check each)")
    g.add_argument("--skip-dispatch", action="store_true", help="no dispatch figures")
    g = p.add_argument_group("run")
    g.add_argument("--eval", action="store_true",
                   help="run the OCR evaluation (bench/ocr_eval.py) instead; the options after "
                        "it are the evaluation's (`--eval --help` lists them)")
    g.add_argument("--quick", action="store_true",
                   help="smoke run: a few requests of each kind (figures are not meaningful)")
    g.add_argument("--redis-url", default="redis://127.0.0.1:6379/7",
                   help="Redis DB the mesh uses; it is FLUSHED before and after")
    g.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                   help="where ocr.md and ocr.json go")
    g.add_argument("--no-write", action="store_true", help="print only; write no files")
    g.add_argument("--keep-logs", action="store_true",
                   help="keep the mesh's process logs (their folder is printed)")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.throughput_requests, args.blocks = 8, 8, 1
        args.reference_requests = 4
        args.dispatch_jobs, args.grpc_calls = 20, 20
    for name in ("requests", "concurrency", "throughput_requests", "blocks",
                 "worker_concurrency", "dispatch_jobs", "grpc_calls", "reference_requests"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ------------------------------------------------------------------------------------------
# Measuring


def measure(args: argparse.Namespace, log=print) -> dict:
    facts = machine.describe(args.redis_url, REPO)
    images, source = om.load_images()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result: dict = {"machine": facts, "settings": settings,
                    "images": {"source": source, "items": [
                        {"name": n, "bytes": len(png), "size": list(om.image_size(png)),
                         "expected": exp} for n, png, exp in images]}}
    base = om.worker_ocr_defaults()
    config = om.OcrConfig(
        args.det_limit_side_len or base.det_limit_side_len,
        args.det_limit_type or base.det_limit_type,
        args.rec_batch_size or base.rec_batch_size,
        args.ort_threads)
    result["ocr_config"] = {
        **vars(config),
        "worker_threads_per_child": om.worker_threads_per_child(config,
                                                                args.worker_concurrency),
        "inprocess_threads": config.ort_threads or "ORT default (all physical cores)",
    }
    t_start = time.perf_counter()
    meter = machine.CpuMeter()
    mesh = om.Mesh(args.redis_url, args.worker_concurrency, config, args.keep_logs)
    log(f"starting the mesh (worker concurrency {args.worker_concurrency}) ...")
    mesh.start()
    try:
        result["mesh"] = {"address": mesh.address, "startup_s": mesh.startup_s,
                          "worker_concurrency": args.worker_concurrency,
                          "worker_env": config.worker_env()}
        if not args.skip_ocr:
            result["ocr"] = _measure_ocr(args, images, mesh, config, log)
        if not args.skip_dispatch:
            log(f"dispatch overhead: {args.dispatch_jobs} empty jobs, {args.grpc_calls} gRPC "
                f"calls ...")
            result["dispatch"] = om.dispatch_overhead(mesh, args.dispatch_jobs, args.grpc_calls)
    except BaseException:
        log(mesh.logs())
        raise
    finally:
        mesh.stop()
        if args.keep_logs:
            log(f"logs kept in {mesh.root / 'logs'}")
    facts["load_average_end"] = machine.load_average()
    facts["cpu_during_run"] = meter.stop()
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return result


def _measure_ocr(args, images, mesh: om.Mesh, config: om.OcrConfig, log) -> dict:
    mesh_fn = om.MeshOcr(mesh.address)
    inproc_fn = None
    out: dict = {}
    try:
        if not args.skip_inprocess:
            t = time.perf_counter()
            inproc_fn = om.InProcessOcr(config)
            out["inprocess_engine_load_s"] = round(time.perf_counter() - t, 2)
        log(f"OCR: warm-up and agreement over {len(images)} images ...")
        ref, out["agreement"] = om.check_agreement(images, mesh_fn, inproc_fn)
        # A second, concurrent warm-up pass reaches every prefork child of the worker.
        om.throughput_block(images, lambda _n, png: mesh_fn(png),
                            max(len(images), args.worker_concurrency * 2),
                            args.worker_concurrency)
        consistency = om.Consistency(ref)
        paths = {"mesh": consistency.wrap("mesh", mesh_fn)}
        requests = {"mesh": args.requests}
        if inproc_fn is not None:
            paths["inprocess"] = consistency.wrap("inprocess", inproc_fn)
            requests["inprocess"] = args.requests
            refs = {} if args.skip_references else _reference_paths(args, config)
            for label, (fn, _desc) in refs.items():
                for _name, png, _exp in images:  # warm-up; the first answers become the refs
                    fn(png)
                paths[label] = consistency.wrap(label, fn)
                requests[label] = args.reference_requests
            out["references"] = {label: desc for label, (_fn, desc) in refs.items()}
        log(f"OCR: latency at concurrency 1: {requests} requests ...")
        lat, per_image = om.latency_c1(images, paths, requests)
        out["latency_c1"] = {k: om.summarize(v) for k, v in lat.items()}
        out["latency_c1_per_image"] = {
            label: {name: om.summarize(v) for name, v in by_name.items()}
            for label, by_name in per_image.items()}
        log(f"OCR: throughput at concurrency {args.concurrency}, {args.blocks} x "
            f"{args.throughput_requests} requests per path ...")
        main_paths = {k: v for k, v in paths.items() if k in ("mesh", "inprocess")}
        out["throughput"] = om.throughput(images, main_paths, args.throughput_requests,
                                          args.concurrency, args.blocks)
        out["consistency"] = {"checked": consistency.checked, "differ": consistency.differ}
        truth = {name: exp for name, _png, exp in images}
        out["references_match_truth"] = {}
        for label in out.get("references", {}):
            seen = {n: txt for n, txt in consistency.texts(label).items() if truth.get(n)}
            out["references_match_truth"][label] = {
                "match": sum(txt == truth[n] for n, txt in seen.items()), "of": len(seen)}
        if inproc_fn is not None:
            m, r = out["latency_c1"]["mesh"], out["latency_c1"]["inprocess"]
            tm, tr = out["throughput"]["mesh"], out["throughput"]["inprocess"]
            out["ratios"] = {
                "latency_p50": om.ratio(m["p50_ms"], r["p50_ms"]),
                "latency_p95": om.ratio(m["p95_ms"], r["p95_ms"]),
                "throughput": om.ratio(tm["images_per_s"], tr["images_per_s"]),
            }
            out["differences_ms"] = {
                "latency_p50": round(m["p50_ms"] - r["p50_ms"], 2),
                "latency_p95": round(m["p95_ms"] - r["p95_ms"], 2),
            }
    finally:
        mesh_fn.close()
    return out


def _reference_paths(args, config: om.OcrConfig) -> dict:
    """Extra in-process points at concurrency 1 that explain the main ratio."""
    refs = {}
    per_child = om.worker_threads_per_child(config, args.worker_concurrency)
    if not config.ort_threads and per_child != (os.cpu_count() or 1):
        refs["inprocess_child_threads"] = (
            om.InProcessOcr(config, ort_threads=per_child),
            f"rapidocr, same config, {per_child} ORT thread(s): a worker child's share")
    default = om.OcrConfig(736, "min", 6)
    if (config.det_limit_side_len, config.det_limit_type, config.rec_batch_size) != \
            (default.det_limit_side_len, default.det_limit_type, default.rec_batch_size):
        refs["rapidocr_defaults"] = (
            om.InProcessOcr(None, ort_threads=config.ort_threads),
            "rapidocr's own defaults (detector 736/min, rec batch 6; use_cls off)")
    return refs


# ------------------------------------------------------------------------------------------
# Rendering


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.0f} ms" if v >= 100 else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _signed_ms(v: float | None) -> str:
    return "–" if v is None else ("+" if v >= 0 else "−") + _ms(abs(v))


def render(result: dict, command: str) -> str:
    f = result["machine"]
    s = result["settings"]
    load0 = f.get("load_average_start") or ["?"]
    load1 = f.get("load_average_end") or ["?"]
    lines = [
        "# OCR benchmark: jobmesh vs rapidocr in-process",
        "",
        f"- **Machine**: {machine.one_line(f)} (git {f.get('git', '?')}).",
        f"- **Other load**: {_foreign(f)}; load average (1 min) {load0[0]} before the run, "
        f"{load1[0]} at its end (that one counts the benchmark's own threads). Other sessions "
        f"may share this machine: cases are interleaved so they share any disturbance.",
        f"- **Command**: `{command}` ({result['elapsed_s']} s in all).",
    ]
    imgs = result["images"]
    names = ", ".join(f"{i['name']} {i['size'][0]}×{i['size'][1]}" for i in imgs["items"])
    lines.append(f"- **Images**: {len(imgs['items'])} from {imgs['source']}: {names}.")
    mesh = result.get("mesh", {})
    cfg = result.get("ocr_config", {})
    lines.append(
        f"- **OCR settings, both paths**: PP-OCRv6 det/rec from rapidocr's package, no angle "
        f"classifier, min confidence 0.5, detector resize {cfg.get('det_limit_type')} side "
        f"{cfg.get('det_limit_side_len')} px, recognition batch {cfg.get('rec_batch_size')} "
        f"(the worker's defaults; rapidocr configured to match).")
    lines.append(
        f"- **Mesh**: one OCR gateway + one prefork OCR worker, concurrency "
        f"{mesh.get('worker_concurrency')}, {cfg.get('worker_threads_per_child')} ORT intra-op "
        f"thread(s) per child; Redis {f['versions'].get('redis-server', '?')}, rclone S3; sync "
        f"`Recognize` over gRPC, PNG inline.")
    ocr = result.get("ocr")
    if ocr and "inprocess" in ocr.get("latency_c1", {}):
        lines.append(
            f"- **In-process**: one `RapidOCR` engine in the benchmark process, PNG bytes in, "
            f"ORT intra-op threads: {cfg.get('inprocess_threads')}; at concurrency "
            f"{s['concurrency']} its {s['concurrency']} threads share that one engine.")
    if ocr:
        lines += ["", *_ocr_table(ocr, s, imgs["items"])]
    if "dispatch" in result:
        lines += ["", *_dispatch_table(result["dispatch"])]
    lines += ["", "What each figure means: `bench/README.md`. Raw figures: `ocr.json`.", ""]
    return "\n".join(lines)


def _foreign(f: dict) -> str:
    cpu = f.get("cpu_during_run", {})
    if "foreign_cores" not in cpu:
        return "not measured"
    text = (f"other processes kept {cpu['foreign_cores']:.2f} of {f['cores_usable']} cores busy "
            f"on average during the run (this run's processes: {cpu['own_cores']:.2f})")
    if cpu.get("steal_cores"):
        text += f", hypervisor steal {cpu['steal_cores']:.2f} cores"
    return text


def _ocr_table(ocr: dict, s: dict, images: list[dict]) -> list[str]:
    lat, thr = ocr["latency_c1"], ocr["throughput"]
    inproc = "inprocess" in lat
    ratios, diffs = ocr.get("ratios", {}), ocr.get("differences_ms", {})
    c = s["concurrency"]
    out = ["## OCR: same images, same models, same work", "",
           "| figure | mesh (gRPC → Celery → worker) | rapidocr in-process | mesh / in-process "
           "| mesh − in-process |",
           "|---|---|---|---|---|"]

    def row(label, m, r, rat, diff):
        out.append(f"| {label} | {m} | {r} | {rat} | {diff} |")

    ri = lat.get("inprocess", {})
    n = lat["mesh"]["n"]
    row(f"latency p50, concurrency 1 (n={n} each)", _ms(lat["mesh"]["p50_ms"]),
        _ms(ri.get("p50_ms")), _x(ratios.get("latency_p50")),
        _signed_ms(diffs.get("latency_p50")))
    row(f"latency p95, concurrency 1 (n={n} each)", _ms(lat["mesh"]["p95_ms"]),
        _ms(ri.get("p95_ms")), _x(ratios.get("latency_p95")),
        _signed_ms(diffs.get("latency_p95")))
    tm, tr = thr["mesh"], thr.get("inprocess", {})
    blocks = f"{s['blocks']}×{s['throughput_requests']}"
    row(f"throughput, concurrency {c} (median of {blocks} requests)",
        f"{tm['images_per_s']:.2f} images/s",
        f"{tr['images_per_s']:.2f} images/s" if tr else "–", _x(ratios.get("throughput")), "")

    def lat_under_load(t):
        p50s = [b["latency"]["p50_ms"] for b in t["blocks"]]
        return _ms(sorted(p50s)[len(p50s) // 2])

    row(f"latency p50 under concurrency {c}", lat_under_load(tm),
        lat_under_load(tr) if tr else "–", "", "")
    ag = ocr["agreement"]
    if inproc:
        row("same work: mesh `lines[].text` == rapidocr `txts` (boxes, order, strings)",
            f"{ag['lines_equal']}/{ag['n']} images", "", "", "")
        row("mesh `text` == rapidocr `txts` joined by `\\n`",
            f"{ag['text_equal']}/{ag['n']} images", "", "", "")
        row("mesh `text` == rapidocr boxes joined into rows by the mesh's layout rule",
            f"{ag['row_text_equal']}/{ag['n']} images", "", "", "")
    if "mesh_matches_expected" in ag:
        row("text == the image's ground truth", f"{ag['mesh_matches_expected']}/{ag['n']}",
            f"{ag['inprocess_matches_expected']}/{ag['n']}" if inproc else "–", "", "")
    cons = ocr["consistency"]

    def differ(label):
        if label not in cons["checked"]:
            return "–"
        return f"{cons['differ'][label]}/{cons['checked'][label]}"

    row("measured responses differing from the warm-up text", differ("mesh"),
        differ("inprocess"), "", "")
    out += ["", "Ratios above 1 mean the mesh takes longer (latency) or does more (throughput)."]
    refs = ocr.get("references") or {}
    if refs:
        m50 = lat["mesh"]["p50_ms"]
        out += ["", f"Reference points, in-process at concurrency 1 (interleaved with the rows "
                f"above; n={s['reference_requests']} each):", "",
                "| in-process variant | latency p50 | latency p95 | mesh p50 / this p50 "
                "| text == truth | responses differing |", "|---|---|---|---|---|---|"]
        matches = ocr.get("references_match_truth", {})
        for label, desc in refs.items():
            st = lat.get(label, {})
            mt = matches.get(label, {"match": 0, "of": 0})
            out.append(f"| {desc} | {_ms(st.get('p50_ms'))} | {_ms(st.get('p95_ms'))} "
                       f"| {_x(om.ratio(m50, st.get('p50_ms')))} "
                       f"| {mt['match']}/{mt['of']} images | {differ(label)} |")
    if any(r.get("text_equal") is False for r in ag["images"]):
        out += ["", "Where `text` differs from rapidocr's newline join, it is because the mesh "
                "joins boxes that share a visual row with spaces (rapidocr lists each detected "
                "box, often one per word, as its own line); the row-joined comparison above "
                "applies that same rule to rapidocr's own boxes."]
    out += ["", "Per image (✓ = equal):", "",
            "| image | size | mesh p50 | rapidocr p50 | lines == rapidocr "
            "| text == rapidocr `\\n` join | text == rapidocr row join | mesh == truth "
            "| rapidocr join == truth |",
            "|---|---|---|---|---|---|---|---|---|"]
    sizes = {i["name"]: i["size"] for i in images}
    per = ocr.get("latency_c1_per_image", {})

    def p50(label, name):
        return _ms(per.get(label, {}).get(name, {}).get("p50_ms"))

    def mark(v):
        return "–" if v is None else "✓" if v else "✗"

    for r in ag["images"]:
        w, h = sizes[r["image"]]
        out.append(f"| {r['image']} | {w}×{h} | {p50('mesh', r['image'])} "
                   f"| {p50('inprocess', r['image'])} | {mark(r.get('lines_equal'))} "
                   f"| {mark(r.get('text_equal'))} | {mark(r.get('row_text_equal'))} "
                   f"| {mark(r.get('mesh_matches_expected'))} "
                   f"| {mark(r.get('inprocess_matches_expected'))} |")
    bad = [r for r in ag["images"] if r.get("row_text_equal") is False]
    if bad:
        out += ["", "Images where even the row-joined texts differ:", ""]
        out += [f"- {r['image']}: mesh {r['mesh_text']!r} vs rapidocr "
                f"{r['inprocess_row_text']!r}" for r in bad]
    return out


def _dispatch_table(d: dict) -> list[str]:
    parts = d["empty_job_parts"]
    out = ["## Dispatch overhead: an empty job through the mesh", "",
           "| figure | p50 | p95 | n |", "|---|---|---|---|"]

    def row(label, st):
        out.append(f"| {label} | {_ms(st.get('p50_ms'))} | {_ms(st.get('p95_ms'))} | "
                   f"{st.get('n', 0)} |")

    row("**empty job round trip**: submit → Celery/Redis → worker → SUCCEEDED event seen",
        d["empty_job"])
    row("  ↳ submit: job record + Celery publish (the gateway's `JobDispatcher.submit`)",
        parts["submit"])
    row("  ↳ queued → RUNNING: broker delivery + worker pick-up", parts["queued_to_running"])
    row("  ↳ RUNNING → SUCCEEDED: empty task body + result write", parts["running_to_succeeded"])
    row("  ↳ SUCCEEDED event → waiting client (XREAD wake-up)", parts["succeeded_to_client"])
    row("gRPC `JobService.GetJob` of a finished job (auth + one Redis read)", d["grpc_getjob"])
    row("gRPC health `Check` (transport floor, no auth, no Redis)", d["grpc_health"])
    out += ["", "A sync empty call over gRPC would cost about the empty-job round trip plus one "
            "gRPC round trip. Part p50s need not add up to the total p50 (medians of parts); "
            "the parts come from Redis stream entry ids (1 ms resolution)."]
    return out


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if "--eval" in raw:
        from bench import ocr_eval

        rest = [a for a in raw if a != "--eval"]
        return ocr_eval.main(rest, command="python -m bench.run " + shlex.join(raw),
                             prog="python -m bench.run --eval")
    args = parse_args(argv)
    command = "python -m bench.run" + ("" if argv is None and len(sys.argv) <= 1 else
                                       " " + shlex.join(sys.argv[1:] if argv is None else argv))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = measure(args, log)
    result["command"] = command
    text = render(result, command)
    print(text)
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "ocr.md").write_text(text)
        (args.out_dir / "ocr.json").write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.out_dir / 'ocr.md'} and {args.out_dir / 'ocr.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
