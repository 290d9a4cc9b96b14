"""Diagnostic tasks for tests and benchmarks, registered only with JOBMESH_DIAGNOSTICS=1:
`noop` (dispatch overhead), `sleep` (a long job to cancel or kill mid-run), `crash` (a poison
message that kills its worker process every time) and `batch` (several jobs in one message, any
of which may be poison)."""

from __future__ import annotations

import os
import signal
import time

from shared.jobs.worker_kit import JobContext, WorkerKit


def register(kit: WorkerKit) -> None:
    @kit.task("jobmesh.diag.v1.noop")
    def noop(ctx: JobContext, request: dict) -> dict:
        return {"echo": request.get("echo", "")}

    @kit.task("jobmesh.diag.v1.sleep")
    def sleep(ctx: JobContext, request: dict) -> dict:
        steps = max(1, int(float(request.get("seconds", 1)) * 10))
        for i in range(steps):
            ctx.check_cancelled()
            time.sleep(0.1)
            if i % 10 == 0:
                ctx.progress(i, steps, "sleeping")
        ctx.put_artifact("result.json", b'{"slept": true}', "application/json")
        return {"slept": float(request.get("seconds", 1)), "pid": os.getpid()}

    @kit.batch_task("jobmesh.diag.v1.batch")
    def batch(ctxs: list[JobContext], requests: list[dict]) -> list:
        """Each request may say {"crash": true}: that input kills the worker process."""
        if any(r.get("crash") for r in requests):
            os.kill(os.getpid(), signal.SIGKILL)
        return [{"echo": r.get("echo", ""), "batch": len(requests)} for r in requests]

    @kit.task("jobmesh.diag.v1.crash")
    def crash(ctx: JobContext, request: dict) -> dict:
        os.kill(os.getpid(), signal.SIGKILL)
        return {}
