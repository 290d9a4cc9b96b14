"""Facts about the machine a benchmark ran on, so a table can be read (and compared) later: cores,
CPU model, memory, load, date and the versions of what was measured."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

PACKAGES = ("onnxruntime", "rapidocr", "grpcio", "celery", "kombu", "redis", "numpy",
            "opencv-python", "opencv-python-headless", "pillow")


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (first CPU), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_jiffies() -> tuple[float, float] | None:
    """(busy, steal) seconds of all CPUs together since boot, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / hz, v[7] / hz


def _own_cpu() -> float:
    """CPU seconds of this process and of its children that have been waited for (LocalStack
    waits for the mesh's processes when it stops them, so they count once stopped)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """How busy the machine was during a run, and how much of that was someone else's work:
    foreign = all CPUs' busy time - this process tree's CPU time. Read `stop()` only after the
    mesh's processes are stopped (and so waited for)."""

    def __init__(self):
        self._start = (time.monotonic(), _cpu_jiffies(), _own_cpu())

    def stop(self) -> dict:
        t0, j0, own0 = self._start
        wall = time.monotonic() - t0
        j1, own1 = _cpu_jiffies(), _own_cpu()
        out = {"wall_s": round(wall, 1), "own_cores": round((own1 - own0) / wall, 2)}
        if j0 and j1:
            busy = (j1[0] - j0[0]) / wall
            out["machine_busy_cores"] = round(busy, 2)
            out["foreign_cores"] = round(max(0.0, busy - out["own_cores"]), 2)
            out["steal_cores"] = round((j1[1] - j0[1]) / wall, 2)
        return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def redis_server_version(url: str) -> str:
    try:
        import redis

        return str(redis.Redis.from_url(url, socket_timeout=2).info("server")["redis_version"])
    except Exception:  # a fact for the report, never a reason to fail the run
        return "unknown"


def git_revision(repo: Path) -> str:
    """Short HEAD, with `+dirty` when the tree has changes (benchmarks run on work in progress)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True,
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=5).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def describe(redis_url: str | None = None, repo: Path | None = None) -> dict:
    """Everything above as one JSON-safe dict."""
    facts = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable_cores(),
        "memory_gib": memory_gib(),
        "load_average_start": load_average(),
        "versions": versions(),
    }
    if redis_url:
        facts["versions"]["redis-server"] = redis_server_version(redis_url)
    if repo is not None:
        facts["git"] = git_revision(repo)
    return facts


def one_line(facts: dict) -> str:
    """`2 cores, Intel(R) Xeon(R) Processor, 23.5 GiB, Linux 6.x, 2026-...` for table headers."""
    v = facts.get("versions", {})
    parts = [f"{facts['cores_usable']} cores", facts["cpu_model"]]
    if facts.get("memory_gib"):
        parts.append(f"{facts['memory_gib']} GiB RAM")
    parts += [facts["os"], f"Python {v.get('python', '?')}",
              f"onnxruntime {v.get('onnxruntime', '?')}", f"rapidocr {v.get('rapidocr', '?')}",
              facts["date"]]
    return ", ".join(parts)


if __name__ == "__main__":
    import json

    print(json.dumps(describe(repo=Path(__file__).resolve().parents[1]), indent=2))
