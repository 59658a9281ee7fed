"""Build a ready Sampler from configuration: the one place that wires the parts together."""

from __future__ import annotations

from pathlib import Path

from monitoring.telemetry.attribution import ProcessAttributor
from monitoring.telemetry.host import HostSampler, read_host_info
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.select import SourceOptions, open_gpu_source


def build_sampler(
    choice: str = "auto",
    *,
    nvidia_smi: str = "nvidia-smi",
    nvtop: str = "nvtop",
    interval_ms: int = 1000,
    replay_dir: str | Path | None = None,
    replay_state: str | None = None,
    replay_switch_s: float = 30.0,
    hostname: str | None = None,
) -> Sampler:
    options = SourceOptions(
        nvidia_smi=nvidia_smi,
        nvtop=nvtop,
        interval_ms=interval_ms,
        replay_dir=Path(replay_dir) if replay_dir else None,
        replay_state=replay_state,
        replay_switch_s=replay_switch_s,
    )
    opened = open_gpu_source(choice, options)
    host_info = read_host_info()
    if hostname:
        host_info.hostname = hostname
    return Sampler(
        opened.source,
        host_info=host_info,
        host_sampler=HostSampler(),
        attributor=ProcessAttributor(),
        no_source=opened.no_source,
        notes=opened.notes,
    )
