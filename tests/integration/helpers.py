"""Helpers for integration tests: rendered text images, rich error details, diagnostic jobs."""

from __future__ import annotations

import asyncio
import io
import time

import grpc
import redis
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image, ImageDraw, ImageFont

FONTS = "/usr/share/fonts/truetype/dejavu/"


def render(lines: list[str] | str, font: str = "DejaVuSans.ttf", size: int = 36) -> bytes:
    lines = [lines] if isinstance(lines, str) else lines
    f = ImageFont.truetype(FONTS + font, size)
    width = max(int(f.getlength(t)) for t in lines) + 60
    img = Image.new("RGB", (width, int(size * 1.8) * len(lines) + 30), "white")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((30, 15 + i * int(size * 1.8)), text, font=f, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def details(err: grpc.RpcError) -> dict:
    """{reason, violations: [(field, description)], retry_s} from google.rpc.Status details."""
    out = {"reason": "", "violations": [], "retry_s": None}
    status = rpc_status.from_call(err)
    for d in status.details if status else []:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            out["reason"] = info.reason
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            out["violations"] = [(v.field, v.description) for v in br.field_violations]
        elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            d.Unpack(ri)
            out["retry_s"] = ri.retry_delay.ToTimedelta().total_seconds()
    return out


def _with_dispatcher(env: dict, use):
    import redis.asyncio as aioredis

    from shared.config import Settings
    from shared.jobs.celery_app import make_celery
    from shared.jobs.dispatcher import JobDispatcher
    from shared.jobs.store import JobStore

    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in env.items()})

    async def go():
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            store = JobStore(client, settings.retention_s)
            return await use(JobDispatcher(make_celery("test-dispatch", settings), store))
        finally:
            await client.aclose()

    return asyncio.run(go())


def submit_diag(env: dict, task: str, request: dict, tenant: str = "tenant-a",
                request_id: str = "") -> str:
    """Queues a diagnostic job the way a gateway would (JobStore + Celery by name)."""

    async def use(disp) -> str:
        job, _ = await disp.submit(tenant=tenant, domain="ocr", task=task, request=request,
                                   request_id=request_id)
        return job.id

    return _with_dispatcher(env, use)


def submit_diag_batch(env: dict, requests: list[dict], max_delay_s: float = 0.2) -> list[str]:
    """Queues several diagnostic jobs as ONE message, through the gateway's coalescer."""
    from shared.jobs.coalescer import Coalescer

    async def use(disp) -> list[str]:
        co = Coalescer(disp, max_batch=len(requests), max_delay_s=max_delay_s)
        jobs = [await co.submit(tenant="tenant-a", domain="ocr", task="jobmesh.diag.v1.batch",
                                request=r) for r in requests]
        return [j.id for j in jobs]

    return _with_dispatcher(env, use)


def job_state(env: dict, job_id: str) -> str:
    client = redis.Redis.from_url(env["JOBMESH_REDIS_URL"])
    s = client.hget(f"jobmesh:job:{job_id}", "state")
    return s.decode() if s else ""


def wait_state(env: dict, job_id: str, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = job_state(env, job_id)
        if s in states:
            return s
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job_state(env, job_id)} after {timeout}s, "
                         f"wanted {states}")


def wait_job(channel, name: str, key: str, timeout: float = 240.0):
    """The job once done (WaitJob in rounds of up to 60 s); fails the test after `timeout`."""
    from jobmesh.jobs.v1 import job_service_pb2, job_service_pb2_grpc

    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = jobs.WaitJob(job_service_pb2.WaitJobRequest(name=name),
                            metadata=[("authorization", f"Bearer {key}")], timeout=60).job
        if done.done:
            return done
    raise AssertionError(f"{name} not done in {timeout} s")
