"""Inputs by reference, shared by every servicer that takes files: presigned uploads, the
ownership check on an ArtifactRef, keeping an async job's inline input in S3, and staging a
sync call's large inline input in S3 for the duration of the call."""

from __future__ import annotations

import asyncio
import time
import uuid

from shared.errors import InvalidArgument, NotFound
from shared.jobs.records import ARTIFACT_EXPIRY_KEY, JobRecord
from shared.storage.artifacts import ArtifactRef, check_key, owned_by, tenant_key


async def checked_ref(gw, ref: ArtifactRef, tenant: str, field: str) -> ArtifactRef:
    """The caller may only point at its own objects; anything else is NOT_FOUND (no hint that
    another tenant's object exists); a key that is not a plain path is INVALID_ARGUMENT on
    `<field>.key`. Returns the ref completed from the object's stat."""
    settings = gw.settings
    check_key(ref.key, f"{field}.key")
    if ref.bucket != settings.artifacts_bucket or not owned_by(tenant, ref.key):
        raise NotFound(f"{field}: object not found", metadata={"field": field})
    stat = await asyncio.to_thread(gw.artifacts.stat, ref.bucket, ref.key)
    if stat.size > settings.max_upload_bytes:
        raise InvalidArgument.for_field(field, f"is {stat.size} bytes; the limit is "
                                        f"{settings.max_upload_bytes}", reason="INPUT_TOO_LARGE")
    return ArtifactRef(ref.bucket, ref.key, ref.sha256 or stat.sha256, stat.size,
                       stat.content_type)


async def keep_input(gw, tenant: str, job: JobRecord, data: bytes) -> dict:
    """Stores an async job's inline input under the job (not in the queue), so the job survives
    a broker restart with its input and the input expires with it; returns the ref dict."""
    key = tenant_key(tenant, "jobs", job.id, "input")
    ref = await asyncio.to_thread(gw.artifacts.put_bytes, gw.settings.artifacts_bucket, key,
                                  data)
    await gw.redis.zadd(ARTIFACT_EXPIRY_KEY, {f"{ref.bucket}/{ref.key}": job.expire_time})
    return ref.to_dict()


STAGED_TTL_S = 3600  # the janitor's safety net; a staged input is deleted when its call ends


async def stage_input(gw, tenant: str, data: bytes) -> ArtifactRef | None:
    """Puts a sync call's inline input in S3 when it is larger than JOBMESH_INLINE_STAGE_BYTES
    (None otherwise, or when staging is off), so the worker reads it by reference instead of
    from a Celery message (base64 through Redis: 4/3 of its size, encoded and decoded by both
    ends). The key is `tenants/<tenant>/staged/<uuid>`; the caller deletes it when the call
    ends (`discard_staged`); the janitor deletes it after STAGED_TTL_S should the gateway die
    first."""
    limit = gw.settings.inline_stage_bytes
    if not limit or len(data) <= limit:
        return None
    key = tenant_key(tenant, "staged", uuid.uuid4().hex)
    ref = await asyncio.to_thread(gw.artifacts.put_bytes, gw.settings.artifacts_bucket, key,
                                  data)
    await gw.redis.zadd(ARTIFACT_EXPIRY_KEY, {f"{ref.bucket}/{ref.key}": time.time()
                                              + STAGED_TTL_S})
    return ref


async def discard_staged(gw, ref: ArtifactRef) -> None:
    """Deletes a staged input now that its call has ended (best effort: the janitor's expiry
    entry stays as the safety net)."""
    try:
        await asyncio.to_thread(gw.artifacts.delete, ref.bucket, ref.key)
        await gw.redis.zrem(ARTIFACT_EXPIRY_KEY, f"{ref.bucket}/{ref.key}")
    except Exception:  # the janitor deletes it later
        pass


async def create_upload(gw, tenant: str, content_type: str, size: int,
                        allowed: tuple[str, ...]) -> tuple[ArtifactRef, str, float]:
    """(ref, presigned PUT URL, URL expiry epoch) for an input too large to send inline."""
    settings = gw.settings
    if content_type not in allowed:
        raise InvalidArgument.for_field("content_type", f"must be one of {allowed}")
    if not 0 < size <= settings.max_upload_bytes:
        raise InvalidArgument.for_field(
            "size", f"must be within 1..{settings.max_upload_bytes} bytes",
            reason="INPUT_TOO_LARGE" if size > 0 else "INVALID_ARGUMENT")
    key = tenant_key(tenant, "uploads", uuid.uuid4().hex)
    bucket, expiry = settings.artifacts_bucket, settings.presign_expiry_s
    url = gw.artifacts.presign_put(bucket, key, expiry)
    await gw.redis.zadd(ARTIFACT_EXPIRY_KEY,
                        {f"{bucket}/{key}": time.time() + settings.retention_s})
    return ArtifactRef(bucket, key, "", size, content_type), url, time.time() + expiry
