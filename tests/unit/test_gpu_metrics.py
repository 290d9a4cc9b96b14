"""The NVML collector (shared/gpu_metrics.py) on a fake NVML module, and its absence where NVML
is missing or fails (the real nvidia-ml-py where installed)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from shared import gpu_metrics, metrics

GIB = 1024**3


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """Two GPUs; the second is a MIG slice that refuses utilization readings."""

    NVMLError = FakeNvmlError

    def __init__(self, init_error: Exception | None = None):
        self.init_error = init_error
        self.busy = {0: 37, 1: None}

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h}" if h else b"GPU-0"  # old nvidia-ml-py returned bytes

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=(h + 1) * GIB, total=80 * GIB, free=0)

    def nvmlDeviceGetUtilizationRates(self, h):
        if self.busy[h] is None:
            raise FakeNvmlError("Not Supported")
        return SimpleNamespace(gpu=self.busy[h], memory=0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels["gpu_uuid"]): s.value for fam in registry.collect()
            for s in fam.samples}


def test_collector_reports_every_gpu_and_skips_what_nvml_refuses():
    nvml, registry = FakeNvml(), CollectorRegistry()
    assert gpu_metrics.register(registry, nvml)
    got = samples(registry)
    assert got == {
        ("jobmesh_gpu_memory_used_bytes", "GPU-0"): GIB,
        ("jobmesh_gpu_memory_total_bytes", "GPU-0"): 80 * GIB,
        ("jobmesh_gpu_utilization_ratio", "GPU-0"): 0.37,
        ("jobmesh_gpu_memory_used_bytes", "GPU-1"): 2 * GIB,
        ("jobmesh_gpu_memory_total_bytes", "GPU-1"): 80 * GIB,
    }
    nvml.busy[0] = 90  # sampled at each scrape
    assert samples(registry)[("jobmesh_gpu_utilization_ratio", "GPU-0")] == 0.9


def test_families_are_the_declared_gauges():
    registry = CollectorRegistry()
    gpu_metrics.register(registry, FakeNvml())
    text = generate_latest(registry).decode()
    for name, (doc, labels) in metrics.GPU_GAUGES.items():
        assert f"# TYPE {name} gauge" in text and f"# HELP {name} {doc}" in text
        assert labels == ("gpu_uuid",)


def test_nothing_registered_when_nvml_fails_to_initialise():
    registry = CollectorRegistry()
    assert not gpu_metrics.register(registry, FakeNvml(FakeNvmlError("Driver Not Loaded")))
    assert not gpu_metrics.register(registry, FakeNvml(OSError("libnvidia-ml.so: bad ELF")))
    assert generate_latest(registry) == b""


def test_nothing_registered_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    registry = CollectorRegistry()
    assert not gpu_metrics.register(registry)
    assert generate_latest(registry) == b""


def test_real_nvml_reports_the_gpus_or_nothing():
    """With nvidia-ml-py installed (the `gpu` extra): on a machine with an NVIDIA driver, every
    GPU with sane readings; without one, no GPU series at all."""
    pynvml = pytest.importorskip("pynvml")
    registry = CollectorRegistry()
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        assert not gpu_metrics.register(registry)
        assert generate_latest(registry) == b""
        return
    assert gpu_metrics.register(registry)
    got = samples(registry)
    uuids = {u for _, u in got}
    assert len(uuids) == count and all(u.startswith(("GPU-", "MIG-")) for u in uuids)
    for u in uuids:
        used = got[("jobmesh_gpu_memory_used_bytes", u)]
        assert 0 < used <= got[("jobmesh_gpu_memory_total_bytes", u)]
        assert 0 <= got.get(("jobmesh_gpu_utilization_ratio", u), 0) <= 1
