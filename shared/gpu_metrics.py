"""GPU memory and utilization gauges, read from NVML at each scrape of a worker's `/metrics`.

The metric names and labels are declared in `shared/metrics.py` (`GPU_GAUGES`); this module is
the Prometheus collector that produces them. It is registered only when NVML initialises (the
`nvidia-ml-py` package, `pip install 'jobmesh[gpu]'`, and an NVIDIA driver with at least one
GPU), so a CPU machine exposes no GPU series at all rather than zeros. Sampling on scrape rather
than from a thread: the values are as fresh as the scrape, and nothing runs between scrapes.

Series are labelled by the GPU's UUID, as Triton's `nv_gpu_*` metrics are: it names one physical
device across hosts and restarts, so several workers sharing a GPU report the same series
(dashboards take `max by (gpu_uuid)`), and no Prometheus target label is needed to tell GPUs of
different hosts apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from shared import metrics

log = logging.getLogger(__name__)


class GpuCollector(Collector):
    """Yields the `GPU_GAUGES` families for every GPU NVML sees. `nvml` is the `pynvml` module
    (initialised) or an object with the same functions. A reading NVML refuses (utilization on
    a MIG slice, a GPU fallen off the bus) leaves that one sample out; the scrape goes on."""

    def __init__(self, nvml: ModuleType | object, count: int):
        self.nvml = nvml
        self.count = count

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        nvml = self.nvml
        for index in range(self.count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            except nvml.NVMLError as exc:
                log.debug("GPU not readable", extra={"gpu": index, "error": str(exc)})
                continue
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                families["jobmesh_gpu_memory_used_bytes"].add_metric([uuid], memory.used)
                families["jobmesh_gpu_memory_total_bytes"].add_metric([uuid], memory.total)
            except nvml.NVMLError as exc:
                log.debug("GPU memory not readable", extra={"gpu": uuid, "error": str(exc)})
            try:
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                families["jobmesh_gpu_utilization_ratio"].add_metric([uuid], rates.gpu / 100)
            except nvml.NVMLError as exc:
                log.debug("GPU utilization not readable", extra={"gpu": uuid, "error": str(exc)})
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {name: GaugeMetricFamily(name, doc, labels=list(labels))
                for name, (doc, labels) in metrics.GPU_GAUGES.items()}


def register(registry: CollectorRegistry, nvml: ModuleType | object | None = None) -> bool:
    """Adds a `GpuCollector` to `registry` when NVML initialises and sees a GPU; returns whether
    it did. Without the package, the driver or a GPU, nothing is registered and nothing is
    raised: GPU metrics are a bonus, never a reason for a worker not to start. `nvml` replaces
    the `pynvml` import (tests)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            log.debug("nvidia-ml-py not installed; no GPU metrics")
            return False
    try:
        nvml.nvmlInit()
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ... or a broken lib
        log.info("NVML unavailable; no GPU metrics", extra={"error": str(exc)})
        return False
    if count <= 0:
        return False
    registry.register(GpuCollector(nvml, count))
    log.info("GPU metrics on", extra={"gpus": count})
    return True


def _text(value: bytes | str) -> str:
    """nvidia-ml-py before 11.5 returned bytes for strings."""
    return value.decode() if isinstance(value, bytes) else value
