"""Job records ⇄ `jobmesh.jobs.v1` messages: the only job code that touches `*_pb2`.

Domains register how their JSON result becomes their response message (`register_result`), so
`Job.result.response` carries e.g. a `jobmesh.ocr.v1.RecognizeResponse` packed in an Any.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from jobmesh.common.v1 import artifact_pb2, status_pb2
from jobmesh.jobs.v1 import job_pb2

from shared.errors import InvalidArgument
from shared.jobs.records import JobRecord, State

_RESULTS: dict[str, Callable[[dict], Message]] = {}


def register_result(method: str, to_message: Callable[[dict], Message]) -> None:
    _RESULTS[method] = to_message


def ts(epoch: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(epoch * 1e9))
    return t


def state_pb(state: State | str) -> int:
    return job_pb2.JobState.Value(f"JOB_STATE_{State(state).value}")


def state_from_pb(value: int) -> State:
    name = job_pb2.JobState.Name(value).removeprefix("JOB_STATE_")
    if name == "UNSPECIFIED":
        raise InvalidArgument.for_field("states", "JOB_STATE_UNSPECIFIED is not a state")
    return State(name)


def kind_from_pb(value: int) -> str:
    return "" if value == 0 else job_pb2.JobKind.Name(value).removeprefix("JOB_KIND_")


def artifact_pb(d: dict) -> artifact_pb2.ArtifactRef:
    return artifact_pb2.ArtifactRef(bucket=d.get("bucket", ""), key=d.get("key", ""),
                                    sha256=d.get("sha256", ""), size=int(d.get("size", 0)),
                                    content_type=d.get("content_type", ""))


def error_pb(d: dict) -> status_pb2.Status:
    return status_pb2.Status(
        code=int(d.get("code", 13)), message=d.get("message", ""), reason=d.get("reason", ""),
        metadata=d.get("metadata", {}),
        field_violations=[status_pb2.FieldViolation(field=f, description=desc)
                          for f, desc in d.get("field_violations", [])])


def job_to_pb(job: JobRecord) -> job_pb2.Job:
    msg = job_pb2.Job(
        name=job.name, domain=job.domain, method=job.method,
        kind=job_pb2.JobKind.Value(f"JOB_KIND_{job.kind}"), state=state_pb(job.state),
        progress=job_pb2.Progress(done=job.progress_done, total=job.progress_total,
                                  message=job.progress_message),
        request_id=job.request_id, create_time=ts(job.create_time),
        update_time=ts(job.update_time), expire_time=ts(job.expire_time),
        delivery_count=job.deliveries, done=job.done,
        transitions=[job_pb2.StateTransition(state=state_pb(s), time=ts(t))
                     for s, t in job.transitions])
    if job.error and job.state in (State.FAILED, State.CANCELLED):
        msg.error.CopyFrom(error_pb(job.error))
    elif job.state is State.SUCCEEDED:
        result = job_pb2.JobResult(artifacts=[artifact_pb(a) for a in job.artifacts])
        to_message = _RESULTS.get(job.method)
        if to_message is not None and job.result is not None:
            result.response.Pack(to_message(job.result))
        msg.result.CopyFrom(result)
    if job.batch is not None:
        msg.batch.CopyFrom(batch_pb(job.batch))
    return msg


def batch_pb(info) -> job_pb2.BatchStatus:
    meta = info.meta
    msg = job_pb2.BatchStatus(
        service=meta.get("service", ""), method=meta.get("method", ""),
        phase=job_pb2.BatchPhase.Value(f"BATCH_PHASE_{info.phase}"),
        request_counts=job_pb2.BatchRequestCounts(total=info.total, completed=info.completed,
                                                  failed=info.failed))
    if meta.get("deadline"):
        msg.deadline.CopyFrom(ts(float(meta["deadline"])))
    for name in ("input_file", "output_file", "error_file"):
        if meta.get(name):
            getattr(msg, name).CopyFrom(artifact_pb(meta[name]))
    return msg


def job_id_from_name(name: str) -> str:
    """Accepts `jobs/<id>` or a bare id."""
    job_id = name.removeprefix("jobs/")
    if not job_id or not job_id.isalnum() or len(job_id) > 64:
        raise InvalidArgument.for_field("name", "must be `jobs/<id>`")
    return job_id
