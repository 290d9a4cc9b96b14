"""The asyncio SDK against a real OCR gateway and worker: many calls in flight from one event
loop, jobs waited and watched, errors with reason and field violations."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from jobmesh.jobs.v1 import job_pb2

from shared.client import AsyncClient, ClientSettings, JobmeshClientError
from tests.conftest import TENANT_KEY
from tests.integration.helpers import render

pytestmark = pytest.mark.integration

WORDS = ["Invoice", "Total", "Receipt", "Payment"]


def test_concurrent_calls_jobs_and_errors(gateway, worker):
    async def go():
        async with AsyncClient(ClientSettings(endpoint=gateway, api_key=TENANT_KEY)) as c:
            got = await asyncio.gather(*(c.ocr_recognize(render(w)) for w in WORDS * 2))
            assert [r.text for r in got] == WORDS * 2
            job = await c.ocr_submit(render("Balance"), request_id="aio-1")
            events = [e.type async for e in c.watch_job(job.name, timeout_s=60)]
            assert events[0] == 1 and len(events) >= 2  # SNAPSHOT, then state changes
            done = await c.wait_job(job.name, timeout_s=60)
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED
            assert (await c.ocr_submit(render("x"), request_id="aio-1")).name == job.name
            with pytest.raises(JobmeshClientError) as e:
                await c.ocr_recognize(b"not an image")
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert e.value.field_violations[0][0] == "image"
            assert e.value.reason == "UNDECODABLE_INPUT"

    asyncio.run(go())
