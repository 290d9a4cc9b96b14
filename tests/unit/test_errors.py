import grpc
from google.rpc import error_details_pb2, status_pb2

from shared.errors import InvalidArgument, Unavailable, from_dict
from shared.server.interceptors import rich_status


def _details(status: grpc.Status) -> list:
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return list(status_pb2.Status.FromString(raw).details)


def test_invalid_argument_carries_error_info_and_bad_request():
    status = rich_status(InvalidArgument.for_field("image", "is empty"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    kinds = {d.type_url.rsplit(".", 1)[-1] for d in _details(status)}
    assert kinds == {"ErrorInfo", "BadRequest"}


def test_unavailable_carries_retry_info():
    status = rich_status(Unavailable("no worker", reason="NO_WORKER", retry_after_s=5))
    [info, retry] = _details(status)
    ri = error_details_pb2.RetryInfo()
    retry.Unpack(ri)
    assert ri.retry_delay.seconds == 5


def test_stored_errors_round_trip():
    err = InvalidArgument.for_field("options.min_confidence", "must be within 0..1")
    back = from_dict(err.to_dict())
    assert back.code == grpc.StatusCode.INVALID_ARGUMENT and back.reason == err.reason
    assert back.field_violations == [("options.min_confidence", "must be within 0..1")]


def test_a_stored_unavailable_error_keeps_telling_when_to_retry():
    """A sync call whose job failed UNAVAILABLE answers with RetryInfo: the stored delay, or
    1 s when the worker recorded none (found by the 30 s S3 outage in tests/chaos)."""
    kept = from_dict(Unavailable("S3 is down", reason="BACKEND_UNAVAILABLE",
                                 retry_after_s=3).to_dict())
    assert kept.retry_after_s == 3
    bare = from_dict({"code": grpc.StatusCode.UNAVAILABLE.value[0], "message": "S3 is down",
                      "reason": "BACKEND_UNAVAILABLE"})
    assert bare.retry_after_s == 1.0
    assert from_dict(InvalidArgument("bad").to_dict()).retry_after_s is None
