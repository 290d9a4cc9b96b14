"""A bounded load client for fault tests (one thread, one call at a time, a fixed pace) and the
checks every fault test makes afterwards: each accepted job ended SUCCEEDED once or FAILED with
a reason, and nothing is left QUEUED or RUNNING."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import grpc
import redis
from jobmesh.jobs.v1 import job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
from jobmesh.ocr.v1 import ocr_service_pb2 as ocr_pb

from tests.conftest import auth
from tests.integration.helpers import details

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


@dataclass
class Call:
    t0: float  # time.monotonic() when the call started
    t1: float
    code: str  # grpc.StatusCode name, "OK" on success
    reason: str = ""  # ErrorInfo.reason when the gateway answered with one
    retry_s: float | None = None
    job_id: str = ""  # an async call's job (the gateway accepted it)
    kind: str = ""


class Load:
    """Calls `fn()` every `interval_s` until stopped. `fn` returns a job id ("" for a sync call)
    or raises grpc.RpcError; every outcome is recorded with its timing."""

    def __init__(self, fns: dict, interval_s: float):
        self.fns, self.interval_s = fns, interval_s
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the load client hung"

    def _run(self) -> None:
        kinds = list(self.fns)
        i = 0
        while not self._stop.is_set():
            kind = kinds[i % len(kinds)]
            i += 1
            t0 = time.monotonic()
            try:
                job_id = self.fns[kind]()
                self.calls.append(Call(t0, time.monotonic(), "OK", job_id=job_id, kind=kind))
            except grpc.RpcError as e:
                d = details(e)
                self.calls.append(Call(t0, time.monotonic(), e.code().name, d["reason"],
                                       d["retry_s"], kind=kind))
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - t0)))

    def accepted(self) -> list[str]:
        return [c.job_id for c in self.calls if c.job_id]

    def between(self, t0: float, t1: float) -> list[Call]:
        return [c for c in self.calls if t0 <= c.t0 < t1]

    def first_ok_after(self, t: float, kind: str | None = None) -> float | None:
        oks = [c.t1 for c in self.calls
               if c.t0 >= t and c.code == "OK" and kind in (None, c.kind)]
        return min(oks) - t if oks else None

    def summary(self) -> dict:
        out: dict[str, int] = {}
        for c in self.calls:
            key = f"{c.kind}:{c.code}" + (f"/{c.reason}" if c.reason else "")
            out[key] = out.get(key, 0) + 1
        return out


def ocr_submitter(ocr, images: list[bytes], deadline_s: float):
    """A `Load` function: SubmitRecognize of the next image (a fresh request_id each call),
    returning the accepted job's id."""
    n = [0]

    def call() -> str:
        n[0] += 1
        job = ocr.SubmitRecognize(
            ocr_pb.SubmitRecognizeRequest(request_id=uuid.uuid4().hex,
                                          image=images[n[0] % len(images)]),
            metadata=auth(), timeout=deadline_s).job
        return job.name.rsplit("/", 1)[-1]
    return call


def wait_terminal(redis_url: str, job_ids: list[str], timeout: float) -> dict[str, str]:
    """Polls the job records until every job is terminal or `timeout` passes; returns states."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        with client.pipeline() as p:
            for j in job_ids:
                p.hget(f"jobmesh:job:{j}", "state")
            states = dict(zip(job_ids, p.execute(), strict=True))
        if all(s in TERMINAL for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.25)


def stuck_records(redis_url: str, within_s: float = 15.0) -> list[tuple[str, str]]:
    """Every job record in this Redis still not terminal after `within_s` (accepted by a client
    or not). A record whose task never reached the broker is failed by the gateways' janitor
    after JOBMESH_DISPATCH_GRACE_S (5 s here), so it is waited for, not counted at once."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + within_s
    while True:
        out = []
        for key in client.scan_iter("jobmesh:job:*", count=500):
            if key.count(":") == 2 and client.type(key) == "hash":
                state = client.hget(key, "state")
                if state not in TERMINAL:
                    out.append((key.rsplit(":", 1)[1], state))
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def check_outcomes(channel, job_ids: list[str]) -> dict[str, int]:
    """Each job SUCCEEDED exactly once in effect (one SUCCEEDED in a valid history, a result
    artifact) or FAILED with a reason. Returns counts by final state (and FAILED reasons)."""
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    counts: dict[str, int] = {}
    problems = []
    for job_id in job_ids:
        job = jobs.GetJob(jobs_pb.GetJobRequest(name=f"jobs/{job_id}"), metadata=auth(),
                          timeout=10).job
        states = [job_pb2.JobState.Name(t.state).removeprefix("JOB_STATE_")
                  for t in job.transitions]
        final = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
        if final == "SUCCEEDED":
            ok = (states[0] == "QUEUED" and states.count("SUCCEEDED") == 1
                  and states[-1] == "SUCCEEDED" and "FAILED" not in states
                  and set(states) <= {"QUEUED", "RUNNING", "SUCCEEDED"}
                  and len(job.result.artifacts) >= 1)
            key = final
        elif final == "FAILED":
            ok = bool(job.error.reason) and states.count("FAILED") == 1 \
                and "SUCCEEDED" not in states and job.error.reason != "INTERNAL"
            key = f"FAILED/{job.error.reason}"
        else:
            ok, key = False, final
        counts[key] = counts.get(key, 0) + 1
        if not ok:
            problems.append((job_id, final, states, job.error.reason, job.error.message,
                             len(job.result.artifacts)))
    assert not problems, f"jobs with an invalid outcome: {problems}"
    return counts
