"""History for the history page's tests: the real H100 capture replayed through the worker's
real store (:class:`SnapshotStore`), on a timeline that ends "now".

Sampling a replay snapshot reads this machine's /proc (~15 ms), so a timeline of 800 ticks
is made of a dozen really sampled snapshots per phase (sampled once), re-timed: each keeps its own
process-list objects, so the session tracker reads the lists as the worker's process tier
would (every other tick), and the figures are the captured ones.

The timeline, in minutes before ``now``::

    -50 ........ -35 ... -30 ....... -20 ........... -5 .... 0
      load: 447, 448     idle  (collector    load: 447, 448   idle
      on GPU 0                 stopped)      + the hostile job
                                             on GPU 1
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from monitoring.storage.writer import SnapshotStore
from monitoring.telemetry.schema import Container, GpuProcess, Snapshot
from monitoring.tests.helpers import multi_gpu_dir, replay_sampler, ticks

HOST = "h100-box"
STEP_S = 3
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_PID = 4242
HOSTILE_CONTAINER = "<b>llm-train</b>"
#: (phase, first minute before now, last minute before now)
PHASES = (("load", 50, 35), ("idle", 35, 30), ("load+hostile", 20, 5), ("idle", 5, 0))


def _base(directory: Path, state: str, count: int = 12) -> list[Snapshot]:
    return ticks(replay_sampler(state, directory=directory, hostname=HOST), count)


def _with_hostile_job(snapshots: list[Snapshot]) -> list[Snapshot]:
    """Copies of the load snapshots with a job on GPU 1 whose name, command and container
    are HTML. A repeated process list (a tick without a process reading) stays repeated."""
    out = copy.deepcopy(snapshots)  # one memo: lists shared between ticks stay shared
    template = out[0].gpus[0].processes[0]
    made: dict[int, list[GpuProcess]] = {}
    for snapshot in out:
        gpu = snapshot.gpus[1]
        if id(gpu.processes) not in made:
            job = dataclasses.replace(
                template,
                pid=HOSTILE_PID,
                gpu_index=gpu.index,
                gpu_uuid=gpu.uuid,
                name=HOSTILE,
                user="mallory",
                command=f"{HOSTILE} --steal-gpu",
                used_memory_mib=20480,
                sm_utilization=97,
                container=Container(runtime="docker", id="ab" * 32, name=HOSTILE_CONTAINER),
            )
            made[id(gpu.processes)] = [*gpu.processes, job]
        gpu.processes = made[id(gpu.processes)]
    return out


@cache
def _bases() -> dict[str, list[Snapshot]]:
    """The really sampled snapshots of each phase (once per test process; never changed)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = multi_gpu_dir(Path(tmp), 2, "load")
        multi_gpu_dir(directory, 2, "idle")
        bases = {"load": _base(directory, "load"), "idle": _base(directory, "idle")}
    bases["load+hostile"] = _with_hostile_job(bases["load"])
    return bases


def h100_timeline(now: datetime) -> list[Snapshot]:
    """The snapshots of the timeline above (two H100s, every ``STEP_S`` seconds)."""
    bases = _bases()
    out = []
    for phase, first, last in PHASES:
        base = bases[phase]
        start = now - timedelta(minutes=first)
        for n in range((first - last) * 60 // STEP_S):
            at = start + timedelta(seconds=n * STEP_S)
            out.append(dataclasses.replace(base[n % len(base)], timestamp=at))
    return out


def store_h100_history(now: datetime) -> list[Snapshot]:
    """Write the timeline through the worker's store; returns what was written."""
    snapshots = h100_timeline(now)
    store = SnapshotStore(HOST, session_grace_s=10, session_refresh_s=10)
    for n in range(0, len(snapshots), 600):
        for snapshot in snapshots[n : n + 600]:
            store.add(snapshot)
        result = store.flush()
        assert result.error is None, result.error
    store.stopping()
    assert store.flush().error is None
    return snapshots
