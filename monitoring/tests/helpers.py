"""What many tests share: snapshots from the real captures, history rows on the test
database, a real channel layer's group, the collect worker as a real process.

Ticks follow the worker's tiers: the process list is read every ``process_every`` ticks
and repeated in between (the same objects), as the worker's snapshots do.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from asgiref.sync import async_to_sync
from django.db import connection

from monitoring.metrics import gpu_values, host_values
from monitoring.models import Gpu, GpuSample, Host, HostSample
from monitoring.storage.retention import RetentionPolicy
from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.nvml_capture import CapturedNvml, load_capture, multi_gpu
from monitoring.telemetry.nvml_source import NvmlSource
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.schema import GpuReading, HostInfo, Snapshot
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


def another_board_dir(directory: Path, state: str = "load", board: int = 1) -> Path:
    """A capture directory of one H100 of its own UUID and serial (clone ``board`` of the
    captured one): another machine's board, for another host in the same database."""
    capture = multi_gpu(load_capture(H100, state), board + 1)
    capture["gpus"] = capture["gpus"][board:]
    capture["count"]["value"] = 1
    directory.mkdir(parents=True, exist_ok=True)
    directory.joinpath(f"nvml_{state}.json").write_text(json.dumps(capture))
    return directory


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


# --- snapshots read through the real NVML source -----------------------------------------

BOX = HostInfo(
    hostname="gpu-box",
    os="Linux",
    kernel="6.8",
    cpu_model=None,
    cores=16,
    physical_cores=8,
    boot_time=None,
)


def snapshot(reading: GpuReading, seconds: int = 0) -> Snapshot:
    return Snapshot(
        timestamp=T0 + timedelta(seconds=seconds),
        host=BOX,
        driver=reading.driver,
        gpus=reading.gpus,
    )


def read(capture: dict, seconds: int = 0) -> Snapshot:
    source = NvmlSource(CapturedNvml(capture))
    try:
        return snapshot(source.read(), seconds)
    finally:
        source.close()


# --- history rows on the test database ---------------------------------------------------

POLICY = RetentionPolicy(
    raw=timedelta(hours=48),
    minute=timedelta(days=90),
    hour=timedelta(days=730),
    lookback=timedelta(minutes=65),
    chunk_rows=1000,
)
Series = Callable[[int], float | None]


@cache
def captured() -> tuple[dict, dict, str]:
    """Stored GPU and host values of one real H100 snapshot, and the GPU's UUID."""
    sampler = build_sampler("replay", replay_dir=H100, replay_state="load", hostname="rig")
    snap = sampler.sample(processes=False, slow=True)
    gpu = snap.gpus[0]
    return gpu_values(gpu), host_values(snap.system), gpu.uuid


def make_host(name: str = "rig", gpus: int = 2) -> tuple[Host, list[Gpu]]:
    host = Host.objects.create(name=name)
    uuid = captured()[2]
    return host, [
        Gpu.objects.create(host=host, uuid=f"{uuid}-{name}-{i}", index=i, name="NVIDIA H100")
        for i in range(gpus)
    ]


def gpu_rows(gpu: Gpu, start: datetime, count: int, step_s: float = 1.0, **series: Series):
    """``count`` raw samples from ``start``: the captured values, ``series`` laid over them."""
    rows = []
    for i in range(count):
        values = dict(captured()[0])
        values.update({key: fn(i) for key, fn in series.items()})
        rows.append(GpuSample(gpu=gpu, time=start + timedelta(seconds=i * step_s), **values))
    return GpuSample.objects.bulk_create(rows, batch_size=500)


def host_rows(host: Host, start: datetime, count: int, step_s: float = 1.0, **series: Series):
    rows = []
    for i in range(count):
        values = dict(captured()[1])
        values.update({key: fn(i) for key, fn in series.items()})
        rows.append(HostSample(host=host, time=start + timedelta(seconds=i * step_s), **values))
    return HostSample.objects.bulk_create(rows, batch_size=500)


def expected(values: list[float | None]) -> tuple[float | None, float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None, None
    return min(present), sum(present) / len(present), max(present)


def rename(old: str, new: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{old}" RENAME TO "{new}"')


# --- a real channel layer ------------------------------------------------------------------

GROUP = "telemetry-test"


def receive(layer, channel: str, timeout: float = 3.0) -> dict:
    async def get() -> dict:
        return await asyncio.wait_for(layer.receive(channel), timeout)

    return async_to_sync(get)()


def subscribe(layer) -> str:
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(GROUP, channel)
    return channel


# --- the collect worker as a real process ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def collect_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HOOFHEARTED_", "DB", "REDIS", "POLL_"))
    }
    env.update(extra)
    return env


def start_collect(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "collect", "--replay", str(H100), "--state", "load", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_sampling(worker: subprocess.Popen) -> str:
    """Read the worker's log until it says it runs (the start-up line); returns what it read."""
    seen = []
    for line in worker.stderr:
        seen.append(line)
        if "covers" in line and "min of database outage" in line:
            return "".join(seen)
    raise AssertionError("the worker exited before sampling:\n" + "".join(seen))


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.2)


def sqlite_count(path: Path, sql: str) -> int:
    """The first column of ``sql``'s first row, read from a worker's SQLite file (0 while
    it has no database or tables yet)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # no database or tables yet
        return 0


def collect(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``manage.py collect ARGS`` as a user runs it, in a clean environment (plus ``env``)."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HOOFHEARTED_", "DB", "REDIS"))
    }
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "manage.py", "collect", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


#: The stand-in nvidia-smi (a real process that prints captured output) and timings that
#: keep the live nvidia-smi source's tests fast.
FAKE = str(Path(__file__).resolve().parent / "fake_nvidia_smi.py")
FAST = {"interval_ms": 40, "timeout_s": 3.0, "backoff_initial_s": 0.05, "grace_s": 0.5}
