"""Open the best GPU source available: NVML, then nvidia-smi, then nvtop, else host only.

``HOOFHEARTED_GPU_SOURCE`` (or ``--source``) forces one. Each source that cannot run here
says why in one line, and those lines reach the user, so "no GPU found" is never a mystery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from monitoring.telemetry.errors import DriverError, DriverMismatch, SourceUnavailable
from monitoring.telemetry.schema import (
    SOURCE_NONE,
    STATUS_ERROR,
    STATUS_NO_GPU,
    DriverInfo,
)
from monitoring.telemetry.sources import GpuSource

log = logging.getLogger(__name__)

AUTO_ORDER = ("nvml", "nvidia-smi", "nvtop")
CHOICES = ("auto", *AUTO_ORDER, "replay", "none")
NO_GPU_MESSAGE = "No NVIDIA GPU found: showing the host only."


@dataclass
class SourceOptions:
    nvidia_smi: str = "nvidia-smi"
    nvtop: str = "nvtop"
    interval_ms: int = 1000
    replay_dir: Path | None = None
    replay_state: str | None = None
    replay_switch_s: float = 30.0
    replay_charge_cost: bool = False  # each NVML call lasts its recorded cost (benchmarks)
    # NVML: counters and modes once a minute; PCIe throughput every 5 min (0: only on demand)
    counter_interval_ms: int = 60_000
    pcie_interval_ms: int = 300_000


@dataclass
class Opened:
    """The opened source, or what to report instead, and why better sources were skipped."""

    source: GpuSource | None
    no_source: DriverInfo
    notes: list[str] = field(default_factory=list)


def _open_one(name: str, options: SourceOptions) -> GpuSource:
    if name == "nvml":
        from monitoring.telemetry.nvml_source import NvmlSource

        return NvmlSource(
            counter_interval_s=options.counter_interval_ms / 1000,
            pcie_interval_s=options.pcie_interval_ms / 1000,
        )
    if name == "nvidia-smi":
        from monitoring.telemetry.smi_source import NvidiaSmiSource

        return NvidiaSmiSource(binary=options.nvidia_smi, interval_ms=options.interval_ms)
    if name == "nvtop":
        from monitoring.telemetry.nvtop import NvtopSource

        return NvtopSource(binary=options.nvtop)
    if name == "replay":
        from monitoring.telemetry.replay import DEFAULT_REPLAY_DIR, ReplaySource

        return ReplaySource(
            options.replay_dir or DEFAULT_REPLAY_DIR,
            options.replay_state,
            switch_every_s=options.replay_switch_s,
            charge_cost=options.replay_charge_cost,
            counter_interval_s=options.counter_interval_ms / 1000,
            pcie_interval_s=options.pcie_interval_ms / 1000,
        )
    raise ValueError(f"unknown GPU source {name!r}; choose one of {', '.join(CHOICES)}")


def open_gpu_source(choice: str = "auto", options: SourceOptions | None = None) -> Opened:
    """Try the sources in order (or just the chosen one) and return the first that opens."""
    options = options or SourceOptions()
    if choice not in CHOICES:
        raise ValueError(f"unknown GPU source {choice!r}; choose one of {', '.join(CHOICES)}")
    if choice == "none":
        return Opened(
            None, DriverInfo(SOURCE_NONE, STATUS_NO_GPU, message="GPU monitoring is off.")
        )
    order = AUTO_ORDER if choice == "auto" else (choice,)
    notes: list[str] = []
    broken: tuple[str, DriverError] | None = None  # a driver that answered with an error
    for name in order:
        try:
            source = _open_one(name, options)
        except DriverMismatch as exc:
            # Every other source goes through the same broken library: stop here, say so.
            log.error("%s", exc)
            return Opened(None, DriverInfo(name, STATUS_ERROR, message=str(exc)), notes)
        except SourceUnavailable as exc:
            log.debug("GPU source %s unavailable: %s", name, exc)
            notes.append(f"{name}: {exc}")
            if isinstance(exc, DriverError) and broken is None:
                broken = (name, exc)
            continue
        return Opened(source, DriverInfo(name, "ok"), notes if choice == "auto" else [])
    if choice == "auto" and broken is not None:
        # nvidia-smi's own words about a broken driver say more than "no GPU found".
        return Opened(None, DriverInfo(broken[0], STATUS_ERROR, message=str(broken[1])), notes)
    if choice == "auto":
        return Opened(None, DriverInfo(SOURCE_NONE, STATUS_NO_GPU, message=NO_GPU_MESSAGE), notes)
    return Opened(
        None,
        DriverInfo(
            choice, STATUS_ERROR, message=f"The {choice} source is unavailable: {notes[-1]}"
        ),
        notes,
    )
