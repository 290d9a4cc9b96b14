"""Shared fixtures. Integration fixtures start real processes: the rclone S3 server, an OCR
gateway and OCR workers (via LocalStack, like `make run`), against the machine's Redis on a
DB index of their own, with the real PP-OCR models imported into the test registry."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import grpc
import pytest
import redis

import shared  # noqa: F401 - generates and exposes the jobmesh.* stubs
from shared.local.stack import LocalStack, free_port

TEST_REDIS_BASE = os.environ.get("JOBMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TENANT_KEY = "test-key-tenant-a"
OTHER_KEY = "test-key-tenant-b"
ADMIN_KEY = "test-key-admin"


def _claim_redis_db() -> tuple[str, redis.Redis]:
    """A DB index (8..15) no other test session holds, so parallel sessions never flush each
    other's data; the claim expires by itself if a session dies."""
    for db in range(8, 16):
        url = f"{TEST_REDIS_BASE.rstrip('/')}/{db}"
        client = redis.Redis.from_url(url)
        if client.set("jobmesh:test-session", os.getpid(), nx=True, ex=3600):
            return url, client
    raise RuntimeError("all test Redis DBs 8..15 are claimed by other test sessions")


@contextlib.contextmanager
def claimed_redis_db():
    """Yields the URL of an empty DB claimed for the block; empties (and releases) it after."""
    url, client = _claim_redis_db()
    claim = client.get("jobmesh:test-session")
    client.flushdb()
    client.set("jobmesh:test-session", claim, ex=3600)
    try:
        yield url
    finally:
        client.flushdb()


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobmesh")
    with claimed_redis_db() as url:
        yield from _stack_env(root, url)


def _stack_env(root, url):
    env = {
        "JOBMESH_REDIS_URL": url,
        "JOBMESH_S3_ENDPOINT": f"127.0.0.1:{free_port()}",
        "JOBMESH_S3_ACCESS_KEY": "testkey",
        "JOBMESH_S3_SECRET_KEY": "testsecret",
        "JOBMESH_API_KEYS": f"{TENANT_KEY}=tenant-a:tenant,{OTHER_KEY}=tenant-b:tenant,"
                            f"{ADMIN_KEY}=ops:admin",
        "JOBMESH_DIAGNOSTICS": "1",
        "JOBMESH_MODEL_CACHE_DIR": str(Path(tempfile.gettempdir()) / "jobmesh-test-models"),
        # Fast recovery for the crash tests: a task of a dead worker process is restored
        # after 15 s; OCR tasks here take well under a second.
        "JOBMESH_TASK_TIME_LIMIT_S": "30",
        "JOBMESH_VISIBILITY_TIMEOUT_S": "15",
        "JOBMESH_UNACKED_RESTORE_INTERVAL_S": "1",
        "JOBMESH_CONSUMER_TTL_S": "3",
        "JOBMESH_READINESS_POLL_S": "0.5",
        "JOBMESH_JANITOR_INTERVAL_S": "1",  # batch expiry within a second of the deadline
        "JOBMESH_MAX_MESSAGE_BYTES": str(4 * 1024 * 1024),
        "JOBMESH_MAX_PAGES": "5",
        "JOBMESH_LOG_JSON": "1",
    }
    yield root, env


@pytest.fixture(scope="session")
def stack(stack_env):
    root, env = stack_env
    s = LocalStack(root, env)
    s.start_s3(int(env["JOBMESH_S3_ENDPOINT"].rsplit(":", 1)[1]))
    from shared.config import Settings
    from shared.models.importer import prepare

    prepare(Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in env.items()}))
    yield s
    s.stop_all()


@pytest.fixture(scope="session")
def gateway(stack):
    port = free_port()
    stack.start_gateway("ocr", port)
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def worker(stack):
    stack.start_worker("ocr")
    stack.wait_consumers("ocr.cpu")
    return stack


@pytest.fixture
def channel(gateway):
    with grpc.insecure_channel(gateway) as ch:
        yield ch


def auth(key: str = TENANT_KEY) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


@pytest.fixture(scope="session")
def textgen_stack(stack):
    """The SmolLM2 export registered in the test registry, a textgen gateway and worker."""
    from shared.config import Settings
    from shared.models.registry import ModelRegistry
    from shared.storage.artifacts import ArtifactStore
    from workers.textgen.export import register_textgen_model

    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    register_textgen_model(ModelRegistry(ArtifactStore.from_settings(settings),
                                         settings.models_bucket))
    port = free_port()
    stack.start_worker("textgen")
    stack.start_gateway("textgen", port)
    stack.wait_consumers("textgen.cpu", timeout=180)
    return f"127.0.0.1:{port}"


AUDIO_WORKER_ENV = {"JOBMESH_AUDIO_CHUNK_SECONDS": "4",
                    "JOBMESH_AUDIO_INLINE_OUTPUT_BYTES": str(256 * 1024)}


@pytest.fixture(scope="session")
def audio_stack(stack):
    """YAMNet and silero VAD registered in the test registry, an audio gateway and worker."""
    from shared.config import Settings
    from workers.audio.models import prepare

    prepare(Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()}))
    port = free_port()
    # Short chunks, so a SubmitTranscribe of a few seconds fans out over several tasks; a low
    # inline limit for synthesized audio, so a few sentences go by reference.
    stack.start_worker("audio", extra_env=AUDIO_WORKER_ENV)
    stack.start_gateway("audio", port)
    stack.wait_consumers("audio.cpu", timeout=120)
    return f"127.0.0.1:{port}"


@pytest.fixture
def textgen_channel(textgen_stack):
    with grpc.insecure_channel(textgen_stack) as ch:
        yield ch
