"""Embedded local mode (`make run`, `make up`, `make down`).

    python -m shared.local run    # foreground; Ctrl-C stops everything
    python -m shared.local up     # detached; returns once the OCR gateway is SERVING
    python -m shared.local down   # stops what `up` started
    python -m shared.local status

Uses the Redis at JOBMESH_REDIS_URL (default 127.0.0.1:6379, DB 5) or starts a local
`redis-server` when none answers; starts `rclone serve s3` on `.jobmesh/s3`, imports the models,
starts the OCR (50051), audio (50052), text generation (50053), curation (50054) and model
compression (50055) gateways with one worker each, and writes `.jobmesh/local.env`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.local.stack import REPO_ROOT, LocalStack, port_open, redis_alive

STATE = REPO_ROOT / ".jobmesh"
PID_FILE = STATE / "local.pid"
# domain -> (gateway port, gateway metrics port, worker metrics port)
DOMAINS = {"ocr": (50051, 9101, 9201), "audio": (50052, 9102, 9202),
           "textgen": (50053, 9103, 9203), "curation": (50054, 9104, 9204),
           "compression": (50055, 9105, 9205)}
# Model preparation per domain: a module run with `python -m` (idempotent, cached).
PREPARE = {"ocr": ["shared.models.importer"], "audio": ["workers.audio.models"],
           "textgen": ["workers.textgen.export", "--register"],
           "curation": ["workers.curation.embeddings", "--register"]}
S3_PORT = int(os.environ.get("JOBMESH_LOCAL_S3_PORT", "9000"))
FALLBACK_REDIS_PORT = 6390


def _dev_key() -> str:
    """A development key kept across runs, so clients' local.env stays valid."""
    path = STATE / "dev_api_key"
    if not path.exists():
        path.write_text(f"dev-{secrets.token_urlsafe(18)}")
        path.chmod(0o600)
    return path.read_text().strip()


def _env(stack_redis_url: str, key: str) -> dict[str, str]:
    keys_file = STATE / "api_keys.yaml"
    keys_file.write_text(f"{key}: {{tenant: dev, role: admin}}\n")
    keys_file.chmod(0o600)
    return {
        "JOBMESH_REDIS_URL": stack_redis_url,
        "JOBMESH_S3_ENDPOINT": f"127.0.0.1:{S3_PORT}",
        "JOBMESH_S3_ACCESS_KEY": os.environ.get("JOBMESH_S3_ACCESS_KEY", "jobmesh"),
        "JOBMESH_S3_SECRET_KEY": os.environ.get("JOBMESH_S3_SECRET_KEY", "jobmesh-secret"),
        "JOBMESH_API_KEYS_FILE": str(keys_file),
        "JOBMESH_LOG_JSON": os.environ.get("JOBMESH_LOG_JSON", "1"),
        # kombu keeps one unacked index per Redis DB and any worker restores any queue's
        # overdue messages with its own timeout, so every process gets one that outlasts the
        # longest task limit (compression's 1800 s): otherwise an OCR worker's 600 s would
        # start a long compression task a second time.
        "JOBMESH_VISIBILITY_TIMEOUT_S": os.environ.get("JOBMESH_VISIBILITY_TIMEOUT_S", "3600"),
    }


def _write_local_env(key: str) -> Path:
    lines = [f"JOBMESH_ENDPOINT=127.0.0.1:{DOMAINS['ocr'][0]}"]
    lines += [f"JOBMESH_ENDPOINT_{d.upper()}=127.0.0.1:{p[0]}" for d, p in DOMAINS.items()]
    lines += [f"JOBMESH_API_KEY={key}"]
    path = STATE / "local.env"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def run() -> int:
    STATE.mkdir(exist_ok=True)
    for port in [S3_PORT, *(p[0] for p in DOMAINS.values())]:
        if port_open(port):
            print(f"port {port} is busy: is jobmesh already up? (`make down`)", file=sys.stderr)
            return 1
    key = _dev_key()
    redis_url = os.environ.get("JOBMESH_REDIS_URL", "redis://127.0.0.1:6379/5")
    stack = LocalStack(STATE, {})
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not redis_alive(redis_url):
            print(f"no Redis at {redis_url}; starting redis-server on {FALLBACK_REDIS_PORT}")
            stack.start_redis(FALLBACK_REDIS_PORT)
            redis_url = f"redis://127.0.0.1:{FALLBACK_REDIS_PORT}/0"
        stack.env = _env(redis_url, key)
        os.environ.update(stack.env)
        stack.start_s3(S3_PORT)
        for domain, module in PREPARE.items():
            print(f"preparing {domain} models (cached after the first run) ...", flush=True)
            subprocess.run([sys.executable, "-m", *module], cwd=REPO_ROOT,
                           env={**os.environ}, check=True, stdout=subprocess.DEVNULL)
        for domain, (port, gw_metrics, worker_metrics) in DOMAINS.items():
            stack.start_worker(domain, metrics_port=worker_metrics)
            stack.start_gateway(domain, port, metrics_port=gw_metrics)
        for domain in DOMAINS:
            stack.wait_consumers(f"{domain}.cpu", timeout=180)
        env_file = _write_local_env(key)
        print(f"""
jobmesh is up (logs in {STATE / 'logs'})
  OCR gateway      127.0.0.1:{DOMAINS['ocr'][0]}   (OcrService + JobService, ModelService,
                                      health, reflection)
  audio gateway    127.0.0.1:{DOMAINS['audio'][0]}   (AudioService + the same)
  textgen gateway  127.0.0.1:{DOMAINS['textgen'][0]}   (TextGenerationService + the same)
  curation         127.0.0.1:{DOMAINS['curation'][0]}   (CurationService + the same)
  compression      127.0.0.1:{DOMAINS['compression'][0]}   (CompressionService + the same)
  metrics          gateways :9101-:9105, workers :9201-:9205 (/metrics)
  S3 (rclone)      http://127.0.0.1:{S3_PORT}   data in {STATE / 's3'}
  Redis            {redis_url}
  API key          {key}
  client env       {env_file}

try:  jobmesh ocr recognize some.png
      jobmesh textgen generate "Write a haiku about queues" --stream
      jobmesh audio tag recording.wav
      jobmesh compression submit --model ppocr-rec --recipe int8_dynamic --wait
      grpcurl -H 'authorization: Bearer {key}' -plaintext 127.0.0.1:{DOMAINS['ocr'][0]} list
Ctrl-C stops everything.""", flush=True)
        (STATE / "ready").write_text(str(os.getpid()))
        while not stop["now"]:
            time.sleep(0.5)
            dead = [n for n, p in stack.procs.items() if p.poll() is not None]
            if dead:
                print(f"process exited: {', '.join(dead)}; see {STATE / 'logs'}",
                      file=sys.stderr)
                return 1
        return 0
    finally:
        print("stopping ...", flush=True)
        stack.stop_all()
        (STATE / "ready").unlink(missing_ok=True)


def up(timeout: float) -> int:
    STATE.mkdir(exist_ok=True)
    if PID_FILE.exists() and _alive(int(PID_FILE.read_text())):
        print("jobmesh is already up; `make down` stops it")
        return 0
    (STATE / "ready").unlink(missing_ok=True)
    log = open(STATE / "local.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "shared.local", "run"], cwd=REPO_ROOT,
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    PID_FILE.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    from shared.server.healthcheck import check

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"jobmesh failed to start; see {STATE / 'local.log'}", file=sys.stderr)
            return 1
        if (STATE / "ready").exists() and all(
                check(f"127.0.0.1:{p[0]}") == "SERVING" for p in DOMAINS.values()):
            print((STATE / "local.log").read_text().rsplit("jobmesh is up", 1)[-1]
                  .split("Ctrl-C")[0].join(["jobmesh is up", "`make down` stops it."]))
            return 0
        time.sleep(0.5)
    print("jobmesh did not become SERVING in time; `make down` cleans up", file=sys.stderr)
    return 1


def down() -> int:
    if not PID_FILE.exists():
        print("jobmesh is not up")
        return 0
    pid = int(PID_FILE.read_text())
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(pid):
                break
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    print("jobmesh stopped")
    return 0


def status() -> int:
    from shared.server.healthcheck import check

    for domain, (port, _, _) in DOMAINS.items():
        print(f"{domain:12} 127.0.0.1:{port}  {check(f'127.0.0.1:{port}')}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still "exists"; treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="start everything in the foreground")
    p_up = sub.add_parser("up", help="start detached; wait for SERVING")
    p_up.add_argument("--timeout", type=float, default=300)
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="health of each gateway")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        return run()
    if args.cmd == "up":
        return up(args.timeout)
    if args.cmd == "down":
        return down()
    return status()


if __name__ == "__main__":
    raise SystemExit(main())
