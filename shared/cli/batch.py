"""`jobmesh batch submit|watch|cancel|results`: batch jobs from a JSONL manifest.

A manifest line is `{"custom_id": "...", "body": {...}}` (the method's request as proto-JSON),
or, for file-input methods (OCR, audio), `{"custom_id": "...", "file": "PATH"}`: the CLI reads
the file (relative paths are relative to the manifest) and writes the body itself, inline when
the file is small and uploaded through a presigned URL when it is not. Lines it cannot read are
reported with their line numbers before anything is sent."""

from __future__ import annotations

import base64
import json
import sys
import time
from argparse import Namespace
from pathlib import Path

from jobmesh.jobs.v1 import job_pb2

from shared.cli import render
from shared.cli.commands import OK, UsageError, _fail, _finished
from shared.cli.render import Output
from shared.client import Client

DEFAULT_METHODS = {"ocr": "Recognize", "textgen": "Generate", "audio": "Tag"}
# service -> (inline bytes field, by-reference field) for `file` lines
FILE_FIELDS = {"ocr": ("image", "imageRef"), "audio": ("audio", "audioRef")}
INLINE_FILE_LIMIT = 1024 * 1024  # files above this are uploaded, not inlined
PHASES = {v: k.removeprefix("BATCH_PHASE_").lower().replace("_", " ")
          for k, v in job_pb2.BatchPhase.items()}


def build_manifest(client: Client, path: str, service: str, timeout_s: float | None) -> bytes:
    """The manifest to send: `file` lines turned into bodies. Raises UsageError naming every
    line it cannot use."""
    src = Path(path)
    try:
        text = sys.stdin.read() if path == "-" else src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    base = Path.cwd() if path == "-" else src.resolve().parent
    out, problems = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            obj = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            obj = None  # the server names it, with every other bad line
        if not isinstance(obj, dict) or "file" not in obj:
            out.append(raw)
            continue
        if service not in FILE_FIELDS:
            problems.append(f"line {number}: `file` lines are for {sorted(FILE_FIELDS)}")
            continue
        file = base / str(obj.pop("file"))
        try:
            data = file.read_bytes()
        except OSError as e:
            problems.append(f"line {number}: cannot read {file}: {e.strerror or e}")
            continue
        inline, by_ref = FILE_FIELDS[service]
        body = dict(obj.get("body") or {})
        if len(data) <= INLINE_FILE_LIMIT:
            body[inline] = base64.b64encode(data).decode()
        else:
            ref = client.upload(service, data, timeout_s=timeout_s)
            body[by_ref] = render.as_dict(ref)
        out.append(json.dumps({**obj, "body": body}, ensure_ascii=False))
    if problems:
        raise UsageError(f"{path}: {len(problems)} bad line(s)\n  " + "\n  ".join(problems))
    return ("\n".join(out) + "\n").encode()


def batch_submit(client: Client, args: Namespace, out: Output) -> int:
    method = args.method or DEFAULT_METHODS[args.service]
    data = build_manifest(client, args.file, args.service, args.timeout)
    job = client.create_batch(args.service, method, data, request_id=args.request_id,
                              completion_window_s=args.completion_window,
                              timeout_s=args.timeout)
    if args.no_wait:
        out.write(render.json_doc(job) if args.output == "json" else job.name)
        return OK
    print(f"{job.name}: {job.batch.request_counts.total} lines", file=sys.stderr)
    job = _follow(client, job.name, args)
    return _conclude(client, job, args, out)


def batch_watch(client: Client, args: Namespace, out: Output) -> int:
    job = _follow(client, args.name, args)
    if args.output == "json":
        out.write(render.json_doc(job))
    else:
        out.write(_summary(job))
    return _finished(job)


def batch_cancel(client: Client, args: Namespace, out: Output) -> int:
    job = client.cancel_job(args.name, timeout_s=args.timeout)
    out.write(render.json_doc(job) if args.output == "json" else
              f"{job.name} {render.state(job.state)} (finished lines are kept)")
    return OK


def batch_results(client: Client, args: Namespace, out: Output) -> int:
    job, ok, bad = client.batch_results(args.name, timeout_s=args.timeout)
    if job.batch.phase != job_pb2.BATCH_PHASE_DONE:
        return _fail(f"{job.name} has no results yet (phase {PHASES[job.batch.phase]}); "
                     "see `jobmesh batch watch`")
    rows = sorted(ok + ([] if args.no_errors else bad), key=lambda e: e.get("line", 0))
    out.write("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) if rows else "")
    return OK


def _follow(client: Client, name: str, args: Namespace) -> job_pb2.Job:
    """Watches until done, with a progress bar on stderr when it is a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    live = console.is_terminal and args.output != "json" and not args.quiet
    last = None
    started = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                  console=console, disable=not live) as bar:
        task = bar.add_task(name, total=None, failed=0)
        for ev in client.watch_job(name, timeout_s=args.timeout):
            last = ev.job
            c = last.batch.request_counts
            bar.update(task, total=c.total or None, completed=c.completed + c.failed,
                       failed=c.failed,
                       description=f"{name} {PHASES[last.batch.phase]}")
    if last is None:
        raise UsageError(f"no events for {name}")
    if not live and args.output != "json" and not args.quiet:
        c = last.batch.request_counts
        print(f"{name}: {render.state(last.state)}, {c.completed} completed, {c.failed} failed "
              f"of {c.total} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return last


def _summary(job: job_pb2.Job) -> str:
    c = job.batch.request_counts
    return (f"{job.name} {render.state(job.state)}: {c.completed} completed, {c.failed} failed "
            f"of {c.total}")


def _conclude(client: Client, job: job_pb2.Job, args: Namespace, out: Output) -> int:
    """Downloads the result files next to the manifest (or into --results-dir)."""
    if job.batch.phase == job_pb2.BATCH_PHASE_DONE:
        _, ok, bad = client.batch_results(job.name, timeout_s=args.timeout)
        folder = Path(args.results_dir) if args.results_dir else (
            Path.cwd() if args.file == "-" else Path(args.file).resolve().parent)
        stem = "batch" if args.file == "-" else Path(args.file).stem
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for suffix, rows in (("output", ok), ("errors", bad)):
            p = folder / f"{stem}.{job.name.removeprefix('jobs/')[:8]}.{suffix}.jsonl"
            p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            paths[suffix] = str(p)
        if args.output == "json":
            out.write(render.json_doc({"job": render.as_dict(job), "files": paths}))
        else:
            out.write(f"{_summary(job)}\noutput: {paths['output']}\nerrors: {paths['errors']}")
    else:
        out.write(render.json_doc(job) if args.output == "json" else _summary(job))
    return _finished(job)
