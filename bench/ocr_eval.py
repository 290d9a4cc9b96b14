"""OCR evaluation: character error rate and throughput of jobmesh next to rapidocr by hand and
Tesseract, on the evaluation set of `bench/eval_set.py`.

`python -m bench.run --eval` (or `python -m bench.ocr_eval`) starts the real mesh the way
`bench/ocr_mesh.py` does (rclone S3, the PP-OCR models in a fresh registry, one OCR gateway, one
prefork OCR worker on the machine's Redis, in a DB of its own) and measures:

* **accuracy and speed per group** (concurrency 1, every image once per engine, engines taking
  turns image by image so foreign load hits all alike): CER = Levenshtein distance / reference
  length, both texts whitespace-normalised (every run of spaces and newlines -> one space; a
  page's reference is its lines joined), averaged over the images of a group; the share of
  images read exactly (CER 0); images/s = images / the engine's summed wall time. Engines:
  - `jobmesh`: sync `OcrService.Recognize` over gRPC, default options (long lines on);
  - `jobmesh_by_hand`: the same with `RecognizeOptions.disable_long_lines=True`;
  - `rapidocr`: `RapidOCR()` in this process with its defaults (only its log level raised);
    an exception (e.g. `ResizeImgError` on a 20,000-px line) counts as empty output;
  - `tesseract`: Tesseract 5 (`tesseract-ocr` + `tesseract-ocr-eng`) through pytesseract,
    `--psm 7` (one text line) for single-line images, `--psm 6` (one uniform block) for pages.
* **throughput at concurrency C** (16) on the short and normal lines, where every path does the
  same work: C client threads against (a) jobmesh with the gateway's coalescing on (defaults),
  (b) jobmesh through a second gateway started with `JOBMESH_COALESCE_MAX_BATCH=1` (coalescing
  off; the same worker behind both), (c) a pool of W processes, each with a rapidocr engine
  configured like a worker child (no angle classifier, text_score 0.5, the worker's detector
  size and recognition batch, the worker child's ORT thread count): the in-process equivalent of
  the worker's W prefork children. Blocks of M requests run in A-B-C, C-B-A, ... order; the
  median block rate is reported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import multiprocessing as mp
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from bench import machine
from bench import ocr_mesh as om
from bench.eval_set import COUNTS, EvalImage, make_eval_set, normalize

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results"
GROUPS = ("short", "normal", "long", "very_long", "page", "scan")
GROUP_LABEL = {"short": "short words (1-2 words)", "normal": "normal lines (30-60 chars)",
               "long": "long lines (120-300 chars)",
               "very_long": "very long lines (500-1,500 chars)",
               "page": "pages (mixed lines)", "scan": "scanned page (scikit-image page.png)"}
ENGINES = ("jobmesh", "jobmesh_by_hand", "rapidocr", "tesseract")
ENGINE_LABEL = {"jobmesh": "jobmesh", "jobmesh_by_hand": "jobmesh, long lines off",
                "rapidocr": "rapidocr by hand (defaults)", "tesseract": "Tesseract 5"}
THROUGHPUT_GROUPS = ("short", "normal")


# ------------------------------------------------------------------------------------------
# Character error rate


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), Myers/Hyyro bit-parallel: one pass
    over the longer string with the shorter one's positions as bits of a Python int."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask, last = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return score


def cer(reference: str, hypothesis: str) -> tuple[float, int, int]:
    """(CER, distance, reference length) on whitespace-normalised texts."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    d = levenshtein(ref, hyp)
    return (d / len(ref) if ref else float(bool(hyp))), d, len(ref)


# ------------------------------------------------------------------------------------------
# Engines: each maps an EvalImage to (text, details)


class MeshEngine:
    """Sync `OcrService.Recognize` over one gRPC channel (thread-safe)."""

    def __init__(self, address: str, long_lines: bool = True, timeout_s: float = 300.0):
        import grpc
        from jobmesh.ocr.v1 import ocr_service_pb2 as pb
        from jobmesh.ocr.v1 import ocr_service_pb2_grpc

        self.pb = pb
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 64 << 20),
                              ("grpc.max_receive_message_length", 64 << 20)])
        self.stub = ocr_service_pb2_grpc.OcrServiceStub(self.channel)
        self.options = pb.RecognizeOptions(disable_long_lines=not long_lines)
        self.timeout_s = timeout_s

    def png(self, png: bytes) -> str:
        return self.recognize(png).text

    def recognize(self, png: bytes):
        return self.stub.Recognize(self.pb.RecognizeRequest(image=png, options=self.options),
                                   metadata=om.AUTH, timeout=self.timeout_s)

    def __call__(self, item: EvalImage) -> tuple[str, dict]:
        resp = self.recognize(item.png)
        windowed = [ln for ln in resp.lines if ln.path == self.pb.RECOGNITION_PATH_WINDOWED]
        return resp.text, {"lines": len(resp.lines), "windowed_lines": len(windowed),
                           "windows": sum(ln.windows for ln in windowed),
                           "tiled_detection": any(ln.tiled_detection for ln in resp.lines)}

    def close(self) -> None:
        self.channel.close()


class RapidOcrDefaults:
    """`RapidOCR()` out of the box (angle classifier on, detector 736/min, max side 2,000,
    rec batch 6, ORT's own thread count); only the log level is raised to keep the output
    readable. Its lines (boxes in its own order) joined by newlines."""

    def __init__(self):
        from rapidocr import RapidOCR

        self.engine = RapidOCR(params={"Global.log_level": "error"})

    def __call__(self, item: EvalImage) -> tuple[str, dict]:
        out = self.engine(item.png)
        txts = [str(t) for t in (getattr(out, "txts", None) or ())]
        return "\n".join(txts), {"lines": len(txts)}


class Tesseract:
    """Tesseract through pytesseract: `--psm 7` for single lines, `--psm 6` for pages."""

    def __init__(self):
        import pytesseract

        self.pt = pytesseract
        self.version = str(pytesseract.get_tesseract_version())

    @staticmethod
    def psm(item: EvalImage) -> int:
        return 6 if item.group in ("page", "scan") else 7

    def __call__(self, item: EvalImage) -> tuple[str, dict]:
        from PIL import Image

        with Image.open(io.BytesIO(item.png)) as im:
            text = self.pt.image_to_string(im, lang="eng", config=f"--psm {self.psm(item)}")
        return text, {"psm": self.psm(item)}


def tesseract_available() -> str | None:
    """None when usable, else why not."""
    if shutil.which("tesseract") is None:
        return "the tesseract binary is not installed (apt-get install tesseract-ocr " \
               "tesseract-ocr-eng)"
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return "pytesseract is not installed (pip install pytesseract)"
    try:
        langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True,
                               timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"tesseract --list-langs failed: {exc}"
    return None if "eng" in langs else "no English model (apt-get install tesseract-ocr-eng)"


# ------------------------------------------------------------------------------------------
# The in-process pool for the throughput comparison (spawned processes: no fork of gRPC)

_POOL_ENGINE = None


def _pool_init(config: dict, threads: int) -> None:
    global _POOL_ENGINE
    _POOL_ENGINE = om.InProcessOcr(om.OcrConfig(**config), ort_threads=threads)


def _pool_ocr(png: bytes) -> str:
    return _POOL_ENGINE(png).row_text


def _pool_warm(png: bytes, pause_s: float) -> int:
    import os

    _POOL_ENGINE(png)
    time.sleep(pause_s)  # holds this process so the next warm-up call reaches another one
    return os.getpid()


def start_pool(config: om.OcrConfig, processes: int, threads: int,
               warm_png: bytes) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn"),
                               initializer=_pool_init, initargs=(vars(config), threads))
    pids = {f.result() for f in [pool.submit(_pool_warm, warm_png, 1.0)
                                 for _ in range(processes)]}
    if len(pids) != processes:
        raise RuntimeError(f"pool warm-up reached {len(pids)} of {processes} processes")
    return pool


# ------------------------------------------------------------------------------------------
# Measuring


class BlockMeter:
    """Over one throughput block: how many cores the whole machine kept busy (/proc/stat) and how
    many of those were this process tree's (this process, the mesh's processes, the pool), so
    foreign load can be read block by block."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.psutil = psutil

    def _tree_cpu(self) -> float:
        total = 0.0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except self.psutil.Error:
                continue
            total += t.user + t.system
        return total

    def start(self) -> tuple:
        return time.monotonic(), machine._cpu_jiffies(), self._tree_cpu()

    def stop(self, started: tuple) -> dict:
        t0, j0, own0 = started
        wall = max(1e-6, time.monotonic() - t0)
        j1, own1 = machine._cpu_jiffies(), self._tree_cpu()
        out = {"own_cores": round((own1 - own0) / wall, 2)}
        if j0 and j1:
            busy = (j1[0] - j0[0]) / wall
            out["machine_busy_cores"] = round(busy, 2)
            out["foreign_cores"] = round(max(0.0, busy - out["own_cores"]), 2)
        return out


def wait_quiet(max_wait_s: float, threshold: float = 0.3, window_s: float = 5.0) -> dict:
    """Waits (at most max_wait_s) for a window in which other processes keep fewer than
    `threshold` cores busy; the throughput figures are then less disturbed by other tenants."""
    meter = BlockMeter()
    t0 = time.monotonic()
    seen: list[float] = []
    while True:
        started = meter.start()
        time.sleep(window_s)
        foreign = meter.stop(started).get("foreign_cores")
        if foreign is None:
            return {"waited_s": round(time.monotonic() - t0, 1), "foreign_cores": None}
        seen.append(foreign)
        if foreign < threshold or time.monotonic() - t0 + window_s > max_wait_s:
            return {"waited_s": round(time.monotonic() - t0, 1), "foreign_cores": foreign,
                    "quiet": foreign < threshold, "windows": seen}


def run_blocks(work: list, paths: dict[str, Callable[[str, bytes], None]], n: int,
               concurrency: int, blocks: int) -> dict[str, dict]:
    """`blocks` blocks of n requests per path, order A-B-C, C-B-A, ...; median block rate, and
    the foreign load measured during each block."""
    meter = BlockMeter()
    labels = list(paths)
    runs: dict[str, list[dict]] = {label: [] for label in labels}
    for b in range(blocks):
        for label in (labels if b % 2 == 0 else labels[::-1]):
            started = meter.start()
            block = om.throughput_block(work, paths[label], n, concurrency)
            block["cpu"] = meter.stop(started)
            runs[label].append(block)
    return {label: {"images_per_s": round(statistics.median(r["images_per_s"] for r in rs), 3),
                    "blocks": rs, "concurrency": concurrency, "requests_per_block": n}
            for label, rs in runs.items()}


def read_all(items: list[EvalImage], engines: dict[str, Callable], log) -> dict[str, list]:
    """Every image once per engine, engines taking turns (the order rotates every image)."""
    labels = list(engines)
    out: dict[str, list[dict]] = {label: [] for label in labels}
    for i, item in enumerate(items):
        k = i % len(labels)
        for label in labels[k:] + labels[:k]:
            t0 = time.perf_counter()
            error = None
            try:
                text, info = engines[label](item)
            except Exception as exc:  # counted as empty output, and reported
                text, info = "", {}
                error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            seconds = time.perf_counter() - t0
            c, d, n = cer(item.truth, text)
            out[label].append({"image": item.name, "group": item.group,
                               "seconds": round(seconds, 4), "cer": round(c, 5),
                               "distance": d, "ref_chars": n, "exact": d == 0,
                               "empty": not normalize(text), "error": error,
                               "text": text, **info})
        if (i + 1) % 10 == 0 or i + 1 == len(items):
            log(f"  read {i + 1}/{len(items)} images with {len(labels)} engines")
    return out


def summarize_groups(reads: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """{group: {engine: {n, mean_cer, pooled_cer, exact_pct, images_per_s, ...}}}."""
    out: dict[str, dict[str, dict]] = {}
    for label, rows in reads.items():
        for group in GROUPS:
            rs = [r for r in rows if r["group"] == group]
            if not rs:
                continue
            secs = sum(r["seconds"] for r in rs)
            out.setdefault(group, {})[label] = {
                "n": len(rs),
                "mean_cer": round(statistics.fmean(r["cer"] for r in rs), 5),
                "pooled_cer": round(sum(r["distance"] for r in rs) /
                                    max(1, sum(r["ref_chars"] for r in rs)), 5),
                "exact": sum(r["exact"] for r in rs),
                "exact_pct": round(100 * sum(r["exact"] for r in rs) / len(rs), 1),
                "empty": sum(r["empty"] for r in rs),
                "errors": sum(bool(r["error"]) for r in rs),
                "seconds": round(secs, 2),
                "images_per_s": round(len(rs) / secs, 3) if secs else None,
            }
    return out


def measure_throughput(args, items: list[EvalImage], mesh: om.Mesh, config: om.OcrConfig,
                       reference: dict[str, str], log) -> dict:
    """jobmesh (coalescing on / off) vs a process pool of rapidocr engines at concurrency C."""
    from shared.local.stack import free_port

    work = [(it.name, it.png, it.truth) for it in items if it.group in THROUGHPUT_GROUPS]
    threads = om.worker_threads_per_child(config, args.worker_concurrency)
    # Coalescing off: a second gateway, same worker, started with JOBMESH_COALESCE_MAX_BATCH=1.
    port = free_port()
    mesh.stack.env["JOBMESH_COALESCE_MAX_BATCH"] = "1"
    try:
        mesh.stack.start_gateway("ocr", port, name="gateway-ocr-nobatch")
    finally:
        mesh.stack.env.pop("JOBMESH_COALESCE_MAX_BATCH", None)
    on, off = MeshEngine(mesh.address), MeshEngine(f"127.0.0.1:{port}")
    log(f"throughput: starting {args.worker_concurrency} rapidocr processes x {threads} ORT "
        f"thread(s) ...")
    pool = start_pool(config, args.worker_concurrency, threads, work[0][1])
    differ: dict[str, list[str]] = {}
    same_work: dict[str, bool] = {}
    try:
        # Equal work: the pool's row-joined text against jobmesh's answer at concurrency 1.
        with ThreadPoolExecutor(args.concurrency) as ex:
            texts = list(ex.map(lambda w: pool.submit(_pool_ocr, w[1]).result(), work))
        for (name, _png, _t), text in zip(work, texts, strict=True):
            same_work[name] = normalize(text) == normalize(reference.get(name, ""))

        def checked(label: str, fn: Callable[[bytes], str]) -> Callable[[str, bytes], None]:
            differ[label] = []

            def call(name: str, png: bytes) -> None:
                if normalize(fn(png)) != normalize(reference.get(name, "")):
                    differ[label].append(name)
            return call

        paths = {
            "jobmesh": checked("jobmesh", on.png),
            "jobmesh_no_coalescing": checked("jobmesh_no_coalescing", off.png),
            "inprocess_pool": checked("inprocess_pool",
                                      lambda png: pool.submit(_pool_ocr, png).result()),
        }
        for label, fn in paths.items():  # warm-up: every path, every image, concurrently
            om.throughput_block(work, fn, len(work), args.concurrency)
            differ[label].clear()
        quiet = None
        if args.quiet_wait > 0:
            log(f"throughput: waiting up to {args.quiet_wait:.0f} s for other processes to use "
                f"< 0.3 cores ...")
            quiet = wait_quiet(args.quiet_wait)
            log(f"  other processes: {quiet['foreign_cores']} cores after {quiet['waited_s']} s")
        log(f"throughput: {args.blocks} blocks x {args.throughput_requests} requests per path "
            f"at concurrency {args.concurrency} ...")
        runs = run_blocks(work, paths, args.throughput_requests, args.concurrency, args.blocks)
    finally:
        pool.shutdown(cancel_futures=True)
        on.close()
        off.close()
    calls = args.blocks * args.throughput_requests
    for label, r in runs.items():
        rates = [b["images_per_s"] for b in r["blocks"]]
        r["block_rates"] = rates
        r["block_foreign_cores"] = [b["cpu"].get("foreign_cores") for b in r["blocks"]]
        r["latency_p50_ms"] = statistics.median(b["latency"]["p50_ms"] for b in r["blocks"])
        r["responses_differing_from_c1"] = {"differ": len(differ[label]), "of": calls,
                                            "images": sorted(set(differ[label]))}
    return {
        "images": [w[0] for w in work],
        "groups": list(THROUGHPUT_GROUPS),
        "concurrency": args.concurrency,
        "quiet_wait": quiet,
        "pool": {"processes": args.worker_concurrency, "ort_threads_each": threads,
                 "config": vars(config)},
        "worker": {"children": args.worker_concurrency, "ort_threads_each": threads},
        "pool_text_equals_jobmesh_c1": {"equal": sum(same_work.values()),
                                        "of": len(same_work),
                                        "differ": sorted(n for n, ok in same_work.items()
                                                         if not ok)},
        "paths": runs,
        "ratios": {
            "jobmesh_over_inprocess_pool": om.ratio(runs["jobmesh"]["images_per_s"],
                                                    runs["inprocess_pool"]["images_per_s"]),
            "coalescing_on_over_off": om.ratio(runs["jobmesh"]["images_per_s"],
                                               runs["jobmesh_no_coalescing"]["images_per_s"]),
        },
    }


def goals(groups: dict, thr: dict | None, by_image: dict) -> list[dict]:
    """The issue's targets, each with what was measured and whether it is met."""
    out = []

    def g(group, engine, key="mean_cer"):
        return groups.get(group, {}).get(engine, {}).get(key)

    vl_j, vl_t = g("very_long", "jobmesh"), g("very_long", "tesseract")
    vl_r = by_image.get("very_long", {}).get("rapidocr", [])
    r_nothing = bool(vl_r) and all(r["empty"] for r in vl_r)
    if vl_j is not None:
        out.append({"goal": "very long lines: jobmesh CER < 2%",
                    "measured": f"{100 * vl_j:.2f}%", "met": vl_j < 0.02})
        out.append({"goal": "very long lines: rapidocr by hand reads nothing",
                    "measured": "rapidocr not run" if not vl_r else
                                f"{sum(r['empty'] for r in vl_r)}/{len(vl_r)} images empty "
                                f"({sum(bool(r['error']) for r in vl_r)} raised), "
                                f"CER {100 * (g('very_long', 'rapidocr') or 0):.1f}%",
                    "met": r_nothing if vl_r else None})
        out.append({"goal": "very long lines: jobmesh CER below Tesseract's",
                    "measured": "Tesseract not run" if vl_t is None else
                                f"{100 * vl_j:.2f}% vs {100 * vl_t:.2f}%",
                    "met": None if vl_t is None else vl_j < vl_t})
    for group in ("short", "normal"):
        j, r = g(group, "jobmesh"), g(group, "rapidocr")
        if j is not None and r is not None:
            out.append({"goal": f"{GROUP_LABEL[group]}: jobmesh CER no worse than rapidocr "
                                f"in-process", "measured": f"{100 * j:.2f}% vs {100 * r:.2f}%",
                        "met": j <= r})
    if thr:
        p = thr["paths"]
        foreign = [fc for r in p.values() for fc in r["block_foreign_cores"] if fc is not None]
        noisy = ""
        if foreign and statistics.median(foreign) > 0.3:
            noisy = (f"; other processes kept {statistics.median(foreign):.2f} cores busy "
                     f"during the median block: rerun when the machine is quiet")
        rat = thr["ratios"]["jobmesh_over_inprocess_pool"]
        out.append({"goal": f"throughput at concurrency {thr['concurrency']}: jobmesh >= 0.9x "
                            f"the in-process rapidocr pool",
                    "measured": f"{p['jobmesh']['images_per_s']:.2f} vs "
                                f"{p['inprocess_pool']['images_per_s']:.2f} images/s = "
                                f"{rat:.2f}x{noisy}", "met": rat is not None and rat >= 0.9})
        rat = thr["ratios"]["coalescing_on_over_off"]
        on_r, off_r = p["jobmesh"]["block_rates"], p["jobmesh_no_coalescing"]["block_rates"]
        spread = (" (every block on faster than every block off)" if min(on_r) > max(off_r) else
                  " (every block on slower than every block off)" if max(on_r) < min(off_r)
                  else " (block ranges overlap)")
        out.append({"goal": f"batching's own gain at concurrency {thr['concurrency']}: "
                            f"coalescing on faster than off",
                    "measured": f"{p['jobmesh']['images_per_s']:.2f} vs "
                                f"{p['jobmesh_no_coalescing']['images_per_s']:.2f} images/s = "
                                f"{rat:.2f}x{spread}{noisy}",
                    "met": rat is not None and rat > 1.0})
    return out


def _tile_above() -> int:
    """The worker's threshold for tiled detection (longer image side, px)."""
    try:
        from workers.ocr.tasks import OcrSettings
    except ImportError:
        return 4000
    return int(OcrSettings().tile_above)


def measure(args: argparse.Namespace, log=print) -> dict:
    facts = machine.describe(args.redis_url, REPO)
    for pkg in ("pytesseract", "scikit-image"):
        try:
            facts["versions"][pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    t_start = time.perf_counter()
    items = make_eval_set(args.scale)
    log(f"evaluation set: {len(items)} images ({time.perf_counter() - t_start:.1f} s to render)")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result: dict = {"machine": facts, "settings": settings, "set": {
        "counts": {g: sum(it.group == g for it in items) for g in GROUPS},
        "items": [{"name": it.name, "group": it.group, "size": list(it.size),
                   "bytes": len(it.png), "truth": it.truth, **it.meta} for it in items]}}
    engines: dict[str, Callable] = {}
    result["skipped"] = {}
    if not args.skip_tesseract:
        why = tesseract_available()
        if why is None:
            engines["tesseract"] = Tesseract()
            facts["versions"]["tesseract"] = engines["tesseract"].version
        else:
            result["skipped"]["tesseract"] = why
            log(f"Tesseract skipped: {why}")
    if not args.skip_rapidocr:
        engines["rapidocr"] = RapidOcrDefaults()
    base = om.worker_ocr_defaults()
    config = om.OcrConfig(base.det_limit_side_len, base.det_limit_type, base.rec_batch_size)
    result["worker_ocr_config"] = {
        **vars(config), "tile_above": _tile_above(), "children": args.worker_concurrency,
        "ort_threads_per_child": om.worker_threads_per_child(config, args.worker_concurrency)}
    meter = machine.CpuMeter()
    mesh = om.Mesh(args.redis_url, args.worker_concurrency, config, args.keep_logs)
    log(f"starting the mesh (worker concurrency {args.worker_concurrency}) ...")
    mesh.start()
    clients: list[MeshEngine] = []
    try:
        result["mesh"] = {"address": mesh.address, "startup_s": mesh.startup_s}
        jm, jm_hand = MeshEngine(mesh.address), MeshEngine(mesh.address, long_lines=False)
        clients += [jm, jm_hand]
        engines = {"jobmesh": jm, "jobmesh_by_hand": jm_hand, **engines}
        # Warm-up: a few images per engine; concurrent mesh calls reach every prefork child.
        warm = [it for it in items if it.group == "short"][:2] + \
            [it for it in items if it.group == "normal"][:2]
        for it in warm:
            for label, fn in engines.items():
                if label != "jobmesh":
                    fn(it)
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(jm, warm * args.worker_concurrency))
        log(f"accuracy: {len(items)} images x {len(engines)} engines, one at a time ...")
        reads = read_all(items, engines, log)
        result["reads"] = reads
        result["groups"] = summarize_groups(reads)
        if not args.skip_throughput:
            reference = {r["image"]: r["text"] for r in reads["jobmesh"]}
            result["throughput"] = measure_throughput(args, items, mesh, config, reference,
                                                      log)
    except BaseException:
        log(mesh.logs())
        raise
    finally:
        for c in clients:
            c.close()
        mesh.stop()
        if args.keep_logs:
            log(f"logs kept in {mesh.root / 'logs'}")
    facts["load_average_end"] = machine.load_average()
    facts["cpu_during_run"] = meter.stop()
    by_image = {g: {label: [r for r in rows if r["group"] == g] for label, rows in reads.items()}
                for g in GROUPS}
    result["goals"] = goals(result["groups"], result.get("throughput"), by_image)
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return result


# ------------------------------------------------------------------------------------------
# Rendering


def _pct(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def _mark(v: bool | None) -> str:
    return "not measured" if v is None else "**met**" if v else "**not met**"


def render(result: dict, command: str) -> str:
    f = result["machine"]
    v = f["versions"]
    s = result["settings"]
    cfg = result["worker_ocr_config"]
    counts = result["set"]["counts"]
    lines = [
        "# OCR evaluation: jobmesh vs rapidocr by hand vs Tesseract",
        "",
        f"- **Machine**: {machine.one_line(f)} (git {f.get('git', '?')}); Tesseract "
        f"{v.get('tesseract', 'not run')}, pytesseract {v.get('pytesseract', '–')}, "
        f"scikit-image {v.get('scikit-image', '–')}.",
        f"- **Other load**: {_foreign(f)}.",
        f"- **Command**: `{command}` ({result['elapsed_s']} s in all).",
        "- **Set** (`bench/eval_set.py`, deterministic): " + ", ".join(
            f"{counts[g]} {GROUP_LABEL[g]}" for g in GROUPS if counts.get(g)) +
        ". Real English text (Debian's /usr/share/common-licenses, Python standard-library "
        "docstrings; whitespace collapsed, ASCII only) rendered in 10 DejaVu faces (Sans, Serif, "
        "Sans Mono, their Bold, Sans/Serif Condensed, Sans Oblique, Serif Italic) at 24-48 px, "
        "a third in low contrast, all with blur (0.3-0.9 px), Gaussian noise (sigma 2-7) and "
        "rotation (up to ±2° short/normal, ±1° long, ±0.5° pages, ±0.25° very long lines); "
        "8-bit grey PNG. Very long lines are single-line images up to 20,000 px wide. The "
        "scan's reference was transcribed by hand from the image (its half-cut bottom row is "
        "left out).",
        "- **CER**: Levenshtein distance / reference length on whitespace-normalised text "
        "(runs of spaces and newlines -> one space; a page's reference is its lines joined), "
        "mean over a group's images; **exact**: images with CER 0; **images/s**: one request at "
        "a time, images / summed wall time (engines take turns image by image).",
        f"- **jobmesh**: sync `OcrService.Recognize` over gRPC (PNG inline) to one gateway and "
        f"one prefork OCR worker ({cfg['children']} children × {cfg['ort_threads_per_child']} "
        f"ORT thread(s); detector {cfg['det_limit_type']} side {cfg['det_limit_side_len']} px, "
        f"rec batch {cfg['rec_batch_size']}, no angle classifier, min confidence 0.5; one "
        f"request at a time uses one child). *long lines off*: `RecognizeOptions("
        f"disable_long_lines=True)`.",
        "- **rapidocr by hand**: `RapidOCR()` 3.10 in this process with its defaults (angle "
        "classifier on, detector 736/min after shrinking the longer side to 2,000 px, rec batch "
        "6, text_score 0.5, ORT's default threads = all physical cores); only its log level is "
        "raised. Its lines joined by newlines; an exception counts as empty output.",
        "- **Tesseract**: `pytesseract.image_to_string(lang='eng')`, `--psm 7` (single text "
        "line) for every single-line image, `--psm 6` (uniform block) for pages and the scan; "
        "LSTM engine (default OEM), OpenMP with its default threads.",
    ]
    for name, why in result.get("skipped", {}).items():
        lines.append(f"- **{name} skipped**: {why}.")
    lines += ["", "## Accuracy and speed per group (concurrency 1)", "",
              "| group | engine | mean CER | read exactly | images/s | empty (raised) |",
              "|---|---|---|---|---|---|"]
    groups = result.get("groups", {})
    for group in GROUPS:
        for engine in ENGINES:
            st = groups.get(group, {}).get(engine)
            if not st:
                continue
            ips = st["images_per_s"]
            lines.append(f"| {GROUP_LABEL[group]} | {ENGINE_LABEL[engine]} | "
                         f"{_pct(st['mean_cer'])} | {st['exact']}/{st['n']} "
                         f"({st['exact_pct']:.0f}%) | {ips:.2f} | {st['empty']} "
                         f"({st['errors']}) |")
    thr = result.get("throughput")
    if thr:
        lines += ["", *_throughput_table(thr, s)]
    lines += ["", "## Goals", "", "| goal | measured | |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['measured']} | {_mark(g['met'])} |" for g in result["goals"]]
    lines += ["", *_long_table(result), "", *_scan_texts(result),
              "", "What each figure means: `bench/README.md`. Raw figures and every text read: "
              "`ocr_eval.json`.", ""]
    return "\n".join(lines)


def _foreign(f: dict) -> str:
    cpu = f.get("cpu_during_run", {})
    if "foreign_cores" not in cpu:
        return "not measured"
    return (f"other processes kept {cpu['foreign_cores']:.2f} of {f['cores_usable']} cores "
            f"busy on average during the run (this run's processes: {cpu['own_cores']:.2f})")


def _throughput_table(thr: dict, s: dict) -> list[str]:
    c = thr["concurrency"]
    p = thr["paths"]
    pool = thr["pool"]
    eq = thr["pool_text_equals_jobmesh_c1"]
    n = len(thr["images"])
    desc = {
        "jobmesh": "jobmesh, coalescing on (gateway defaults: max batch 8, 5 ms)",
        "jobmesh_no_coalescing": "jobmesh, coalescing off (second gateway, "
                                 "`JOBMESH_COALESCE_MAX_BATCH=1`, same worker)",
        "inprocess_pool": f"rapidocr in-process: {pool['processes']} processes × "
                          f"{pool['ort_threads_each']} ORT thread(s), worker's det/rec settings",
    }
    out = [f"## Throughput at concurrency {c} ({n} short and normal lines)", "",
           f"{c} client threads; each sends the next image as soon as its answer arrives. "
           f"Median of {s['blocks']} blocks of {s['throughput_requests']} requests per path, "
           "blocks in A-B-C, C-B-A, ... order. The worker runs "
           f"{thr['worker']['children']} prefork children × {thr['worker']['ort_threads_each']} "
           f"ORT thread(s); the in-process side is a pool of {pool['processes']} spawned "
           f"processes, each with one `RapidOCR` engine at {pool['ort_threads_each']} ORT "
           "thread(s) configured as the worker is (no angle classifier, text_score 0.5, "
           f"detector {pool['config']['det_limit_type']} side "
           f"{pool['config']['det_limit_side_len']} px, rec batch "
           f"{pool['config']['rec_batch_size']}), the client threads submitting to it. Same work: "
           f"the pool's text (rows joined as jobmesh joins them) equals jobmesh's on {eq['equal']}"
           f"/{eq['of']} images." + _quiet_note(thr.get("quiet_wait")), "",
           "| path | images/s (median) | each block (other processes' busy cores during it) "
           "| latency p50 | answers differing from jobmesh at concurrency 1 |",
           "|---|---|---|---|---|"]
    for label in ("jobmesh", "jobmesh_no_coalescing", "inprocess_pool"):
        r = p[label]
        d = r["responses_differing_from_c1"]
        rates = ", ".join(f"{x:.2f}" + ("" if fc is None else f" ({fc:.2f})")
                          for x, fc in zip(r["block_rates"], r["block_foreign_cores"],
                                           strict=True))
        out.append(f"| {desc[label]} | {r['images_per_s']:.2f} | {rates} | "
                   f"{r['latency_p50_ms']:.0f} ms | {d['differ']}/{d['of']} |")
    rat = thr["ratios"]
    out += ["", f"jobmesh / in-process pool: {rat['jobmesh_over_inprocess_pool']:.2f}×; "
            f"coalescing on / off: {rat['coalescing_on_over_off']:.2f}×."]
    return out


def _quiet_note(q: dict | None) -> str:
    if not q or q.get("foreign_cores") is None:
        return ""
    how = "found a quiet 5-s window" if q.get("quiet") else "found no quiet 5-s window"
    return (f" Before the blocks the run waited {q['waited_s']:.0f} s and {how} (other "
            f"processes at {q['foreign_cores']:.2f} cores in the last one).")


def _long_table(result: dict) -> list[str]:
    """Long and very long lines image by image, with the skew that decides the tiled path."""
    import math

    reads = result.get("reads", {})
    items = {it["name"]: it for it in result["set"]["items"]}
    rows = {label: {r["image"]: r for r in rs if r["group"] in ("long", "very_long")}
            for label, rs in reads.items()}
    names = list(rows.get("jobmesh", {}))
    if not names:
        return []
    engines = [e for e in ENGINES if e in rows]
    tile_above = result.get("worker_ocr_config", {}).get("tile_above", 4000)
    split: dict[str, list[dict]] = {}
    out = ["## Long and very long lines, per image", "",
           "Drift = how far the rotated baseline climbs or falls over the line's width "
           "(width × tan(angle)), next to the text size.", "",
           "| image | size | chars | font px | rotation | drift | "
           + " | ".join(ENGINE_LABEL[e] + " CER" for e in engines)
           + " | jobmesh: tiled / windows |", "|---|---|---|---|---|---|"
           + "---|" * (len(engines) + 1)]
    for name in names:
        it = items[name]
        cells = []
        for e in engines:
            r = rows[e][name]
            cells.append(_pct(r["cer"]) + (" (raised)" if r["error"] else
                                           " (empty)" if r["empty"] else ""))
        j = rows["jobmesh"][name]
        deg = it.get("rotation_deg", 0.0)
        drift = abs(it["size"][0] * math.tan(math.radians(deg)))
        out.append(f"| {name} | {it['size'][0]}×{it['size'][1]} | {it['chars']} | "
                   f"{it.get('size_px', '?')} | {deg:+.2f}° | {drift:.0f} px | "
                   + " | ".join(cells) + f" | {'yes' if j.get('tiled_detection') else 'no'} / "
                   f"{j.get('windows', 0)} |")
        if max(it["size"]) > tile_above:
            key = "drift_over_font" if drift > it.get("size_px", 0) else "drift_within_font"
            split.setdefault(key, []).append(j)
    for key, words in (("drift_within_font", "at most"), ("drift_over_font", "more than")):
        js = split.get(key, [])
        if js:
            out.append("")
            out.append(f"jobmesh on lines wider than {tile_above:,} px (the tiled-detection path) "
                       f"whose drift is {words} the font size: {len(js)} images, mean CER "
                       f"{_pct(statistics.fmean(r['cer'] for r in js))}, "
                       f"{sum(r['empty'] for r in js)} read as nothing.")
    return out


def _scan_texts(result: dict) -> list[str]:
    reads = result.get("reads", {})
    scan = [it for it in result["set"]["items"] if it["group"] == "scan"]
    if not scan:
        return ["The scanned page (scikit-image `page.png`) was not evaluated: scikit-image is "
                "not installed."]
    it = scan[0]
    out = ["## The scanned page, as read", "",
           f"Reference (transcribed by hand from `{it['name']}`, {it['size'][0]}×"
           f"{it['size'][1]}):", "", "```", it["truth"], "```"]
    for e in ENGINES:
        r = next((r for r in reads.get(e, []) if r["image"] == it["name"]), None)
        if r is None:
            continue
        out += ["", f"{ENGINE_LABEL[e]} (CER {_pct(r['cer'])}):", "", "```",
                r["text"].strip() or "(nothing)", "```"]
    return out


# ------------------------------------------------------------------------------------------
# Entry point


def build_parser(prog: str = "python -m bench.ocr_eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="OCR evaluation: CER and throughput of jobmesh (sync Recognize through a "
                    "real gateway and worker) vs rapidocr by hand and Tesseract on the set of "
                    "bench/eval_set.py. Starts its own S3 server, gateways and worker; needs "
                    "the machine's Redis.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of each group of the set (at least one image each); the set "
                        f"at 1.0: {COUNTS} plus the scikit-image scan")
    p.add_argument("--concurrency", type=int, default=16, help="client threads for throughput")
    p.add_argument("--throughput-requests", type=int, default=48, metavar="M",
                   help="requests per throughput block")
    p.add_argument("--blocks", type=int, default=5, help="throughput blocks per path")
    p.add_argument("--worker-concurrency", type=int, default=2, metavar="W",
                   help="prefork children of the OCR worker (and processes of the in-process "
                        "pool)")
    p.add_argument("--quiet-wait", type=float, default=60.0, metavar="S",
                   help="before the throughput blocks, wait up to S seconds for a 5-s window in "
                        "which other processes keep < 0.3 cores busy (0: don't wait)")
    p.add_argument("--skip-tesseract", action="store_true")
    p.add_argument("--skip-rapidocr", action="store_true",
                   help="no rapidocr-by-hand accuracy pass (the slowest engine here)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a quarter of the set, 1 small block per path")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/7",
                   help="Redis DB the mesh uses; it is FLUSHED before and after")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                   help="where ocr_eval.md and ocr_eval.json go")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    p.add_argument("--keep-logs", action="store_true", help="keep the mesh's process logs")
    return p


def parse_args(argv: list[str] | None = None, prog: str = "python -m bench.ocr_eval"
               ) -> argparse.Namespace:
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.quick:
        args.scale = min(args.scale, 0.25)
        args.throughput_requests, args.blocks = 16, 1
        args.quiet_wait = min(args.quiet_wait, 10.0)
    for name in ("concurrency", "throughput_requests", "blocks", "worker_concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.scale <= 1:
        p.error("--scale must be within (0, 1]")
    return args


def main(argv: list[str] | None = None, command: str | None = None,
         prog: str = "python -m bench.ocr_eval") -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = parse_args(argv, prog)
    command = command or "python -m bench.ocr_eval" + (" " + shlex.join(argv) if argv else "")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = measure(args, log)
    result["command"] = command
    text = render(result, command)
    print(text)
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "ocr_eval.md").write_text(text)
        (args.out_dir / "ocr_eval.json").write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.out_dir / 'ocr_eval.md'} and {args.out_dir / 'ocr_eval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
