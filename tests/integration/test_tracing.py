"""Tracing across gRPC → Celery → worker: one Recognize call is one trace, the worker's task
span a child of the gateway's RPC span, continuing the caller's own traceparent. A gateway and
worker of their own (on a Redis DB of their own, so the session's worker cannot take the job)
write their spans to a JSON-lines file (JOBMESH_TRACE_FILE)."""

from __future__ import annotations

import json
import time

import grpc
import pytest
import redis
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from shared.jobs.records import consumers_key
from shared.local.stack import free_port
from tests.conftest import auth, claimed_redis_db
from tests.integration.helpers import render

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def traced(stack, tmp_path):
    spans = tmp_path / "spans.jsonl"
    with claimed_redis_db() as url:
        env = {"JOBMESH_TRACE_FILE": str(spans), "JOBMESH_REDIS_URL": url}
        port = free_port()
        stack.start_worker("ocr", name="worker-ocr-traced", extra_env=env)
        stack.start_gateway("ocr", port, name="gateway-ocr-traced", extra_env=env)
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 90
        while client.zcount(consumers_key("ocr.cpu"), time.time() - 3, "+inf") < 1:
            assert time.monotonic() < deadline, "traced worker never consumed"
            time.sleep(0.2)
        try:
            yield f"127.0.0.1:{port}", spans
        finally:
            stack.stop("gateway-ocr-traced")
            stack.stop("worker-ocr-traced")


def _trace(path, trace_id: str, timeout: float = 10.0) -> list[dict]:
    """The spans of one trace, once both the gateway's and the worker's are written (each
    process exports a span when it ends, so the worker's may land after the reply)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        rows = [r for r in rows if r["trace_id"] == trace_id]
        if {"SERVER", "CONSUMER"} <= {r["kind"] for r in rows} or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_one_call_is_one_trace_from_gateway_to_worker(traced):
    address, path = traced
    with grpc.insecure_channel(address) as ch:
        stub = ocr_service_pb2_grpc.OcrServiceStub(ch)
        meta = [*auth(), ("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")]
        resp = stub.Recognize(pb.RecognizeRequest(image=render("Invoice")), metadata=meta,
                              timeout=60)
    assert resp.text == "Invoice"
    rows = _trace(path, CALLER_TRACE)
    server = [r for r in rows if r["kind"] == "SERVER"]
    task = [r for r in rows if r["kind"] == "CONSUMER"]
    assert len(server) == 1 and len(task) == 1, rows
    [server], [task] = server, task
    assert server["name"] == "/jobmesh.ocr.v1.OcrService/Recognize"
    assert server["parent_id"] == CALLER_SPAN  # the caller's traceparent was continued
    assert server["service"] == "jobmesh-gateway-ocr"
    assert task["name"].startswith("task jobmesh.ocr.v1.recognize")
    assert task["service"] == "jobmesh-worker-ocr" and task["pid"] != server["pid"]
    assert task["parent_id"] == server["span_id"]  # across Redis, in the task headers
    assert server["start_ns"] <= task["start_ns"]
