"""`JobmeshClientError`: every failed call, with the server's `google.rpc.Status` details unpacked.

`reason` is the `ErrorInfo.reason` (an ErrorReason name such as `NOT_FOUND`, empty when the
error came from the transport rather than a gateway); `field_violations` are the `BadRequest`
violations as `(field, description)` pairs.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class JobmeshClientError(Exception):
    """A call failed. `unreachable` is True when the mesh could not be reached at all: the
    transport or a gateway said UNAVAILABLE, or the deadline passed before a connection was
    ever made."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "",
                 field_violations: list[tuple[str, str]] | None = None, *,
                 endpoint: str = "", connected: bool = True,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.field_violations = list(field_violations or [])
        self.endpoint = endpoint
        self.connected = connected
        self.retry_after_s = retry_after_s

    @property
    def unreachable(self) -> bool:
        return self.code is grpc.StatusCode.UNAVAILABLE or (
            self.code is grpc.StatusCode.DEADLINE_EXCEEDED and not self.connected)

    @property
    def auth_refused(self) -> bool:
        return self.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

    def __str__(self) -> str:
        head = self.code.name + (f" {self.reason}" if self.reason else "")
        return f"{head}: {self.message}"

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError, *, endpoint: str = "",
                       connected: bool = True) -> JobmeshClientError:
        """Builds the error from a failed call, reading ErrorInfo, BadRequest and RetryInfo."""
        code = (err.code() if hasattr(err, "code") else None) or grpc.StatusCode.UNKNOWN
        message = err.details() if hasattr(err, "details") else str(err)
        reason, violations, retry = "", [], None
        try:
            status = rpc_status.from_call(err)
        except (ValueError, AttributeError):  # details that do not match the call's status
            status = None
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                retry = info.retry_delay.ToTimedelta().total_seconds()
        if not reason and endpoint and code is grpc.StatusCode.UNAVAILABLE:
            message = f"cannot reach {endpoint}: {message}"
        elif not connected and code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"no connection to {endpoint} before the deadline: {message}"
        return cls(code, message or code.name, reason, violations,
                   endpoint=endpoint, connected=connected, retry_after_s=retry)
