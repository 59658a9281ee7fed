"""How alerts name things and figures, so threshold and unexpected-user alerts read alike.

Numbers go through :mod:`monitoring.telemetry.format`, as in the terminal and the browser.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from monitoring.alerting.rules import METRIC_GPU_LOST, METRIC_LOAD_PER_CORE
from monitoring.metrics import ALL_METRICS
from monitoring.telemetry import format as fmt
from monitoring.telemetry.schema import GpuSample


def _percent(value: float | None) -> str:
    """``90 %``, ``85.5 %`` (one decimal only when it says something)."""
    if value is None:
        return fmt.DASH
    value = round(float(value), 1)
    return fmt.percent(value, 0 if value.is_integer() else 1)


_BY_UNIT: dict[str, Callable[[float | None], str]] = {
    "°C": fmt.celsius,
    "%": _percent,
    "W": fmt.watts,
    "MiB": fmt.mib,
    "MHz": fmt.mhz,
    "B/s": fmt.rate,
}


def format_value(metric: str, value: float | None) -> str:
    """``86 °C``, ``91.5 %``, ``3.5 GiB``; unitless figures (load) with two decimals."""
    if value is None:
        return fmt.DASH
    metric_def = ALL_METRICS.get(metric)
    formatter = _BY_UNIT.get(metric_def.unit if metric_def else "")
    return formatter(value) if formatter else f"{value:.2f}"


def metric_label(metric: str) -> str:
    """The registry's label as it reads inside a sentence: ``temperature``, ``CPU``."""
    if metric == METRIC_LOAD_PER_CORE:
        return "load per core"
    if metric == METRIC_GPU_LOST:
        return "GPU lost"
    metric_def = ALL_METRICS.get(metric)
    label = metric_def.label if metric_def else metric
    if len(label) > 1 and label[1].isupper():  # an acronym: CPU, GPU …
        return label
    return label[:1].lower() + label[1:]


def describe_gpu(gpu: GpuSample, host: str) -> str:
    """``GPU 1 (NVIDIA H100 80GB HBM3) on gpu-box``."""
    name = f" ({gpu.name})" if gpu.name else ""
    return f"GPU {gpu.index}{name} on {host}"


def for_duration(seconds: float | timedelta) -> str:
    """`` for 1m 0s``, or nothing for an instant."""
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    return f" for {fmt.duration(seconds)}" if seconds >= 1 else ""
