"""One error tree with a `.reason`, and one table from it to gRPC status codes.

Servicers and pipelines raise these; the error interceptor turns them into `google.rpc.Status`
with `ErrorInfo` (reason, metadata), `BadRequest` (field violations) and `RetryInfo` details.
Workers store them in the job record as `common.v1.Status`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

DOMAIN = "jobmesh.dev"  # ErrorInfo.domain


@dataclass(eq=False)
class JobmeshError(Exception):
    """Base error: `message` for humans, `reason` for machines (an ErrorReason name)."""

    message: str
    reason: str = "INTERNAL"
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after_s: float | None = None
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        d = {
            "code": self.code.value[0],
            "message": self.message,
            "reason": self.reason,
            "metadata": dict(self.metadata),
            "field_violations": [list(v) for v in self.field_violations],
        }
        if self.retry_after_s is not None:
            d["retry_after_s"] = self.retry_after_s
        return d


def _kind(code: grpc.StatusCode, default_reason: str):
    def __init__(self, message: str, reason: str = default_reason, **kw):
        JobmeshError.__init__(self, message, reason=reason, code=code, **kw)

    return __init__


class InvalidArgument(JobmeshError):
    """Bad input. Name the field: `InvalidArgument.for_field("image", "is empty")`."""

    __init__ = _kind(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")

    @classmethod
    def for_field(cls, name: str, problem: str, reason: str = "INVALID_ARGUMENT"):
        return cls(f"{name}: {problem}", reason=reason, field_violations=[(name, problem)])


class NotFound(JobmeshError):
    __init__ = _kind(grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


class Unauthenticated(JobmeshError):
    __init__ = _kind(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


class PermissionDenied(JobmeshError):
    __init__ = _kind(grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


class Unavailable(JobmeshError):
    """A dependency or the workers are not there; clients should retry after `retry_after_s`."""

    __init__ = _kind(grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")


class DeadlineExceeded(JobmeshError):
    __init__ = _kind(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")


class FailedPrecondition(JobmeshError):
    __init__ = _kind(grpc.StatusCode.FAILED_PRECONDITION, "INVALID_ARGUMENT")


class AlreadyExists(JobmeshError):
    __init__ = _kind(grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")


class ResourceExhausted(JobmeshError):
    """A limit was reached: the tenant's rate (`RATE_LIMITED`) or active-job quota
    (`QUOTA_EXCEEDED`); `retry_after_s` says when trying again can succeed."""

    __init__ = _kind(grpc.StatusCode.RESOURCE_EXHAUSTED, "INPUT_TOO_LARGE")


class Cancelled(JobmeshError):
    __init__ = _kind(grpc.StatusCode.CANCELLED, "CANCELLED")


class IntegrityError(JobmeshError):
    __init__ = _kind(grpc.StatusCode.DATA_LOSS, "INTEGRITY")


class Internal(JobmeshError):
    __init__ = _kind(grpc.StatusCode.INTERNAL, "INTERNAL")


_BY_CODE = {
    c.value[0]: c for c in grpc.StatusCode
}


# A sync call whose job failed UNAVAILABLE (e.g. S3 went away while the worker wrote the
# result) tells the client when to retry even if the worker recorded no delay (tests/chaos).
UNAVAILABLE_RETRY_S = 1.0


def from_dict(d: dict) -> JobmeshError:
    """Rebuilds an error stored in a job record (the inverse of `to_dict`)."""
    code = _BY_CODE.get(int(d.get("code", 13)), grpc.StatusCode.INTERNAL)
    retry = d.get("retry_after_s")
    if retry is None and code is grpc.StatusCode.UNAVAILABLE:
        retry = UNAVAILABLE_RETRY_S
    return JobmeshError(
        d.get("message", ""),
        reason=d.get("reason", "INTERNAL"),
        field_violations=[tuple(v) for v in d.get("field_violations", [])],
        metadata=dict(d.get("metadata", {})),
        retry_after_s=None if retry is None else float(retry),
        code=code,
    )


class JobCancelled(Exception):  # noqa: N818 - a signal, not an error a client sees as such
    """Raised by a job function at a batch boundary once the job is CANCELLING."""
