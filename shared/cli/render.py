"""How the CLI prints: proto JSON (`--output json`) or short text, to stdout or `--out PATH`.

JSON is `google.protobuf.json_format` with the proto field names; a single result is one
indented document, streams (watch events, one result per input file) are one compact document
per line. Text is for people: one line per job or event, `key: value` lines for one job.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC
from pathlib import Path

import grpc
from google.protobuf import json_format, message, timestamp_pb2
from jobmesh.jobs.v1 import job_pb2, job_service_pb2

from shared.client import job_response

_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def as_dict(msg: message.Message) -> dict:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def json_doc(value, *, compact: bool = False) -> str:
    """`value` (a message, or plain data holding messages) as a JSON document."""
    if isinstance(value, message.Message):
        value = as_dict(value)
    return json.dumps(value, ensure_ascii=False, indent=None if compact else 2)


def ts(t: timestamp_pb2.Timestamp) -> str:
    if not t.seconds and not t.nanos:
        return "-"
    return t.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def state(value: int) -> str:
    return job_pb2.JobState.Name(value).removeprefix("JOB_STATE_")


def progress(p: job_pb2.Progress) -> str:
    if not (p.done or p.total or p.message):
        return ""
    count = f"{p.done}/{p.total}" if p.total else str(p.done)
    return f"{count} {p.message}".strip()


def job_error(job: job_pb2.Job) -> str:
    """`<CODE> <reason>: <message>` of a FAILED/CANCELLED job ("" when it has no error)."""
    if not job.HasField("error"):
        return ""
    e = job.error
    head = " ".join(x for x in (_CODE_NAMES.get(e.code, str(e.code)), e.reason) if x)
    lines = [f"{head}: {e.message}"] + [f"  {v.field}: {v.description}"
                                          for v in e.field_violations]
    return "\n".join(lines)


def job_line(job: job_pb2.Job) -> str:
    return f"{job.name:<40} {state(job.state):<11} {job.domain:<12} {ts(job.create_time)}"


JOB_HEADER = f"{'NAME':<40} {'STATE':<11} {'DOMAIN':<12} CREATED"


def job_details(job: job_pb2.Job) -> str:
    """`key: value` lines for one job; the result's text (OCR) follows after a blank line."""
    rows = [("name", job.name), ("state", state(job.state)), ("domain", job.domain),
            ("method", job.method), ("progress", progress(job.progress)),
            ("request_id", job.request_id), ("created", ts(job.create_time)),
            ("updated", ts(job.update_time)), ("expires", ts(job.expire_time)),
            ("error", job_error(job))]
    rows += [("artifact", f"s3://{a.bucket}/{a.key}") for a in job.result.artifacts]
    lines = [f"{k + ':':<12}{v}" for k, v in rows if v and v != "-"]
    response = job_response(job)
    text = getattr(response, "text", None)
    if isinstance(text, str):
        lines += ["", text]
    return "\n".join(lines)


def event_line(ev: job_service_pb2.WatchJobResponse) -> str:
    kind = job_service_pb2.JobEventType.Name(ev.type).removeprefix("JOB_EVENT_TYPE_")
    parts = [ts(ev.event_time), f"{kind:<13}", f"{state(ev.job.state):<11}", ev.job.name,
             progress(ev.job.progress)]
    return " ".join(p for p in parts if p).rstrip()


class Output:
    """Where results go: stdout, or `path` replaced atomically when the command ends (so a
    failed command never truncates an existing file; partial output is still kept)."""

    def __init__(self, path: str | None = None):
        self.path = Path(path) if path else None
        self._tmp = None
        self.written = False

    def write(self, text: str) -> None:
        """Writes `text` and a newline."""
        self.stream(text + "\n")

    def stream(self, text: str) -> None:
        """Writes `text` as is (token deltas), flushed at once on a terminal or pipe."""
        self.written = True
        if self.path is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        if self._tmp is None:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.",
                                        dir=self.path.parent.resolve())
            self._tmp = (os.fdopen(fd, "w", encoding="utf-8"), name)
        self._tmp[0].write(text)

    def write_bytes(self, data: bytes) -> None:
        """Binary output (a WAV file); needs `--out PATH`, written atomically like text."""
        if self.path is None:
            raise ValueError("binary output needs a file")
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent.resolve())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self._tmp = (open(name, "a", encoding="utf-8"), name)  # close() moves it into place
        self.written = True

    def close(self) -> None:
        if self._tmp is None:
            return
        f, name = self._tmp
        f.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(name, self.path)
        self._tmp = None


def compress_result(r) -> str:
    """A CompressResult as the few lines an operator decides on."""
    lines = [f"{r.model}@{r.version} from {r.parent_version} ({r.recipe})"
             + ("  PROMOTED: now serving" if r.promoted else "  (not serving: promote with "
                f"`jobmesh models promote {r.model}:{r.version}`)"),
             f"  size      {r.size_bytes / 1e6:.2f} MB vs {r.parent_size_bytes / 1e6:.2f} MB "
             f"({r.size_ratio:.2f}x smaller)",
             f"  latency   {r.latency_ratio:.2f}x the original (same inputs, same run)",
             f"  {r.metric:<9} {r.metric_value:.4f} vs {r.parent_metric:.4f} "
             f"(delta {r.metric_delta:+.4f})"]
    lines += [f"  - {n}" for n in r.notes]
    return "\n".join(lines)


def curation_report(rep) -> str:
    """A GetReportResponse: totals, one line per step, and where the outputs and report are."""
    s = rep.summary
    lines = [f"{s.documents_in:,} documents in {s.shards} shards"
             + (f" ({s.shards_resumed} resumed)" if s.shards_resumed else "")
             + f": {s.documents_kept:,} kept, {s.documents_removed:,} removed in {s.seconds:.1f} s"]
    for st in s.steps:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(st.reasons.items(),
                                                          key=lambda kv: -kv[1]))
        lines.append(f"  {st.step:<18} in {st.documents_in:>8,}  kept {st.kept:>8,}  "
                     f"removed {st.removed:>7,}" + (f"  ({reasons})" if reasons else ""))
    lines += [f"output   {s.output_prefix}", f"report   {rep.report_html_url}"]
    return "\n".join(lines)
