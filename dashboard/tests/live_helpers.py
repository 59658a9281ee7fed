"""Snapshots and live messages for the dashboard's tests, from the real H100 captures."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path

from monitoring.telemetry.schema import Snapshot
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import replay_sampler
from monitoring.worker.publish import build_message

HOSTILE = "<img src=x onerror=alert(1)>"


def captured(state: str = "load", host: str = "live-test", directory: Path = H100) -> Snapshot:
    """One snapshot of the replayed H100 capture (host figures of this machine)."""
    sampler = replay_sampler(state, directory=directory, hostname=host)
    try:
        sampler.sample()
        return sampler.sample()
    finally:
        sampler.close()


def later(snapshot: Snapshot, seconds: float = 1.0, **gpu0) -> Snapshot:
    """The same snapshot ``seconds`` later, with GPU 0's figures changed as given."""
    moved = copy.deepcopy(snapshot)
    moved.timestamp = snapshot.timestamp + timedelta(seconds=seconds)
    for name, value in gpu0.items():
        setattr(moved.gpus[0], name, value)
    return moved


def message(snapshot: Snapshot, host: str = "live-test", alerts=None) -> dict:
    return build_message(host, snapshot, alerts or [])


def hostile_capture(directory: Path) -> Path:
    """The H100 load capture whose processes are named and run as an HTML injection."""
    data = json.loads((H100 / "nvml_load.json").read_text())
    for proc in data["gpus"][0]["compute_procs"]["value"]:
        proc["resolved"]["name"] = HOSTILE
        proc["resolved"]["cmd"] = [HOSTILE, "--token=s3cret", HOSTILE]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nvml_load.json").write_text(json.dumps(data))
    return directory
