"""OCR through the mesh vs rapidocr in-process, and the mesh's dispatch overhead.

Everything runs against real processes: an rclone S3 server holding the PP-OCR models in the
registry, one OCR gateway and one prefork OCR worker (via `LocalStack`, exactly as the
integration tests and `make run` start them) on the machine's Redis, in a DB index of its own.

Measurements (all wall-clock, from the client's side):

* **latency, concurrency 1**: one `OcrService.Recognize` at a time over gRPC vs one
  `RapidOCR()(png_bytes)` call at a time in this process; mesh and in-process requests are
  interleaved (alternating order) so load from other tenants of the machine hits both alike.
* **throughput, concurrency C**: C client threads sharing one gRPC channel vs C threads sharing
  one RapidOCR engine (ORT sessions are thread-safe); blocks are run in A-B-B-A order and the
  median block rate is reported.
* **equal work**: rapidocr runs with `use_cls=False` and `text_score=0.5`, the mesh's defaults
  (`classify_angle=false`, `min_confidence=0.5`). Per image, the mesh's `lines[].text` is
  compared with rapidocr's `txts` (same boxes, same order, same strings = same work), and the
  mesh's `text` both with rapidocr's `txts` joined by newlines and with the same boxes joined
  into rows by the mesh's own layout rule (`workers.ocr.layout.text_of`: boxes on one visual row
  joined by spaces). Every measured response is also compared with that path's warm-up one.
* **dispatch overhead**: an empty job (`jobmesh.diag.v1.noop`) submitted with the gateway's own
  code path (`JobDispatcher.submit`: job record + Celery publish) and awaited on the job's
  Redis event stream (XREAD BLOCK, as the gateway's sync wait does), next to gRPC-only round
  trips (health `Check`; `JobService.GetJob` of a finished job: auth + one Redis read).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

import shared  # noqa: F401 - generates and exposes the jobmesh.* stubs (imported below)
from workers.ocr.layout import text_of  # the mesh's row join (pure; no worker start-up)

FONT_DIR = "/usr/share/fonts/truetype/dejavu/"
NOOP_TASK = "jobmesh.diag.v1.noop"
API_KEY = "bench-key"
TENANT = "bench"
AUTH = [("authorization", f"Bearer {API_KEY}")]
CLAIM_KEY = "jobmesh:bench-session"

Image = tuple[str, bytes, str]  # (name, png bytes, expected text)


# ------------------------------------------------------------------------------------------
# Images


def _render(lines: Sequence[str], font: str = "DejaVuSans.ttf", size: int = 32) -> bytes:
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    f = ImageFont.truetype(FONT_DIR + font, size)
    width = max(int(f.getlength(t)) for t in lines) + 60
    step = int(size * 1.8)
    img = PILImage.new("RGB", (width, step * len(lines) + 30), "white")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((30, 15 + i * step), text, font=f, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def fallback_images() -> list[Image]:
    """A few rendered text images (DejaVu fonts), used when bench/ocr_images.py is absent."""
    specs = [
        ("line-sans", ["The quick brown fox jumps over the lazy dog"], "DejaVuSans.ttf"),
        ("line-digits", ["Invoice 2026-12-01 total 1234.56"], "DejaVuSans.ttf"),
        ("line-serif", ["jobmesh reads serif text"], "DejaVuSerif.ttf"),
        ("line-mono", ["Monospace 0123456789"], "DejaVuSansMono.ttf"),
        ("paragraph-4", ["Gateways validate requests and dispatch jobs",
                         "through a Celery queue on Redis to workers",
                         "that run ONNX Runtime models; inputs and",
                         "outputs live in S3 next to the models."], "DejaVuSans.ttf"),
    ]
    return [(name, _render(lines, font), "\n".join(lines)) for name, lines, font in specs]


def load_images() -> tuple[list[Image], str]:
    """(images, source): `bench.ocr_images.make_bench_images()` when that module exists and
    works, else the rendered fallback set."""
    try:
        from bench.ocr_images import make_bench_images
    except ImportError:
        return fallback_images(), "bench/ocr_mesh.py fallback (rendered DejaVu text)"
    images = [(str(n), bytes(png), str(exp or "")) for n, png, exp in make_bench_images()]
    if not images:
        return fallback_images(), "bench/ocr_mesh.py fallback (make_bench_images() was empty)"
    return images, "bench/ocr_images.py make_bench_images()"


def image_size(png: bytes) -> tuple[int, int]:
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(png)) as im:
        return im.size


# ------------------------------------------------------------------------------------------
# Statistics


def summarize(seconds: Sequence[float]) -> dict:
    """Latency figures in milliseconds."""
    a = np.asarray(seconds, dtype=float) * 1000.0
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "mean_ms": round(float(a.mean()), 2), "min_ms": round(float(a.min()), 2),
            "max_ms": round(float(a.max()), 2)}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# ------------------------------------------------------------------------------------------
# The two OCR paths


@dataclass
class OcrOut:
    text: str
    lines: list[str]
    row_text: str = ""  # rapidocr only: its boxes joined into rows the way the mesh joins them


@dataclass(frozen=True)
class OcrConfig:
    """The OCR knobs both paths must share for equal work. The worker reads them from
    `JOBMESH_OCR_*` (workers/ocr/tasks.py `OcrSettings`); rapidocr from its `Det.*`/`Rec.*`
    params. `ort_threads` 0 leaves each side its own default: the worker splits the cores between
    its prefork children, ORT in-process uses every physical core."""

    det_limit_side_len: int = 64
    det_limit_type: str = "min"
    rec_batch_size: int = 16
    ort_threads: int = 0

    def worker_env(self) -> dict[str, str]:
        env = {"JOBMESH_OCR_DET_LIMIT_SIDE_LEN": str(self.det_limit_side_len),
               "JOBMESH_OCR_DET_LIMIT_TYPE": self.det_limit_type,
               "JOBMESH_OCR_REC_BATCH_SIZE": str(self.rec_batch_size)}
        if self.ort_threads:
            env["JOBMESH_ORT_THREADS"] = str(self.ort_threads)
        return env

    def rapidocr_params(self) -> dict:
        params = {"Det.limit_side_len": self.det_limit_side_len,
                  "Det.limit_type": self.det_limit_type,
                  "Rec.rec_batch_num": self.rec_batch_size}
        if self.ort_threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = self.ort_threads
        return params


def worker_ocr_defaults() -> OcrConfig:
    """The worker's own defaults (its `OcrSettings`, as this environment would configure it), so
    the benchmark measures the mesh as deployed; rapidocr is then configured to match."""
    try:
        from workers.ocr.tasks import OcrSettings
    except ImportError:
        return OcrConfig()
    ocr = OcrSettings()
    return OcrConfig(int(ocr.det_limit_side_len), str(ocr.det_limit_type),
                     int(ocr.rec_batch_size))


def worker_threads_per_child(config: OcrConfig, worker_concurrency: int) -> int:
    """What workers/ocr/__main__.py gives each prefork child unless JOBMESH_ORT_THREADS is set."""
    return config.ort_threads or max(1, (os.cpu_count() or 1) // worker_concurrency)


class InProcessOcr:
    """rapidocr 3.x called directly in this process. With a config: set up to do what the mesh's
    worker does (no angle classifier, text_score 0.5, the same detector size and recognition
    batch); without: rapidocr's own defaults except `use_cls=False`."""

    def __init__(self, config: OcrConfig | None = None, ort_threads: int = 0):
        from rapidocr import RapidOCR

        params: dict = {"Global.use_cls": False, "Global.text_score": 0.5,
                        "Global.log_level": "warning"}
        if config is not None:
            params.update(config.rapidocr_params())
        if ort_threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = ort_threads
        self.engine = RapidOCR(params=params)

    def __call__(self, png: bytes) -> OcrOut:
        out = self.engine(png)
        lines = [str(t) for t in (getattr(out, "txts", None) or ())]
        boxes = getattr(out, "boxes", None)
        boxes = [] if boxes is None else boxes
        rows = [{"text": t, "box": np.asarray(b, dtype=float).tolist()}
                for t, b in zip(lines, boxes, strict=False)]
        return OcrOut("\n".join(lines), lines, text_of(rows))


class MeshOcr:
    """Sync `OcrService.Recognize` over one gRPC channel (thread-safe, shared by all threads)."""

    def __init__(self, address: str):
        import grpc
        from jobmesh.ocr.v1 import ocr_service_pb2 as pb
        from jobmesh.ocr.v1 import ocr_service_pb2_grpc

        self.pb = pb
        self.channel = grpc.insecure_channel(address)
        self.stub = ocr_service_pb2_grpc.OcrServiceStub(self.channel)

    def __call__(self, png: bytes) -> OcrOut:
        resp = self.stub.Recognize(self.pb.RecognizeRequest(image=png), metadata=AUTH,
                                   timeout=120)
        return OcrOut(resp.text, [line.text for line in resp.lines])

    def close(self) -> None:
        self.channel.close()


# ------------------------------------------------------------------------------------------
# The mesh, started in-process


def claim_db(redis_url: str) -> None:
    """Empties the benchmark's Redis DB after making sure no other benchmark holds it."""
    client = redis.Redis.from_url(redis_url)
    holder = client.get(CLAIM_KEY)
    if holder is not None:
        raise RuntimeError(f"{redis_url} is in use by another benchmark "
                           f"(pid {holder.decode()}); pass --redis-url with another DB")
    client.flushdb()
    client.set(CLAIM_KEY, str(os.getpid()), ex=3600)


def release(stack, redis_url: str) -> None:
    """Stops a benchmark mesh's processes and empties its Redis DB (the claim goes with it)."""
    if stack is not None:
        stack.stop_all()
    try:
        redis.Redis.from_url(redis_url).flushdb()
    except redis.RedisError:
        pass


def bench_env(redis_url: str, s3_port: int) -> dict[str, str]:
    """Settings every benchmark mesh shares (quiet JSON logs, its own S3 and model cache)."""
    return {
        "JOBMESH_REDIS_URL": redis_url,
        "JOBMESH_S3_ENDPOINT": f"127.0.0.1:{s3_port}",
        "JOBMESH_S3_ACCESS_KEY": "bench",
        "JOBMESH_S3_SECRET_KEY": "benchsecret",
        "JOBMESH_API_KEYS": f"{API_KEY}={TENANT}:tenant",
        "JOBMESH_LOG_JSON": "1",
        "JOBMESH_LOG_LEVEL": "WARNING",
        "JOBMESH_MODEL_CACHE_DIR": str(Path(tempfile.gettempdir()) / "jobmesh-bench-models"),
    }


@dataclass
class Mesh:
    """rclone S3 + registry import + one OCR worker + one OCR gateway on a Redis DB of its own."""

    redis_url: str
    worker_concurrency: int = 2
    ocr: OcrConfig = field(default_factory=OcrConfig)
    keep_logs: bool = False
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobmesh-bench-")))
    address: str = ""
    env: dict = field(default_factory=dict)
    startup_s: dict = field(default_factory=dict)
    stack: object = None

    def start(self) -> Mesh:
        from shared.config import Settings
        from shared.local.stack import LocalStack, free_port
        from shared.models.importer import prepare

        claim_db(self.redis_url)
        s3_port, gw_port = free_port(), free_port()
        self.env = {**bench_env(self.redis_url, s3_port), "JOBMESH_DIAGNOSTICS": "1"}
        # No worker /metrics port: the benchmark must not hold a port `make up` wants.
        worker_env = {**self.ocr.worker_env(), "JOBMESH_METRICS_PORT": "0"}
        stack = LocalStack(self.root, self.env)
        self.stack = stack
        t = time.perf_counter()
        stack.start_s3(s3_port)
        prepare(Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in self.env.items()}))
        self.startup_s["s3_and_registry"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        stack.start_worker("ocr", concurrency=self.worker_concurrency, extra_env=worker_env)
        stack.start_gateway("ocr", gw_port)
        stack.wait_consumers("ocr.cpu", timeout=180)
        self.startup_s["worker_and_gateway"] = round(time.perf_counter() - t, 2)
        self.address = f"127.0.0.1:{gw_port}"
        return self

    def settings(self):
        from shared.config import Settings

        return Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in self.env.items()})

    def logs(self, lines: int = 30) -> str:
        if self.stack is None:
            return ""
        return "\n".join(f"--- {n} ---\n{self.stack.log_tail(n, lines)}"
                         for n in ("worker-ocr", "gateway-ocr", "s3"))

    def stop(self) -> None:
        release(self.stack, self.redis_url)
        if not self.keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# OCR: equal work, latency, throughput


def check_agreement(images: Sequence[Image], mesh: Callable | None,
                    inproc: Callable | None) -> tuple[dict, dict]:
    """Runs every image once per path (this is also the warm-up) and compares texts.
    Returns (per-image reference outputs by path, agreement report)."""
    ref: dict[str, dict[str, OcrOut]] = {"mesh": {}, "inprocess": {}}
    rows = []
    for name, png, expected in images:
        row = {"image": name, "expected": expected}
        for label, fn in (("mesh", mesh), ("inprocess", inproc)):
            if fn is None:
                continue
            out = fn(png)
            ref[label][name] = out
            row[f"{label}_text"] = out.text
            row[f"{label}_matches_expected"] = (out.text == expected) if expected else None
        if mesh is not None and inproc is not None:
            m, r = ref["mesh"][name], ref["inprocess"][name]
            row["inprocess_row_text"] = r.row_text
            row["text_equal"] = m.text == r.text
            row["row_text_equal"] = m.text == r.row_text
            row["lines_equal"] = m.lines == r.lines
        rows.append(row)
    report = {"images": rows, "n": len(rows)}
    if mesh is not None and inproc is not None:
        report["text_equal"] = sum(r["text_equal"] for r in rows)
        report["row_text_equal"] = sum(r["row_text_equal"] for r in rows)
        report["lines_equal"] = sum(r["lines_equal"] for r in rows)
    for label in ("mesh", "inprocess"):
        vals = [r.get(f"{label}_matches_expected") for r in rows]
        if any(v is not None for v in vals):
            report[f"{label}_matches_expected"] = sum(bool(v) for v in vals)
    return ref, report


class Consistency:
    """Counts measured responses whose text differs from that path's warm-up (or first)
    response for the same image."""

    def __init__(self, ref: dict[str, dict[str, OcrOut]]):
        self.ref = {label: dict(by_name) for label, by_name in ref.items()}
        self.checked: dict[str, int] = {}
        self.differ: dict[str, int] = {}

    def wrap(self, label: str, fn: Callable[[bytes], OcrOut]) -> Callable[[str, bytes], None]:
        ref = self.ref.setdefault(label, {})
        self.checked.setdefault(label, 0)
        self.differ.setdefault(label, 0)

        def call(name: str, png: bytes) -> None:
            out = fn(png)
            first = ref.setdefault(name, out)
            self.checked[label] += 1
            if out.text != first.text:
                self.differ[label] += 1
        return call

    def texts(self, label: str) -> dict[str, str]:
        return {name: out.text for name, out in self.ref.get(label, {}).items()}


def latency_c1(images: Sequence[Image], paths: dict[str, Callable[[str, bytes], None]],
               requests: dict[str, int]) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """`requests[label]` calls per path, one at a time, images round-robin; paths alternate
    call by call (order flipped every call) so drift in machine load is shared.
    Returns (seconds per path, seconds per path per image)."""
    labels = list(paths)
    times: dict[str, list[float]] = {label: [] for label in labels}
    per_image: dict[str, dict[str, list]] = {label: {} for label in labels}
    for i in range(max(requests.values())):
        name, png, _ = images[i % len(images)]
        order = labels if i % 2 == 0 else labels[::-1]
        for label in order:
            if i >= requests[label]:
                continue
            t0 = time.perf_counter()
            paths[label](name, png)
            dt = time.perf_counter() - t0
            times[label].append(dt)
            per_image[label].setdefault(name, []).append(dt)
    return times, per_image


def throughput_block(images: Sequence[Image], call: Callable[[str, bytes], None], n: int,
                     concurrency: int) -> dict:
    """n requests (images round-robin) through `concurrency` threads; images/s for the block."""
    work = [images[i % len(images)] for i in range(n)]
    lat: list[float] = []

    def one(item: Image) -> None:
        t0 = time.perf_counter()
        call(item[0], item[1])
        lat.append(time.perf_counter() - t0)

    with ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        list(pool.map(one, work))
        wall = time.perf_counter() - t0
    return {"n": n, "wall_s": round(wall, 3), "images_per_s": round(n / wall, 3),
            "latency": summarize(lat)}


def throughput(images: Sequence[Image], paths: dict[str, Callable[[str, bytes], None]], n: int,
               concurrency: int, blocks: int) -> dict[str, dict]:
    """`blocks` blocks per path in A-B-B-A... order; reports the median block rate."""
    labels = list(paths)
    runs: dict[str, list[dict]] = {label: [] for label in labels}
    for b in range(blocks):
        for label in (labels if b % 2 == 0 else labels[::-1]):
            runs[label].append(throughput_block(images, paths[label], n, concurrency))
    out = {}
    for label, rs in runs.items():
        rates = [r["images_per_s"] for r in rs]
        out[label] = {"images_per_s": round(statistics.median(rates), 3), "blocks": rs,
                      "concurrency": concurrency, "requests_per_block": n}
    return out


# ------------------------------------------------------------------------------------------
# Dispatch overhead


async def _noop_round_trips(settings, n: int) -> list[dict]:
    """n empty jobs, one at a time: t0 → JobDispatcher.submit → XREAD BLOCK on the job's event
    stream until its SUCCEEDED event. Stream entry ids carry Redis' clock (ms), which splits the
    round trip into submit / queued→RUNNING / RUNNING→SUCCEEDED / event→client."""
    import redis.asyncio as aioredis

    from shared.jobs.celery_app import make_celery
    from shared.jobs.dispatcher import JobDispatcher
    from shared.jobs.records import events_key
    from shared.jobs.store import JobStore

    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        store = JobStore(client, settings.retention_s)
        disp = JobDispatcher(make_celery("jobmesh-bench-dispatch", settings), store)
        out = []
        for _ in range(n):
            wall0 = time.time()
            t0 = time.perf_counter()
            job, _ = await disp.submit(tenant=TENANT, domain="ocr", task=NOOP_TASK,
                                       request={"echo": ""})
            t_sub = time.perf_counter()
            key, last = events_key(job.id), "0-0"
            running_ms = done_ms = None
            while done_ms is None:
                resp = await client.xread({key: last}, block=30_000, count=16)
                if not resp:
                    raise TimeoutError(f"job {job.id} not done after 30 s")
                for _, entries in resp:
                    for eid, fields in entries:
                        last = eid
                        if fields.get(b"type") != b"state":
                            continue
                        state = fields.get(b"state", b"").decode()
                        ms = int(eid.split(b"-")[0])
                        if state == "RUNNING" and running_ms is None:
                            running_ms = ms
                        elif state == "SUCCEEDED":
                            done_ms = ms
                        elif state in ("FAILED", "CANCELLED"):
                            raise RuntimeError(f"noop job {job.id} ended {state}")
            t_done = time.perf_counter()
            total = t_done - t0
            rec = {"id": job.id, "total": total, "submit": t_sub - t0}
            if running_ms is not None:
                rec["queued_to_running"] = max(0.0, running_ms / 1000 - (wall0 + rec["submit"]))
                rec["running_to_succeeded"] = max(0.0, (done_ms - running_ms) / 1000)
            rec["succeeded_to_client"] = max(0.0, total - (done_ms / 1000 - wall0))
            out.append(rec)
        return out
    finally:
        await client.aclose()


def dispatch_overhead(mesh: Mesh, jobs: int, grpc_calls: int, chunks: int = 4) -> dict:
    """Empty-job round trips interleaved, chunk by chunk, with gRPC-only round trips."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
    from jobmesh.jobs.v1 import job_service_pb2_grpc

    settings = mesh.settings()
    loop = asyncio.new_event_loop()
    channel = grpc.insecure_channel(mesh.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        jobs_stub = job_service_pb2_grpc.JobServiceStub(channel)
        warm = loop.run_until_complete(_noop_round_trips(settings, 20))
        name = f"jobs/{warm[-1]['id']}"
        get_req = jobs_pb.GetJobRequest(name=name)
        health_req = health_pb2.HealthCheckRequest(service="")
        for _ in range(50):
            jobs_stub.GetJob(get_req, metadata=AUTH, timeout=10)
            health.Check(health_req, timeout=10)
        if jobs_stub.GetJob(get_req, metadata=AUTH, timeout=10).job.name != name:
            raise RuntimeError("GetJob returned another job")

        noop: list[dict] = []
        get_t: list[float] = []
        health_t: list[float] = []
        per_jobs = max(1, jobs // chunks)
        per_calls = max(1, grpc_calls // chunks)
        for _ in range(chunks):
            noop += loop.run_until_complete(_noop_round_trips(settings, per_jobs))
            for _ in range(per_calls):
                t0 = time.perf_counter()
                jobs_stub.GetJob(get_req, metadata=AUTH, timeout=10)
                get_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                health.Check(health_req, timeout=10)
                health_t.append(time.perf_counter() - t0)
    finally:
        channel.close()
        loop.close()

    def part(key: str) -> dict:
        return summarize([r[key] for r in noop if key in r])

    return {
        "empty_job": part("total"),
        "empty_job_parts": {k: part(k) for k in ("submit", "queued_to_running",
                                                  "running_to_succeeded",
                                                  "succeeded_to_client")},
        "grpc_getjob": summarize(get_t),
        "grpc_health": summarize(health_t),
        "jobs": len(noop),
        "grpc_calls": len(get_t),
    }
