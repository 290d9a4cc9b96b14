"""The CLI's commands: each takes (client, args, out), prints through `out` and returns the exit
code. Failed calls raise `JobmeshClientError` (main maps it to an exit code); a bad input file
raises `UsageError` before any call is made."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from jobmesh.jobs.v1 import job_pb2

from shared.cli import render
from shared.cli.render import Output
from shared.client import DEFAULT_TIMEOUT_S, Client, job_response

OK, FAILED = 0, 1


class UsageError(Exception):
    """Bad command-line input found after parsing (exit 2)."""


def _read(path: str) -> bytes:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    if not data:
        raise UsageError(f"{path} is empty")
    return data


def _fail(line: str) -> int:
    print(f"error: {line}", file=sys.stderr)
    return FAILED


def _finished(job: job_pb2.Job, waited_s: float | None = None) -> int:
    """Exit code for a job that should be done: 0 SUCCEEDED, else 1 with the reason on stderr."""
    if job.state == job_pb2.JOB_STATE_SUCCEEDED:
        return OK
    if not job.done:
        after = f" after {waited_s:g} s" if waited_s is not None else ""
        return _fail(f"DEADLINE_EXCEEDED: {job.name} is still {render.state(job.state)}{after}")
    return _fail(render.job_error(job) or f"{job.name} ended {render.state(job.state)}")


def ocr_recognize(client: Client, args: Namespace, out: Output) -> int:
    images = [(path, _read(path)) for path in args.files]
    several = len(images) > 1
    for n, (path, data) in enumerate(images, start=1):
        if args.submit:
            rid = f"{args.request_id}-{n}" if args.request_id and several else args.request_id
            job = client.ocr_submit(data, rid or "", args.classify_angle, args.min_confidence,
                                    long_lines=not args.no_long_lines, timeout_s=args.timeout)
            out.write(render.json_doc({"file": path, "job": render.as_dict(job)}, compact=several)
                      if args.output == "json" else job.name)
            continue
        resp = client.ocr_recognize(data, args.classify_angle, args.min_confidence,
                                    long_lines=not args.no_long_lines, timeout_s=args.timeout)
        if args.output == "json":
            out.write(render.json_doc({"file": path, "response": render.as_dict(resp)},
                                      compact=several))
        else:
            gap = "\n" if n > 1 else ""
            out.write(f"{gap}==> {path} <==\n{resp.text}" if several else resp.text)
    return OK


def jobs_get(client: Client, args: Namespace, out: Output) -> int:
    job = client.get_job(args.name, timeout_s=args.timeout)
    out.write(render.json_doc(job) if args.output == "json" else render.job_details(job))
    return OK


def jobs_list(client: Client, args: Namespace, out: Output) -> int:
    jobs = client.list_jobs(args.state, args.domain, args.page_size, timeout_s=args.timeout)
    if args.output == "json":
        out.write(render.json_doc({"jobs": [render.as_dict(j) for j in jobs]}))
        return OK
    lines = [render.job_line(j) for j in jobs]
    if not lines:
        print("no jobs", file=sys.stderr)
        return OK
    out.write("\n".join([render.JOB_HEADER, *lines]))
    return OK


def jobs_cancel(client: Client, args: Namespace, out: Output) -> int:
    job = client.cancel_job(args.name, timeout_s=args.timeout)
    out.write(render.json_doc(job) if args.output == "json"
              else f"{job.name} {render.state(job.state)}")
    return OK


def jobs_wait(client: Client, args: Namespace, out: Output) -> int:
    waited = args.timeout or DEFAULT_TIMEOUT_S
    job = client.wait_job(args.name, timeout_s=waited)
    out.write(render.json_doc(job) if args.output == "json" else render.job_details(job))
    return _finished(job, waited)


def jobs_watch(client: Client, args: Namespace, out: Output) -> int:
    last = None
    for ev in client.watch_job(args.name, timeout_s=args.timeout):
        out.write(render.json_doc(ev, compact=True) if args.output == "json"
                  else render.event_line(ev))
        last = ev.job
    if last is None:
        return _fail(f"no events for {args.name}")
    return _finished(last)


def jobs_delete(client: Client, args: Namespace, out: Output) -> int:
    client.delete_job(args.name, timeout_s=args.timeout)
    out.write("{}" if args.output == "json" else f"deleted {args.name}")
    return OK


def models_list(client: Client, args: Namespace, out: Output) -> int:
    models = list(client.list_models(timeout_s=args.timeout))
    if args.output == "json":
        out.write(render.json_doc({"models": [render.as_dict(m) for m in models]}))
        return OK
    rows = [f"{'NAME':<32} {'SERVING':<24} VERSIONS"]
    rows += [f"{m.name:<32} {m.serving_version or '-':<24} "
             f"{','.join(v.version for v in m.versions)}" for m in models]
    out.write("\n".join(rows))
    return OK


def _model_rows(m) -> str:
    rows = [f"{m.name}  serving {m.serving_version or '-'}"
            + (f"  (before: {', '.join(m.serving_history[:3])})" if m.serving_history else "")]
    for v in m.versions:
        mark = "*" if v.version == m.serving_version else " "
        size = sum(f.size for f in v.files)
        origin = v.provenance.package and f"{v.provenance.package}=={v.provenance.package_version}"
        if v.provenance.parent_version:
            origin = f"from {v.provenance.parent_version} by {v.provenance.source}"
        rows.append(f" {mark} {v.version:<44} {size / 1e6:9.1f} MB  {origin}")
    return "\n".join(rows)


def models_show(client: Client, args: Namespace, out: Output) -> int:
    m = client.get_model(args.name, timeout_s=args.timeout)
    out.write(render.json_doc(m) if args.output == "json" else _model_rows(m))
    return OK


def models_promote(client: Client, args: Namespace, out: Output) -> int:
    name, _, version = args.model.partition(":")
    if not version:
        raise UsageError(f"{args.model}: give NAME:VERSION")
    resp = client.promote_model(name, version, timeout_s=args.timeout)
    out.write(render.json_doc(resp) if args.output == "json" else
              f"{name}: serving {version} (was {resp.previous_version or '-'}); workers switch "
              "within their refresh interval")
    return OK


def models_rollback(client: Client, args: Namespace, out: Output) -> int:
    resp = client.rollback_model(args.name, timeout_s=args.timeout)
    out.write(render.json_doc(resp) if args.output == "json" else
              f"{args.name}: serving {resp.model.serving_version} (was {resp.previous_version})")
    return OK


def _pipeline_file(path: str) -> list[dict]:
    import yaml

    text = _read(path).decode()
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not YAML: {e}") from None
    if isinstance(spec, dict) and "pipeline" in spec:
        spec = spec["pipeline"]
    if not isinstance(spec, list):
        raise UsageError(f"{path}: expected a list of steps ({{step: NAME, ...params}})")
    return spec


def curation_upload(client: Client, args: Namespace, out: Output) -> int:
    prefix = args.prefix.strip("/")
    for name in args.files:
        path = Path(name)
        ref = client.curation_upload(f"{prefix}/{path.name}", _read(name),
                                     timeout_s=args.timeout)
        out.write(render.json_doc(ref, compact=True) if args.output == "json" else
                  f"{name} -> data/{prefix}/{path.name} ({ref.size} bytes)")
    return OK


def _follow(client: Client, job, args: Namespace, out: Output):
    """Prints a line per event (text output) until the job is done; returns its last state."""
    last = job
    for ev in client.watch_job(job.name):
        if args.output == "text":
            out.write(render.event_line(ev))
        last = ev.job
    return last


def curation_submit(client: Client, args: Namespace, out: Output) -> int:
    try:
        job = client.curation_submit(_pipeline_file(args.pipeline), args.output_prefix,
                                     input_prefix=args.input_prefix,
                                     text_field=args.text_field, id_field=args.id_field,
                                     request_id=args.request_id, timeout_s=args.timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.wait:
        out.write(render.json_doc(job) if args.output == "json" else job.name)
        return OK
    last = _follow(client, job, args, out)
    if last.state == job_pb2.JOB_STATE_SUCCEEDED:
        rep = client.curation_report(last.name)
        out.write(render.json_doc(rep) if args.output == "json" else
                  render.curation_report(rep))
    elif args.output == "json":
        out.write(render.json_doc(last))
    return _finished(last)


def curation_report(client: Client, args: Namespace, out: Output) -> int:
    rep = client.curation_report(args.name, timeout_s=args.timeout)
    out.write(render.json_doc(rep) if args.output == "json" else render.curation_report(rep))
    return OK


def curation_score(client: Client, args: Namespace, out: Output) -> int:
    texts = [sys.stdin.read() if t == "-" else t for t in args.texts]
    scores = client.curation_score(texts, timeout_s=args.timeout)
    if args.output == "json":
        out.write(render.json_doc({"scores": [render.as_dict(s) for s in scores]}))
        return OK
    for text, s in zip(texts, scores, strict=True):
        failed = {k: v for k, v in s.filters.items() if v}
        out.write(f"{text[:60]!r}: language {s.language} ({s.language_score:.2f}), "
                  f"profanity {s.profanity:.2f}, {int(s.signals['words'])} words, filters: "
                  + (", ".join(failed.values()) if failed else "all pass"))
    return OK


def curation_steps(client: Client, args: Namespace, out: Output) -> int:
    steps = client.curation_steps(timeout_s=args.timeout)
    if args.output == "json":
        out.write(render.json_doc({"steps": [render.as_dict(s) for s in steps]}))
        return OK
    import json

    for s in steps:
        params = json.loads(s.params_schema).get("properties", {})
        out.write(f"{s.step:<18} {s.kind:<7} {', '.join(params) or '(no parameters)'}")
    return OK


def compression_submit(client: Client, args: Namespace, out: Output) -> int:
    name, _, version = args.model.partition(":")
    options = {"version": version, "samples": args.samples, "promote": args.promote,
               "max_metric_delta": args.max_metric_delta,
               "max_latency_ratio": args.max_latency_ratio, "request_id": args.request_id,
               "op_types": args.op_type, "method": args.method, "include": args.include,
               "per_tensor": args.per_tensor, "fp16": args.fp16,
               "calibration": args.calibration, "density": args.density,
               "alphas": args.alpha, "task_vector": args.task_vector}
    try:
        job = client.compression_submit(name, args.recipe, timeout_s=args.timeout, **options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.wait:
        out.write(render.json_doc(job) if args.output == "json" else job.name)
        return OK
    last = _follow(client, job, args, out)
    if args.output == "json":
        out.write(render.json_doc(last))
    else:
        result = job_response(last)
        if result is not None:
            out.write(render.compress_result(result))
    return _finished(last)


def compression_recipes(client: Client, args: Namespace, out: Output) -> int:
    recipes = client.compression_recipes(timeout_s=args.timeout)
    if args.output == "json":
        out.write(render.json_doc({"recipes": [render.as_dict(r) for r in recipes]}))
        return OK
    out.write("\n".join(f"{r.name:<13} {'yes' if r.available else 'no ':<4} {r.description}"
                        + (f"\n{'':18}{r.reason}" if r.reason else "") for r in recipes))
    return OK


def textgen_generate(client: Client, args: Namespace, out: Output) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    params = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
              "top_p": args.top_p, "top_k": args.top_k, "seed": args.seed, "stop": args.stop,
              "speculation": args.speculation, "timeout_s": args.timeout}
    source = {"prompt": prompt} if args.raw else {
        "messages": [{"role": "user", "content": prompt}]}
    if args.stream:
        final = None
        for event in client.textgen_stream(**source, **params):
            if event.HasField("final"):
                final = event.final
            elif args.output == "text":
                out.stream(event.delta.text)
        if args.output == "json" and final is not None:
            out.write(render.json_doc(_generation_json(final)))
        elif final is not None:
            out.stream("\n")
        return OK
    resp = client.textgen_generate(**source, **params)
    out.write(render.json_doc(_generation_json(resp)) if args.output == "json" else resp.text)
    return OK


def _generation_json(resp) -> dict:
    u = resp.usage
    return {"text": resp.text, "token_ids": list(resp.token_ids),
            "finish_reason": render.as_dict(resp).get("finish_reason", ""),
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                      "forward_passes": u.forward_passes,
                      "accepted_draft_tokens": u.accepted_draft_tokens},
            "model_version": resp.model_version}


def _each_file(args: Namespace, out: Output, call, text_rows) -> int:
    """Runs `call(data)` per input file and prints its response: proto JSON (one compact
    document per file when several), or `text_rows(resp)` under an `==> path <==` header
    when several files are given."""
    files = [(path, _read(path)) for path in args.files]
    several = len(files) > 1
    for n, (path, data) in enumerate(files, start=1):
        resp = call(data)
        if args.output == "json":
            out.write(render.json_doc({"file": path, "response": render.as_dict(resp)},
                                      compact=several))
            continue
        head = f"{'' if n == 1 else chr(10)}==> {path} <==\n" if several else ""
        out.write(head + "\n".join(text_rows(resp)))
    return OK


def audio_tag(client: Client, args: Namespace, out: Output) -> int:
    def rows(resp) -> list[str]:
        lines = [f"{c.score:6.3f}  {c.label}" for c in resp.top]
        for seg in resp.segments:
            best = seg.top[0] if seg.top else None
            lines.append(f"  {seg.start_seconds:8.2f}-{seg.end_seconds:<8.2f} "
                         f"{best.label if best else '-'} {best.score if best else 0:.3f}")
        return lines

    return _each_file(args, out, lambda data: client.audio_tag(
        data, top_k=args.top_k, segments=args.segments, model=args.model,
        timeout_s=args.timeout), rows)


def audio_vad(client: Client, args: Namespace, out: Output) -> int:
    def rows(resp) -> list[str]:
        return [f"{s.start_seconds:8.2f}  {s.end_seconds:8.2f}" for s in resp.segments] + [
            f"speech {resp.speech_seconds:.2f} s of {resp.info.duration_seconds:.2f} s"]

    return _each_file(args, out, lambda data: client.audio_detect_speech(
        data, threshold=args.threshold, min_speech_ms=args.min_speech_ms,
        min_silence_ms=args.min_silence_ms, timeout_s=args.timeout), rows)


def audio_transcribe(client: Client, args: Namespace, out: Output) -> int:
    def rows(resp) -> list[str]:
        if not args.words:
            return [resp.text]
        return [f"{w.start_seconds:8.2f}  {w.end_seconds:8.2f}  {w.word}"
                for seg in resp.segments for w in seg.words]

    return _each_file(args, out, lambda data: client.audio_transcribe(
        data, vad=not args.no_vad, beam_size=args.beam_size, timeout_s=args.timeout), rows)


def audio_synthesize(client: Client, args: Namespace, out: Output) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    resp = client.audio_synthesize(text, length_scale=args.length_scale, timeout_s=args.timeout)
    if resp.WhichOneof("output") == "audio_ref":
        raise UsageError(f"the audio is over 4 MiB and was stored as {resp.audio_ref.key}; "
                         "synthesize shorter text")
    if not args.out:
        raise UsageError("--out PATH is required (the WAV file to write)")
    info = {"sample_rate": resp.sample_rate, "duration_seconds": round(resp.duration_seconds, 3),
            "model_version": resp.model_version, "bytes": len(resp.audio)}
    out.write_bytes(resp.audio)
    print(render.json_doc(info) if args.output == "json" else
          f"{resp.duration_seconds:.2f} s at {resp.sample_rate} Hz", file=sys.stderr)
    return OK
