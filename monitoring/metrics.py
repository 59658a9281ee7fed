"""The metrics Hoof Hearted keeps history of: one registry for storage, roll-ups, the
history API, thresholds and the dashboard, so a metric is added in one place.

Each metric names its column in the sample tables and how to read it from a schema object.
Where two figures could be confused the name carries its unit (``memory_used_mib`` beside
``ram_percent``); the names they had before (issue 9) are accepted wherever a name comes in,
through ``canonical`` and its one table ``RENAMED``. No Django here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from monitoring.telemetry.schema import GpuSample, SystemSample


@dataclass(frozen=True, slots=True)
class Metric:
    key: str  # column name in the sample and roll-up tables, and the API's ``metric=``
    label: str
    unit: str
    scope: str  # "gpu" | "host"
    read: Callable[[Any], float | None]
    column: str = "float"  # raw sample column type: "small" (int2), "int" or "float"
    stored: bool = True  # False: derived at evaluation time only (thresholds)


def _load(index: int) -> Callable[[SystemSample], float | None]:
    return lambda s: s.load_average[index] if s.load_average else None


GPU_METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("utilization", "GPU utilization", "%", "gpu", lambda g: g.utilization, "small"),
        Metric(
            "memory_utilization",
            "Memory controller",
            "%",
            "gpu",
            lambda g: g.memory_utilization,
            "small",
        ),
        Metric("memory_used_mib", "Memory used", "MiB", "gpu", lambda g: g.memory_used, "int"),
        Metric("temperature", "Temperature", "°C", "gpu", lambda g: g.temperature, "small"),
        Metric("power_w", "Power", "W", "gpu", lambda g: g.power_usage),
        Metric("fan_speed", "Fan", "%", "gpu", lambda g: g.fan_speed),
        Metric("sm_clock", "SM clock", "MHz", "gpu", lambda g: g.clocks.sm, "int"),
        Metric("memory_clock", "Memory clock", "MHz", "gpu", lambda g: g.clocks.memory, "int"),
        Metric(
            "encoder_utilization", "Encoder", "%", "gpu", lambda g: g.encoder_utilization, "small"
        ),
        Metric(
            "decoder_utilization", "Decoder", "%", "gpu", lambda g: g.decoder_utilization, "small"
        ),
        Metric("pcie_tx", "PCIe TX", "B/s", "gpu", lambda g: g.pcie.tx_bytes_per_s),
        Metric("pcie_rx", "PCIe RX", "B/s", "gpu", lambda g: g.pcie.rx_bytes_per_s),
        Metric(
            "memory_percent", "Memory used", "%", "gpu", lambda g: g.memory_percent, stored=False
        ),
    )
}

HOST_METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("cpu_percent", "CPU", "%", "host", lambda s: s.cpu_usage),
        Metric("ram_percent", "Memory", "%", "host", lambda s: s.memory_usage),
        Metric("swap_percent", "Swap", "%", "host", lambda s: s.swap_usage),
        Metric("load_1", "Load (1 min)", "", "host", _load(0)),
        Metric("load_5", "Load (5 min)", "", "host", _load(1)),
        Metric("load_15", "Load (15 min)", "", "host", _load(2)),
        Metric("disk_read", "Disk read", "B/s", "host", lambda s: s.disk_read_bytes_per_s),
        Metric("disk_write", "Disk write", "B/s", "host", lambda s: s.disk_write_bytes_per_s),
        Metric("net_recv", "Network in", "B/s", "host", lambda s: s.net_recv_bytes_per_s),
        Metric("net_sent", "Network out", "B/s", "host", lambda s: s.net_sent_bytes_per_s),
    )
}

STORED_GPU_METRICS = tuple(k for k, m in GPU_METRICS.items() if m.stored)
STORED_HOST_METRICS = tuple(k for k, m in HOST_METRICS.items() if m.stored)
ALL_METRICS: dict[str, Metric] = {**GPU_METRICS, **HOST_METRICS}

#: Old name -> current name, for the metrics renamed to carry their unit (issue 9). A user's
#: bookmarked ``/api/history?metric=memory_used``, a CSV link, a script creating thresholds
#: keep working. Migration 0006 holds a frozen copy (a test checks they agree).
RENAMED: dict[str, str] = {
    "memory_used": "memory_used_mib",  # GPU framebuffer memory, MiB (not the host's %)
    "power_usage": "power_w",
    "cpu_usage": "cpu_percent",
    "memory_usage": "ram_percent",  # host memory, % (not the GPU's MiB)
    "swap_usage": "swap_percent",
}


def canonical(name: str) -> str:
    """The current name of a metric given by its current or its old name; any other text
    comes back unchanged for the caller to refuse with its own message."""
    return RENAMED.get(name, name)


def gpu_values(gpu: GpuSample) -> dict[str, float | None]:
    """The stored GPU metrics of one sample, by column name."""
    return {key: GPU_METRICS[key].read(gpu) for key in STORED_GPU_METRICS}


def host_values(system: SystemSample) -> dict[str, float | None]:
    return {key: HOST_METRICS[key].read(system) for key in STORED_HOST_METRICS}
