"""Where a batch's files live, all under its job (`tenants/<t>/jobs/<id>/`), so DeleteJob and
retention remove them with the job. Chunk files are keyed by chunk index: a chunk that runs
again overwrites its output instead of adding a second copy."""

from __future__ import annotations

from shared.storage.artifacts import tenant_key


def chunk_input(tenant: str, job_id: str, chunk: int) -> str:
    return tenant_key(tenant, "jobs", job_id, "chunks", f"{chunk:06d}.in.json")


def chunk_output(tenant: str, job_id: str, chunk: int) -> str:
    return tenant_key(tenant, "jobs", job_id, "chunks", f"{chunk:06d}.out.jsonl")


def manifest(tenant: str, job_id: str) -> str:
    return tenant_key(tenant, "jobs", job_id, "input.jsonl")


OUTPUT_NAME = "output.jsonl"
ERRORS_NAME = "errors.jsonl"
JSONL = "application/jsonl"
