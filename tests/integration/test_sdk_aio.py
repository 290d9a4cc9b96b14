"""The asyncio SDK against a real OCR gateway and worker: many calls in flight from one event
loop, jobs waited and watched, errors with reason and field violations, uploads and batches."""

from __future__ import annotations

import asyncio
import base64
import json

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


def test_upload_batch_results_list_and_delete(gateway, worker):
    """A manifest over the inline limit travels by presigned upload, as with the sync client."""
    manifest = "\n".join(json.dumps({"custom_id": f"aio-{w}", "body": {
        "image": base64.b64encode(render(w)).decode()}}) for w in WORDS).encode()

    async def go():
        async with AsyncClient(ClientSettings(endpoint=gateway, api_key=TENANT_KEY)) as c:
            ref = await c.upload("ocr", render("Upload"), "image/png")
            assert ref.key and ref.size > 0
            batch = await c.create_batch("ocr", "Recognize", manifest, inline_limit=0)
            done = await c.wait_job(batch.name, timeout_s=120)
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED
            job, out, errors = await c.batch_results(batch.name)
            assert errors == []
            assert {x["custom_id"]: x["response"]["text"] for x in out} == {
                f"aio-{w}": w for w in WORDS}
            listed = [j.name async for j in c.list_jobs(page_size=2)]
            assert batch.name in listed
            await c.delete_job(batch.name)
            with pytest.raises(JobmeshClientError) as e:
                await c.get_job(batch.name)
            assert e.value.code == grpc.StatusCode.NOT_FOUND

    asyncio.run(go())
