"""`JobServicer`: JobService for every gateway (thin: validate, call the store, convert)."""

from __future__ import annotations

import time

from jobmesh.jobs.v1 import job_service_pb2 as pb
from jobmesh.jobs.v1 import job_service_pb2_grpc

from shared.errors import InvalidArgument
from shared.jobs.convert import job_id_from_name, job_to_pb, kind_from_pb, state_from_pb
from shared.server.interceptors import current_principal

DEFAULT_WAIT_S = 60.0
MAX_WATCH_S = 24 * 3600.0


def _deadline(context, cap_s: float) -> float:
    """Monotonic deadline: the client's, bounded by cap_s."""
    remaining = context.time_remaining()
    budget = cap_s if remaining is None else min(cap_s, max(0.0, remaining - 0.05))
    return time.monotonic() + budget


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, gw):
        self.gw = gw
        self.store = gw.store

    async def GetJob(self, request, context):
        p = current_principal()
        job = await self.store.require(job_id_from_name(request.name), p.tenant)
        return pb.GetJobResponse(job=job_to_pb(job))

    async def ListJobs(self, request, context):
        p = current_principal()
        states = {state_from_pb(s) for s in request.states}
        jobs, token = await self.store.list(
            p.tenant, page_size=request.page_size, page_token=request.page_token,
            states=states, domain=request.domain, kind=kind_from_pb(request.kind))
        return pb.ListJobsResponse(jobs=[job_to_pb(j) for j in jobs], next_page_token=token)

    async def CancelJob(self, request, context):
        p = current_principal()
        job = await self.store.cancel(job_id_from_name(request.name), p.tenant)
        return pb.CancelJobResponse(job=job_to_pb(job))

    async def WaitJob(self, request, context):
        p = current_principal()
        job_id = job_id_from_name(request.name)
        timeout = DEFAULT_WAIT_S
        if request.HasField("timeout"):
            timeout = request.timeout.ToTimedelta().total_seconds()
            if timeout < 0:
                raise InvalidArgument.for_field("timeout", "must not be negative")
        job = await self.store.wait(job_id, p.tenant, _deadline(context, timeout))
        return pb.WaitJobResponse(job=job_to_pb(job))

    async def WatchJob(self, request, context):
        p = current_principal()
        job_id = job_id_from_name(request.name)
        types = {"snapshot": pb.JOB_EVENT_TYPE_SNAPSHOT, "state": pb.JOB_EVENT_TYPE_STATE_CHANGED,
                 "progress": pb.JOB_EVENT_TYPE_PROGRESS}
        async for kind, job in self.store.watch(job_id, p.tenant,
                                                _deadline(context, MAX_WATCH_S)):
            resp = pb.WatchJobResponse(type=types[kind], job=job_to_pb(job))
            resp.event_time.GetCurrentTime()
            yield resp

    async def DeleteJob(self, request, context):
        import asyncio

        p = current_principal()
        job = await self.store.delete(job_id_from_name(request.name), p.tenant)
        prefix = f"tenants/{job.tenant}/jobs/{job.id}/"
        await asyncio.to_thread(self.gw.artifacts.delete_prefix,
                                self.gw.settings.artifacts_bucket, prefix)
        return pb.DeleteJobResponse()
