"""The S3 server (inputs, results, model registry) stopped for S3_OUTAGE_S under load: sync
Recognize on an uploaded image (`image_ref`) and async SubmitRecognize with an inline image
(kept in S3, result written to S3). Calls fail with a clear error, never hang, and succeed again
once S3 is back; no job is left QUEUED or RUNNING, including a diagnostic job that writes its
result artifact while S3 is down."""

from __future__ import annotations

import os
import time
import urllib.request
import uuid

import pytest
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from tests.chaos.conftest import VISIBILITY_TIMEOUT_S
from tests.chaos.load import Load, check_outcomes, stuck_records, wait_terminal
from tests.conftest import auth
from tests.integration.helpers import render, submit_diag, wait_state

pytestmark = pytest.mark.chaos

# `make chaos` stops S3 for the 30 s; CI for 12, which keeps it short and still
# spans many calls.
S3_OUTAGE_S = float(os.environ.get("CHAOS_S3_OUTAGE_S", "12"))
SYNC_DEADLINE_S = 15.0
SUBMIT_DEADLINE_S = 5.0
PACE_S = 0.4
AFTER_S = 10.0
SETTLE_S = VISIBILITY_TIMEOUT_S + 30
TEXT = "object store outage"
# A clear error: the mesh says what failed. INTERNAL, UNKNOWN or a hang to the deadline is not.
CLEAR_CODES = {"UNAVAILABLE", "FAILED_PRECONDITION", "NOT_FOUND", "ABORTED", "DATA_LOSS"}


def _upload(ocr, data: bytes):
    up = ocr.CreateUpload(pb.CreateUploadRequest(content_type="image/png", size=len(data)),
                          metadata=auth(), timeout=10)
    req = urllib.request.Request(up.upload_url, data=data, method="PUT",
                                 headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (200, 201)
    return up.ref


def test_s3_down_then_back_under_load(chaos_stack, chaos_channel):
    stack, env = chaos_stack, chaos_stack.env
    ocr = ocr_service_pb2_grpc.OcrServiceStub(chaos_channel)
    image = render(TEXT)
    ref = _upload(ocr, image)
    assert ocr.Recognize(pb.RecognizeRequest(image_ref=ref), metadata=auth(),
                         timeout=60).text == TEXT

    def sync() -> str:
        text = ocr.Recognize(pb.RecognizeRequest(image_ref=ref), metadata=auth(),
                             timeout=SYNC_DEADLINE_S).text
        assert text == TEXT
        return ""

    def submit() -> str:
        return ocr.SubmitRecognize(
            pb.SubmitRecognizeRequest(request_id=uuid.uuid4().hex, image=image),
            metadata=auth(), timeout=SUBMIT_DEADLINE_S).job.name.rsplit("/", 1)[-1]

    with Load({"sync": sync, "submit": submit}, PACE_S) as load:
        time.sleep(2)
        # A job running when S3 goes: it writes its result artifact during the outage.
        running = submit_diag(env, "jobmesh.diag.v1.sleep", {"seconds": 2})
        wait_state(env, running, {"RUNNING"}, 30)
        t_down = time.monotonic()
        stack.stop("s3")
        time.sleep(S3_OUTAGE_S)
        stack.start_s3(stack.s3_port)
        t_up = time.monotonic()
        time.sleep(AFTER_S)
    accepted = load.accepted() + [running]
    states = wait_terminal(env["JOBMESH_REDIS_URL"], accepted, SETTLE_S)
    outage = load.between(t_down, t_up)
    figures = {
        "calls": len(load.calls), "by_outcome": load.summary(), "accepted": len(accepted),
        "outage_s": round(t_up - t_down, 1), "calls_in_outage": len(outage),
        "first_sync_ok_after_s": load.first_ok_after(t_up, "sync"),
        "first_submit_ok_after_s": load.first_ok_after(t_up, "submit"),
        "running_job": wait_terminal(env["JOBMESH_REDIS_URL"], [running], SETTLE_S)[running],
        "slowest_sync_s": round(max((c.t1 - c.t0 for c in load.calls if c.kind == "sync"),
                                    default=0), 2),
    }
    print("\nfigures:", figures)
    not_done = {j: s for j, s in states.items() if s not in {"SUCCEEDED", "FAILED"}}
    assert not not_done, f"jobs not terminal {SETTLE_S}s after S3 came back: {not_done}"
    figures["outcomes"] = check_outcomes(chaos_channel, accepted)
    figures["unaccepted_records_stuck"] = stuck_records(env["JOBMESH_REDIS_URL"])
    print("figures:", figures)
    failed = [c for c in load.calls if c.code != "OK"]
    unclear = [c for c in failed if c.code not in CLEAR_CODES or not c.reason]
    assert not unclear, f"calls that failed without a clear error: {unclear}"
    assert all(c.code != "UNAVAILABLE" or (c.retry_s or 0) > 0 for c in failed), failed
    assert any(c.code != "OK" for c in outage), "S3 down and every call still succeeded?"
    assert figures["first_sync_ok_after_s"] is not None
    assert figures["first_submit_ok_after_s"] is not None
    assert figures["unaccepted_records_stuck"] == []
