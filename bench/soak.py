"""`python -m bench.soak` (`make soak`): a fixed request rate for N minutes against OCR Recognize
and text generation Generate on a mesh of its own, watching every process's memory.

The mesh: rclone S3 with the PP-OCR models and the SmolLM2 export registered, one OCR worker and
gateway, one textgen worker and gateway (LocalStack, as `make run` and the tests start them), on a
Redis DB of its own. The load is open loop: request k is due at k / rate seconds whatever the
answers do, alternating OCR (a rendered text line) and Generate (a short prompt, a few greedy
tokens), at most `--max-in-flight` at once; a request due while that many are out is not sent and
is counted. Latency is timed from the moment a request was due, so a stalled mesh shows up in it.
RSS of every mesh process (gateways, worker parents AND their prefork children, the S3 server) is
sampled every few seconds; growth is the last sample against the sample at the end of warm-up
(the first 20% of the run). Writes `bench/results/soak.md` and `.json`; exits 1 when a request
failed or a process grew by 5% or more after warm-up."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import machine
from bench.ocr_mesh import AUTH, bench_env, claim_db, fallback_images, release
from bench.report import publish

GROWTH_LIMIT_PCT = 5.0
PROMPTS = ["Name a colour.", "Say hello.", "What is 2 + 2?", "Name a fruit."]
MAX_NEW_TOKENS = 8
DEADLINE_S = 60.0
WARM_UP_DEADLINE_S = 300.0  # the first calls wait for the models to load


# ------------------------------------------------------------------------------------------
# The mesh


def start_domains(stack, settings, domains: tuple[str, ...] = ("ocr", "textgen")) -> dict:
    """Registers each domain's models in the stack's S3 and starts one worker (1 prefork child)
    and one gateway per domain on free ports; returns {domain: host:port} once all consume."""
    from shared.local.stack import free_port
    from shared.models.importer import prepare
    from shared.models.registry import ModelRegistry
    from shared.storage.artifacts import ArtifactStore
    from workers.textgen.export import register_textgen_model

    if "ocr" in domains:
        prepare(settings)
    if "textgen" in domains:
        register_textgen_model(ModelRegistry(ArtifactStore.from_settings(settings),
                                             settings.models_bucket))
    addresses = {}
    for domain in domains:
        # No worker /metrics port: the soak must not hold a port `make up` wants.
        stack.start_worker(domain, extra_env={"JOBMESH_METRICS_PORT": "0"})
        port = free_port()
        stack.start_gateway(domain, port)
        addresses[domain] = f"127.0.0.1:{port}"
    for domain in domains:
        stack.wait_consumers(f"{domain}.cpu", timeout=240)
    return addresses


@dataclass
class SoakMesh:
    """Its own S3 server and `start_domains` on a Redis DB claimed as benchmarks claim one."""

    redis_url: str
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jobmesh-soak-")))
    addresses: dict = field(default_factory=dict)  # domain -> host:port
    stack: object = None

    def start(self) -> SoakMesh:
        from shared.config import Settings
        from shared.local.stack import LocalStack, free_port

        claim_db(self.redis_url)
        s3_port = free_port()
        env = bench_env(self.redis_url, s3_port)
        self.stack = stack = LocalStack(self.root, env)
        stack.start_s3(s3_port)
        settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in env.items()})
        self.addresses = start_domains(stack, settings)
        return self

    def stop(self) -> None:
        release(self.stack, self.redis_url)
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# Memory


def _rss_and_children(pid: int) -> tuple[int, list[int]]:
    """(RSS bytes, child pids) of one process: psutil when installed, else /proc."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            return p.memory_info().rss, [c.pid for c in p.children()]
        except psutil.Error:
            return 0, []
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) * 1024 for line in status.splitlines()
                   if line.startswith("VmRSS:"))
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return rss, [int(k) for k in kids]
    except (OSError, StopIteration, ValueError):
        return 0, []


def rss_snapshot(procs: dict) -> dict[str, dict]:
    """{process label: {pid, rss_mib}} for every mesh process and its children (a worker's
    prefork children are `worker-<domain>/child<k>`, ordered by pid)."""
    out = {}
    for name, proc in procs.items():
        rss, kids = _rss_and_children(proc.pid)
        if rss:
            out[name] = {"pid": proc.pid, "rss_mib": round(rss / 2**20, 1)}
        for k, kid in enumerate(sorted(kids), 1):
            kid_rss, _ = _rss_and_children(kid)
            if kid_rss:
                out[f"{name}/child{k}"] = {"pid": kid, "rss_mib": round(kid_rss / 2**20, 1)}
    return out


class Periodic:
    """`tick()` on entry, every `every_s` seconds on a thread while inside `with`, and once more
    on exit (after the thread has stopped)."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.tick()

    def __enter__(self):
        self.tick()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        self.tick()


class RssSampler(Periodic):
    """`rss_snapshot` every `every_s` seconds: `samples` [(seconds since start, snapshot)]."""

    def __init__(self, procs: dict, every_s: float):
        super().__init__(every_s)
        self.procs = procs
        self.samples: list[tuple[float, dict]] = []
        self._t0 = time.monotonic()

    def tick(self) -> None:
        self.samples.append((time.monotonic() - self._t0, rss_snapshot(self.procs)))


def rss_growth(samples: list[tuple[float, dict]], warmup_s: float) -> dict[str, dict]:
    """Per process: RSS at the last sample taken by the end of warm-up, at the end, and growth
    in %. A process whose pid changed between the two (a respawned child) is flagged."""
    warm = [s for t, s in samples if t <= warmup_s] or [samples[0][1]]
    start, end = warm[-1], samples[-1][1]
    out = {}
    for name in sorted(set(start) | set(end)):
        a, b = start.get(name), end.get(name)
        row = {"warm_mib": a["rss_mib"] if a else None, "end_mib": b["rss_mib"] if b else None,
               "peak_mib": max(s[name]["rss_mib"] for _, s in samples if name in s)}
        if a and b and a["pid"] == b["pid"]:
            row["growth_pct"] = round(100 * (b["rss_mib"] - a["rss_mib"]) / a["rss_mib"], 2)
        else:
            row["note"] = "process replaced or missing"
        out[name] = row
    return out


# ------------------------------------------------------------------------------------------
# Load


@dataclass
class Outcome:
    method: str
    code: str  # grpc.StatusCode name, "OK" on success
    latency_s: float  # from the moment the request was due
    same: bool = True  # the answer equals this request's first answer


async def run_load(addresses: dict, rate: float, seconds: float, max_in_flight: int,
                   warm_up: bool = False, metadata=AUTH) -> tuple[list[Outcome], int]:
    """Open loop at `rate` requests/s for `seconds`; returns (outcomes, requests not sent).
    With `warm_up`, sends one request per method instead (a worker beats before its prefork
    child has loaded its models: the first calls pay for that)."""
    import grpc
    from jobmesh.ocr.v1 import ocr_service_pb2 as ocr_pb
    from jobmesh.ocr.v1 import ocr_service_pb2_grpc
    from jobmesh.textgen.v1 import textgen_service_pb2 as tg_pb
    from jobmesh.textgen.v1 import textgen_service_pb2_grpc

    images = [png for _, png, _ in fallback_images()[:4]]  # single rendered lines
    async with grpc.aio.insecure_channel(addresses["ocr"]) as ocr_ch, \
            grpc.aio.insecure_channel(addresses["textgen"]) as tg_ch:
        ocr = ocr_service_pb2_grpc.OcrServiceStub(ocr_ch)
        tg = textgen_service_pb2_grpc.TextGenerationServiceStub(tg_ch)

        timeout = WARM_UP_DEADLINE_S if warm_up else DEADLINE_S

        def request(k: int):
            if k % 2 == 0:
                return "ocr.Recognize", ocr.Recognize(
                    ocr_pb.RecognizeRequest(image=images[k // 2 % len(images)]),
                    metadata=metadata, timeout=timeout), lambda r: r.text
            params = tg_pb.GenerationParameters(max_new_tokens=MAX_NEW_TOKENS, temperature=0)
            return "textgen.Generate", tg.Generate(
                tg_pb.GenerateRequest(prompt=PROMPTS[k // 2 % len(PROMPTS)], parameters=params),
                metadata=metadata, timeout=timeout), lambda r: r.text

        first: dict[tuple[int, int], str] = {}  # the first answer per distinct request
        outcomes: list[Outcome] = []

        async def one(k: int, due: float) -> None:
            method, call, answer = request(k)
            key = (k % 2, k // 2 % (len(images) if k % 2 == 0 else len(PROMPTS)))
            try:
                text = answer(await call)
                same = first.setdefault(key, text) == text
                outcomes.append(Outcome(method, "OK", time.monotonic() - due, same))
            except grpc.aio.AioRpcError as e:
                outcomes.append(Outcome(method, e.code().name, time.monotonic() - due))

        if warm_up:
            await asyncio.gather(one(0, time.monotonic()), one(1, time.monotonic()))
            return outcomes, 0

        pending: set[asyncio.Task] = set()
        not_sent = 0
        t0 = time.monotonic()
        for k in range(int(seconds * rate)):
            due = t0 + k / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if len(pending) >= max_in_flight:
                not_sent += 1
                continue
            task = asyncio.create_task(one(k, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=DEADLINE_S + 5)
        return outcomes, not_sent


def latency_table(outcomes: list[Outcome]) -> dict[str, dict]:
    out = {}
    for method in sorted({o.method for o in outcomes}):
        mine = [o for o in outcomes if o.method == method]
        ok = np.array([o.latency_s for o in mine if o.code == "OK"]) * 1000
        codes: dict[str, int] = {}
        for o in mine:
            if o.code != "OK":
                codes[o.code] = codes.get(o.code, 0) + 1
        out[method] = {"requests": len(mine), "ok": int(ok.size), "errors": codes,
                       "error_rate": round((len(mine) - ok.size) / len(mine), 4),
                       "differing_answers": sum(not o.same for o in mine)}
        if ok.size:
            out[method].update(p50_ms=round(float(np.percentile(ok, 50)), 1),
                               p99_ms=round(float(np.percentile(ok, 99)), 1),
                               max_ms=round(float(ok.max()), 1))
    return out


# ------------------------------------------------------------------------------------------
# One soak


def measure(addresses: dict, procs: dict, seconds: float, rate: float, max_in_flight: int = 64,
            warmup_fraction: float = 0.2, sample_s: float = 5.0, metadata=AUTH) -> dict:
    """Warm-up calls, then the load for `seconds` while sampling the RSS of `procs` (name ->
    Popen; their children too); returns the figures. Raises if a warm-up call fails."""
    warm, _ = asyncio.run(run_load(addresses, rate, seconds, max_in_flight, True, metadata))
    failed = [o for o in warm if o.code != "OK"]
    if failed:
        raise RuntimeError(f"the mesh failed its warm-up calls: {failed}")
    with RssSampler(procs, sample_s) as sampler:
        outcomes, not_sent = asyncio.run(run_load(addresses, rate, seconds, max_in_flight,
                                                  metadata=metadata))
    growth = rss_growth(sampler.samples, seconds * warmup_fraction)
    over = {n: r["growth_pct"] for n, r in growth.items()
            if r.get("growth_pct", 0.0) >= GROWTH_LIMIT_PCT}
    methods = latency_table(outcomes)
    return {"seconds": seconds, "rate_per_s": rate, "max_in_flight": max_in_flight,
            "warmup_s": round(seconds * warmup_fraction, 1), "sample_every_s": sample_s,
            "warm_up_calls": latency_table(warm),
            "due": int(seconds * rate), "sent": len(outcomes), "not_sent": not_sent,
            "errors": sum(sum(m["errors"].values()) for m in methods.values()),
            "methods": methods, "rss": growth, "rss_samples": len(sampler.samples),
            "growth_over_limit": over,
            "growth_pass": not over and all("growth_pct" in r for r in growth.values())}


def soak(redis_url: str, seconds: float, rate: float, max_in_flight: int = 64,
         warmup_fraction: float = 0.2, sample_s: float = 5.0) -> dict:
    """Starts a mesh of its own, `measure`s it, stops it; adds the machine and its CPU load."""
    facts = machine.describe(redis_url, repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    mesh = SoakMesh(redis_url)
    try:
        t = time.monotonic()
        mesh.start()
        startup_s = round(time.monotonic() - t, 1)
        result = measure(mesh.addresses, mesh.stack.procs, seconds, rate, max_in_flight,
                         warmup_fraction, sample_s)
    finally:
        mesh.stop()
    return {"machine": facts, "load": meter.stop(), "startup_s": startup_s, **result}


def report_lines(r: dict) -> list[str]:
    facts, load = r["machine"], r["load"]
    lines = [f"# Soak ({machine.one_line(facts)})", "",
             f"{r['seconds'] / 60:g} min at {r['rate_per_s']:g} requests/s, open loop (at most "
             f"{r['max_in_flight']} in flight), alternating OCR Recognize (a rendered text line) "
             f"and textgen Generate ({MAX_NEW_TOKENS} greedy tokens); one worker (1 prefork "
             f"child) and one gateway per domain. Latency from the moment each request was due. "
             f"Foreign CPU load during the run: {load.get('foreign_cores', '?')} cores of "
             f"{facts['cores_usable']} (machine busy {load.get('machine_busy_cores', '?')}). "
             f"Git {facts.get('git', '?')}. Command: `make soak` (`python -m bench.soak`).", "",
             f"Requests due {r['due']}, sent {r['sent']}, not sent (in-flight cap) "
             f"{r['not_sent']}, failed {r['errors']}.", "",
             "| method | requests | p50 ms | p99 ms | max ms | error rate | errors by code | "
             "answers differing from the first |", "|---|---|---|---|---|---|---|---|"]
    for name, m in r["methods"].items():
        codes = ", ".join(f"{c} {n}" for c, n in m["errors"].items()) or "-"
        lines.append(f"| {name} | {m['requests']} | {m.get('p50_ms', '-')} | "
                     f"{m.get('p99_ms', '-')} | {m.get('max_ms', '-')} | {m['error_rate']:.2%} | "
                     f"{codes} | {m['differing_answers']} |")
    verdict = "PASS" if r["growth_pass"] else "FAIL"
    lines += ["", f"RSS every {r['sample_every_s']:g} s ({r['rss_samples']} samples); warm-up is "
              f"the first {r['warmup_s']:g} s. Growth after warm-up < {GROWTH_LIMIT_PCT:g}% for "
              f"every process: **{verdict}**.", "",
              "| process | RSS end of warm-up MiB | RSS end MiB | peak MiB | growth |",
              "|---|---|---|---|---|"]
    for name, g in r["rss"].items():
        growth = f"{g['growth_pct']:+.2f}%" if "growth_pct" in g else g.get("note", "")
        lines.append(f"| {name} | {g['warm_mib']} | {g['end_mib']} | {g['peak_mib']} | "
                     f"{growth} |")
    if "redis" not in r["rss"]:
        lines += ["", "Redis is the machine's own server (a DB index of the soak's), not a mesh "
                  "process, so it is not sampled."]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)),
                   help="length of the load (env SOAK_MINUTES)")
    p.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 1)),
                   help="requests per second, both methods together (env SOAK_RATE)")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the run that is warm-up")
    p.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.max_in_flight < 1 \
            or not 0 < args.warmup < 1 or args.sample_s <= 0:
        p.error("--minutes, --rate, --max-in-flight, --sample-s must be positive and "
                "--warmup between 0 and 1")
    result = soak(args.redis_url, args.minutes * 60, args.rate, args.max_in_flight, args.warmup,
                  args.sample_s)
    publish("soak", report_lines(result), result, write=not args.no_write)
    return 0 if result["errors"] == 0 and result["growth_pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
