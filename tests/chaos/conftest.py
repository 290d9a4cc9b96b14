"""A stack of the chaos suite's own: its own `redis-server` (append-only, `appendfsync always`)
and rclone S3 on free ports, the OCR models registered, one OCR gateway and one OCR worker.
Nothing here touches the machine's Redis on 6379: the faults restart and kill these processes."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

import shared  # noqa: F401 - generates and exposes the jobmesh.* stubs
from shared.local.stack import LocalStack, _wait, free_port, port_open, redis_alive
from tests.conftest import ADMIN_KEY, TENANT_KEY

VISIBILITY_TIMEOUT_S = 15


def start_redis(stack: LocalStack, port: int) -> subprocess.Popen:
    """Like `LocalStack.start_redis`, with every write fsynced before Redis answers: the suite
    asserts that no accepted job is lost, which the default `everysec` does not promise."""
    data = stack.root / "redis"
    data.mkdir(exist_ok=True)
    proc = stack._spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "yes",
                                  "--appendfsync", "always", "--dir", str(data)])
    _wait(lambda: port_open(port) and redis_alive(stack.env["JOBMESH_REDIS_URL"]), 20,
          "redis-server", proc)
    return proc


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobmesh-chaos")
    redis_port, s3_port = free_port(), free_port()
    env = {
        "JOBMESH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "JOBMESH_S3_ENDPOINT": f"127.0.0.1:{s3_port}",
        "JOBMESH_S3_ACCESS_KEY": "chaoskey",
        "JOBMESH_S3_SECRET_KEY": "chaossecret",
        "JOBMESH_API_KEYS": f"{TENANT_KEY}=tenant-a:tenant,{ADMIN_KEY}=ops:admin",
        "JOBMESH_DIAGNOSTICS": "1",
        "JOBMESH_MODEL_CACHE_DIR": str(Path(tempfile.gettempdir()) / "jobmesh-test-models"),
        "JOBMESH_TASK_TIME_LIMIT_S": "30",
        "JOBMESH_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "JOBMESH_UNACKED_RESTORE_INTERVAL_S": "1",
        "JOBMESH_CONSUMER_TTL_S": "3",
        "JOBMESH_READINESS_POLL_S": "0.5",
        "JOBMESH_JANITOR_INTERVAL_S": "1",
        "JOBMESH_DISPATCH_GRACE_S": "5",
        "JOBMESH_LOST_MESSAGE_GRACE_S": "10",  # below the visibility timeout (15 s)
        "JOBMESH_LOG_JSON": "1",
    }
    stack = LocalStack(root, env)
    stack.redis_port, stack.s3_port = redis_port, s3_port
    try:
        start_redis(stack, redis_port)
        stack.start_s3(s3_port)
        from shared.config import Settings
        from shared.models.importer import prepare

        prepare(Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in env.items()}))
        stack.start_worker("ocr")
        gw_port = free_port()
        stack.start_gateway("ocr", gw_port)
        stack.wait_consumers("ocr.cpu", timeout=120)
        stack.gateway = f"127.0.0.1:{gw_port}"
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture
def chaos_channel(chaos_stack):
    with grpc.insecure_channel(chaos_stack.gateway) as ch:
        yield ch


def pytest_configure(config):
    config.addinivalue_line("markers", "chaos: fault injection against the suite's own stack")


@pytest.fixture(scope="module")
def chaos_channel_module(chaos_stack):
    with grpc.insecure_channel(chaos_stack.gateway) as ch:
        yield ch
