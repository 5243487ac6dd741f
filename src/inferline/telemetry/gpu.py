"""GPU gauges through NVML: present only when a GPU is, never reported as zero."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

GPU_METRICS = (
    "inferline_gpu_memory_used_bytes",
    "inferline_gpu_memory_total_bytes",
    "inferline_gpu_utilization_ratio",
)


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module (nvidia-ml-py), or None without a driver or GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
    except pynvml.NVMLError:
        return None
    return pynvml


def present() -> bool:
    """Whether NVML sees a GPU (and the gauges will be served)."""
    return _nvml() is not None


class GpuCollector(Collector):
    """Reads NVML at scrape time, so the figures are current and cost nothing between
    scrapes. Registered only when NVML finds a GPU: no GPU means no series at all."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml

    @classmethod
    def register_if_present(cls, registry: CollectorRegistry) -> bool:
        nvml = _nvml()
        if nvml is None:
            return False
        registry.register(cls(nvml))
        return True

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self._nvml
        used_name, total_name, utilization_name = GPU_METRICS
        memory = GaugeMetricFamily(used_name, "GPU memory in use", labels=["device"])
        total = GaugeMetricFamily(total_name, "GPU memory in all", labels=["device"])
        utilization = GaugeMetricFamily(
            utilization_name,
            "Share of the last sample period in which a kernel ran",
            labels=["device"],
        )
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                info = nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                device = str(index)
                memory.add_metric([device], float(info.used))
                total.add_metric([device], float(info.total))
                utilization.add_metric([device], rates.gpu / 100.0)
        except nvml.NVMLError as exc:  # a lost GPU must not break the scrape
            log.warning("NVML read failed: %s", exc)
            return
        yield from (memory, total, utilization)
