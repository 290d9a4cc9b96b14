"""Graceful drain: SIGTERM on a gateway finishes the calls in flight and refuses new ones; SIGTERM
on a worker finishes its running job before it exits (Celery's warm shutdown), so the job runs
once. The signal goes to the main process only, as tini or the kubelet send it."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from shared.local.stack import free_port
from tests.conftest import auth
from tests.integration.helpers import job_state, render, submit_diag, wait_state

pytestmark = pytest.mark.integration

LONG_LINE = ("Gateways validate requests and dispatch jobs through a queue to workers that run "
             "models while inputs and outputs live in object storage next to them. ") * 4


def test_sigterm_on_a_gateway_finishes_in_flight_calls_and_refuses_new_ones(worker):
    port = free_port()
    proc = worker.start_gateway("ocr", port, name="gateway-ocr-drain")
    image = render(LONG_LINE.strip(), size=32)  # a long line: a second or more of work
    result: dict = {}

    def call():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = ocr_service_pb2_grpc.OcrServiceStub(ch)
            try:
                result["text"] = stub.Recognize(pb.RecognizeRequest(image=image),
                                                metadata=auth(), timeout=60).text
            except grpc.RpcError as err:
                result["error"] = err.code()

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.4)  # the call is in the worker now
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.2)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as e:
        ocr_service_pb2_grpc.OcrServiceStub(ch).Recognize(
            pb.RecognizeRequest(image=render("late")), metadata=auth(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    t.join(60)
    assert "error" not in result, result
    assert "Gateways validate requests" in result["text"]
    assert proc.wait(15) == 0  # exits on its own once drained
    worker.procs.pop("gateway-ocr-drain", None)


def test_sigterm_on_a_worker_finishes_its_job_first(worker):
    env = worker.env
    job_id = submit_diag(env, "jobmesh.diag.v1.sleep", {"seconds": 3})
    wait_state(env, job_id, {"RUNNING"}, 30)
    main = worker.procs["worker-ocr"]
    os.kill(main.pid, signal.SIGTERM)  # warm shutdown: finish the task, take no new one
    assert main.wait(30) is not None
    assert job_state(env, job_id) == "SUCCEEDED"
    import redis

    deliveries = redis.Redis.from_url(env["JOBMESH_REDIS_URL"]).hget(
        f"jobmesh:job:{job_id}", "deliveries")
    assert int(deliveries) == 1  # it ran once: not cut off and redelivered
    worker.procs.pop("worker-ocr", None)
    worker.start_worker("ocr")
    worker.wait_consumers("ocr.cpu")
