"""Snapshots for the storage tests, from the real H100 captures played as a live source.

Ticks follow the worker's tiers: the process list is read every ``process_every`` ticks
and repeated in between (the same objects), as the worker's snapshots do.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.nvml_capture import load_capture, multi_gpu
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.schema import Snapshot
from monitoring.tests.conftest import H100

HOST = "storage-test"
T0 = datetime(2026, 1, 5, 3, 0, 0, tzinfo=UTC)


def replay_sampler(state: str = "load", *, directory: Path = H100, hostname: str = HOST) -> Sampler:
    return build_sampler("replay", replay_dir=directory, replay_state=state, hostname=hostname)


def multi_gpu_dir(tmp_path: Path, count: int, state: str = "load") -> Path:
    """A capture directory of ``count`` H100s (clones of the captured one, own UUIDs)."""
    tmp_path.joinpath(f"nvml_{state}.json").write_text(
        json.dumps(multi_gpu(load_capture(H100, state), count))
    )
    return tmp_path


def ticks(
    sampler: Sampler,
    count: int,
    *,
    start: datetime = T0,
    step_s: float = 1.0,
    process_every: int = 2,
) -> list[Snapshot]:
    return [
        sampler.sample(
            processes=i % process_every == 0,
            slow=i % 10 == 0,
            now=start + timedelta(seconds=i * step_s),
        )
        for i in range(count)
    ]
