"""One of two OCR gateway replicas `kill -9`ed while clients call through a channel over both
addresses (`ipv4:a,b`, the SDK's round_robin service config) and retry UNAVAILABLE on the other.

The replicas share Redis, S3 and the worker, so job state outlives the one that died: jobs
submitted through it are completed and read through the survivor. A dead replica cannot answer
with RetryInfo (its socket is gone); the client sees UNAVAILABLE from gRPC itself and retries:
sync Recognize as is (it changes nothing), SubmitRecognize with the SAME request_id (AIP-155:
a repeat returns the first job, so a retry whose first try did reach the dead replica still
yields one job)."""

from __future__ import annotations

import contextlib
import time
import uuid

import grpc
import pytest
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from shared.client.channel import TrackedChannel
from shared.local.stack import free_port
from tests.chaos.conftest import VISIBILITY_TIMEOUT_S
from tests.chaos.load import Load, check_outcomes, stuck_records, wait_terminal
from tests.conftest import auth
from tests.integration.helpers import details, render

pytestmark = pytest.mark.chaos

REPLICA = "gateway-ocr-b"  # the second replica, the one killed; the fixture's gateway survives
BEFORE_S = 6.0  # load on both replicas before the kill
AFTER_S = 10.0  # load on the survivor after it
SYNC_DEADLINE_S = 20.0  # generous: on a busy 2-core machine a call waits behind the submits
SUBMIT_DEADLINE_S = 5.0
SYNC_CLIENTS = 3
ATTEMPTS = 4  # per call: the first try and up to three retries on UNAVAILABLE
BACKOFF_S = 0.2
SETTLE_S = VISIBILITY_TIMEOUT_S + 30
TEXT = "replica failover"
IMAGE = render(TEXT)


class Retrying:
    """Calls `fn()` up to ATTEMPTS times while it raises UNAVAILABLE, recording each failed
    attempt's code and reason in `failed_attempts`; any other error is raised at once."""

    def __init__(self):
        self.failed_attempts: list[tuple[str, str]] = []

    def __call__(self, fn):
        for attempt in range(ATTEMPTS):
            try:
                return fn()
            except grpc.RpcError as e:
                self.failed_attempts.append((e.code().name, details(e)["reason"]))
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == ATTEMPTS - 1:
                    raise
                time.sleep(BACKOFF_S * 2 ** attempt)
        raise AssertionError("unreachable")


def _summary(loads: list[Load]) -> dict[str, int]:
    out: dict[str, int] = {}
    for load in loads:
        for key, n in load.summary().items():
            out[key] = out.get(key, 0) + n
    return out


@pytest.fixture
def two_replicas(chaos_stack):
    """A second OCR gateway beside the fixture's; yields (survivor, replica) addresses."""
    port = free_port()
    chaos_stack.start_gateway("ocr", port, name=REPLICA)
    try:
        yield chaos_stack.gateway, f"127.0.0.1:{port}"
    finally:
        chaos_stack.stop(REPLICA)


def test_gateway_replica_killed_while_clients_retry_on_the_other(chaos_stack, two_replicas):
    survivor, replica = two_replicas
    url = chaos_stack.env["JOBMESH_REDIS_URL"]
    tracked = TrackedChannel(f"ipv4:{survivor},{replica}")  # round_robin over both
    retry = Retrying()
    try:
        ocr = ocr_service_pb2_grpc.OcrServiceStub(tracked.channel)
        assert ocr.Recognize(pb.RecognizeRequest(image=IMAGE), metadata=auth(),
                             timeout=60).text == TEXT

        def sync() -> str:
            text = retry(lambda: ocr.Recognize(pb.RecognizeRequest(image=IMAGE),
                                               metadata=auth(), timeout=SYNC_DEADLINE_S).text)
            assert text == TEXT
            return ""

        def submit() -> str:
            req = pb.SubmitRecognizeRequest(request_id=uuid.uuid4().hex, image=IMAGE)
            job = retry(lambda: ocr.SubmitRecognize(req, metadata=auth(),
                                                    timeout=SUBMIT_DEADLINE_S).job)
            return job.name.rsplit("/", 1)[-1]

        # Several sync clients, so calls are in flight on the replica when it dies.
        with contextlib.ExitStack() as loads:
            syncs = [loads.enter_context(Load({"sync": sync}, 0.2)) for _ in range(SYNC_CLIENTS)]
            submits = loads.enter_context(Load({"submit": submit}, 1.0))
            time.sleep(BEFORE_S)
            # Jobs certainly accepted by the replica about to die, queued behind the load.
            with grpc.insecure_channel(replica) as direct:
                stub = ocr_service_pb2_grpc.OcrServiceStub(direct)
                via_dead = [stub.SubmitRecognize(
                    pb.SubmitRecognizeRequest(request_id=uuid.uuid4().hex, image=IMAGE),
                    metadata=auth(), timeout=SUBMIT_DEADLINE_S).job.name.rsplit("/", 1)[-1]
                    for _ in range(5)]
            t_kill = time.monotonic()
            chaos_stack.kill(REPLICA)
            time.sleep(AFTER_S)
        with grpc.insecure_channel(replica) as direct, pytest.raises(grpc.RpcError) as dead:
            ocr_service_pb2_grpc.OcrServiceStub(direct).Recognize(
                pb.RecognizeRequest(image=IMAGE), metadata=auth(), timeout=2)
        assert dead.value.code() == grpc.StatusCode.UNAVAILABLE

        calls = [c for load in syncs for c in load.calls] + submits.calls
        jobs = submits.accepted() + via_dead
        states = wait_terminal(url, jobs, SETTLE_S)
        # Read through the channel again: only the survivor is left to answer.
        outcomes = check_outcomes(tracked.channel, jobs)
        after = [c for c in calls if c.t0 >= t_kill]
        figures = {
            "calls": len(calls), "by_outcome": _summary(syncs + [submits]),
            "calls_after_kill": len(after),
            "failed_attempts": {f"{c}/{r}" if r else c: retry.failed_attempts.count((c, r))
                                for c, r in set(retry.failed_attempts)},
            "slowest_call_s": round(max(c.t1 - c.t0 for c in calls), 2),
            "accepted": len(jobs), "via_dead_replica": len(via_dead), "outcomes": outcomes,
        }
        print("\nfigures:", figures)
    finally:
        tracked.close()

    # Every call succeeded in the end: a retry found the survivor.
    assert all(c.code == "OK" for c in calls), [c for c in calls if c.code != "OK"][:3]
    # Sync calls went on past the kill: those in flight then (retried) and new ones.
    assert len([c for c in calls if c.kind == "sync" and c.t1 > t_kill]) >= SYNC_CLIENTS
    assert any(c.kind == "sync" for c in after)
    # What the client saw on the way was UNAVAILABLE only, and nothing hung.
    assert {code for code, _ in retry.failed_attempts} <= {"UNAVAILABLE"}
    assert all(c.t1 - c.t0 <= SYNC_DEADLINE_S + 1 for c in calls)
    # Jobs accepted by the dead replica are done and readable through the survivor.
    assert all(states[j] == "SUCCEEDED" for j in via_dead), {j: states[j] for j in via_dead}
    assert outcomes == {"SUCCEEDED": len(jobs)}
    assert stuck_records(url) == []
