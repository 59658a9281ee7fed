"""The host sampler: real figures from this machine, rates from two readings, tiers cached."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from monitoring.telemetry import host
from monitoring.telemetry.host import (
    COUNTER_RESET,
    NEEDS_TWO_READINGS,
    NO_SENSOR_API,
    HostSampler,
    parse_meminfo,
    read_host_info,
)

MIB = 1024 * 1024
# psutil's own result shapes (its namedtuples are private and move between versions).
sdiskpart = namedtuple("sdiskpart", "device mountpoint fstype opts")
shwtemp = namedtuple("shwtemp", "label current high critical")
sfan = namedtuple("sfan", "label current")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_proc(root: Path, *, read_sectors: int, net_recv: int) -> None:
    """A /proc with this machine's real meminfo and chosen disk/network counters."""
    shutil.copy("/proc/meminfo", root / "meminfo")
    # /proc/diskstats as the kernel writes it: a whole disk, one of its partitions, a loop.
    (root / "diskstats").write_text(
        f"   8       0 sda {read_sectors} 10 {read_sectors} 25 40 5 80 36 0 60 61 0 0 0 0\n"
        f"   8       1 sda1 {read_sectors} 10 {read_sectors} 25 40 5 80 36 0 60 61 0 0 0 0\n"
        "   7       0 loop0 99 0 99999 0 0 0 0 0 0 0 0 0 0 0 0\n"
    )
    (root / "net").mkdir(exist_ok=True)
    (root / "net" / "dev").write_text(
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets"
        " errs drop fifo colls carrier compressed\n"
        "    lo: 777777      29    0    0    0     0          0         0   777777      29"
        "    0    0    0     0       0          0\n"
        f"  eth0: {net_recv}    1485    0    0    0     0          0         0   1000     761"
        "    0    0    0     0       0          0\n"
    )


@pytest.fixture
def sys_block(tmp_path: Path) -> str:
    # sda is a real disk (has a device link); loop0 is not and must not be counted.
    (tmp_path / "block" / "sda" / "device").mkdir(parents=True)
    (tmp_path / "block" / "loop0").mkdir(parents=True)
    return str(tmp_path / "block")


def test_it_reads_what_machine_this_is() -> None:
    info = read_host_info()
    assert info.hostname == socket.gethostname()
    assert info.kernel == platform.release()
    assert info.cores == os.cpu_count()
    assert info.physical_cores is None or 1 <= info.physical_cores <= info.cores
    assert info.boot_time is not None and info.boot_time.tzinfo is not None
    assert info.memory_total == psutil.virtual_memory().total // MIB
    if sys.platform.startswith("linux"):
        assert info.os == platform.freedesktop_os_release()["PRETTY_NAME"]
        cpuinfo = Path("/proc/cpuinfo").read_text()
        if "model name" in cpuinfo:
            assert info.cpu_model and info.cpu_model in cpuinfo


def test_it_samples_this_machine() -> None:
    sampler = HostSampler()
    sample = sampler.sample(slow=True)
    assert len(sample.cpu_per_core) == psutil.cpu_count()
    assert sample.cpu_usage is not None and 0.0 <= sample.cpu_usage <= 100.0
    assert sample.memory_total == psutil.virtual_memory().total // MIB
    assert sample.memory_used is not None and 0 < sample.memory_used < sample.memory_total
    assert sample.memory_usage is not None and 0.0 < sample.memory_usage < 100.0
    assert sample.uptime is not None and sample.uptime > 0
    if hasattr(os, "getloadavg"):
        assert sample.load_average is not None and len(sample.load_average) == 3
    mounts = {disk.mountpoint for disk in sample.disks}
    assert "/" in mounts or sys.platform == "win32"
    assert not any(disk.fstype in host.PSEUDO_FS for disk in sample.disks)


def test_the_first_sample_has_no_rates_and_says_why() -> None:
    sample = HostSampler().sample()
    assert sample.disk_read_bytes_per_s is None
    assert sample.net_sent_bytes_per_s is None
    assert sample.unsupported["disk_read_bytes_per_s"] == NEEDS_TWO_READINGS
    assert sample.unsupported["net_recv_bytes_per_s"] == NEEDS_TWO_READINGS


def network_bytes() -> tuple[int, int]:
    """(received, sent) by every interface but loopback, as psutil reads them."""
    nics = psutil.net_io_counters(pernic=True)
    real = [c for name, c in nics.items() if name not in ("lo", "lo0")]
    return sum(c.bytes_recv for c in real), sum(c.bytes_sent for c in real)


def send_to_the_gateway(size: int) -> None:
    """Datagrams out of the default route's interface (to the discard port), so the
    network counters move even on a machine that talks to nobody; best effort."""
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            gateway = socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for _ in range(size // 1024):
                    with contextlib.suppress(OSError):
                        udp.sendto(b"x" * 1024, (gateway, 9))
            return


@linux_only
def test_the_second_sample_gives_the_bytes_the_network_moved_between_the_readings() -> None:
    """On this machine's real counters, one second apart on the sampler's clock: the rate is
    at least what moved between two readings taken inside the pair of samples, and at most
    what moved between two readings taken around it."""
    clock = Clock()
    sampler = HostSampler(clock=clock)
    outer_before = network_bytes()
    sampler.sample()
    inner_before = network_bytes()
    send_to_the_gateway(64 * 1024)
    inner_after = network_bytes()
    clock.now += 1.0
    sample = sampler.sample()
    outer_after = network_bytes()
    rates = (sample.net_recv_bytes_per_s, sample.net_sent_bytes_per_s)
    for i, rate in enumerate(rates):
        assert rate is not None
        assert inner_after[i] - inner_before[i] <= rate <= outer_after[i] - outer_before[i]
    assert sample.disk_read_bytes_per_s is not None
    assert sample.disk_write_bytes_per_s is not None
    assert "disk_read_bytes_per_s" not in sample.unsupported


@linux_only
def test_rates_come_from_two_counter_readings(tmp_path: Path, sys_block: str) -> None:
    clock = Clock()
    fake_proc(tmp_path, read_sectors=2048, net_recv=10_000)
    sampler = HostSampler(proc_root=str(tmp_path), sys_block=sys_block, clock=clock)
    sampler.sample()
    clock.now += 2.0
    fake_proc(tmp_path, read_sectors=2048 + 4096, net_recv=10_000 + 3_000_000)
    sample = sampler.sample()
    # 4096 sectors of 512 B = 2 MiB over 2 s; the partition and the loop device don't count.
    assert sample.disk_read_bytes_per_s == pytest.approx(MIB)
    assert sample.disk_write_bytes_per_s == 0.0
    # eth0 only: loopback traffic never leaves the host.
    assert sample.net_recv_bytes_per_s == pytest.approx(1_500_000)


@linux_only
def test_a_counter_that_goes_back_gives_no_rate_not_a_negative_one(
    tmp_path: Path, sys_block: str
) -> None:
    clock = Clock()
    fake_proc(tmp_path, read_sectors=9_000_000, net_recv=4_294_967_000)
    sampler = HostSampler(proc_root=str(tmp_path), sys_block=sys_block, clock=clock)
    sampler.sample()
    clock.now += 1.0
    fake_proc(tmp_path, read_sectors=100, net_recv=500)  # reset / 32-bit wrap
    sample = sampler.sample()
    assert sample.disk_read_bytes_per_s is None
    assert sample.unsupported["disk_read_bytes_per_s"] == COUNTER_RESET
    assert sample.net_recv_bytes_per_s is None
    assert sample.unsupported["net_recv_bytes_per_s"] == COUNTER_RESET
    clock.now += 1.0
    fake_proc(tmp_path, read_sectors=100 + 2, net_recv=500 + 10)
    recovered = sampler.sample()
    assert recovered.disk_read_bytes_per_s == pytest.approx(1024)
    assert recovered.net_recv_bytes_per_s == pytest.approx(10)


@linux_only
def test_memory_used_is_what_is_not_available(tmp_path: Path, sys_block: str) -> None:
    fake_proc(tmp_path, read_sectors=0, net_recv=0)
    info = parse_meminfo((tmp_path / "meminfo").read_text())
    sample = HostSampler(proc_root=str(tmp_path), sys_block=sys_block).sample()
    assert sample.memory_total == info["MemTotal"] // 1024
    assert sample.memory_available == info["MemAvailable"] // 1024
    expected_used = (info["MemTotal"] - info["MemAvailable"]) * 1024 // MIB
    assert sample.memory_used == expected_used
    assert sample.swap_total == info["SwapTotal"] // 1024


def test_disk_usage_skips_pseudo_and_duplicate_filesystems(monkeypatch: pytest.MonkeyPatch) -> None:
    # The mount table of an Ubuntu host with snaps and Docker, as psutil lists it.
    partitions = [
        sdiskpart("/dev/loop3", "/snap/core22/1380", "squashfs", "ro,nodev"),
        sdiskpart("/dev/nvme0n1p2", "/", "ext4", "rw,relatime"),
        sdiskpart("tmpfs", "/run/user/1000", "tmpfs", "rw"),
        sdiskpart("overlay", "/var/lib/docker/overlay2/ab/merged", "overlay", "rw"),
        sdiskpart("/dev/nvme0n1p2", "/var/snap/firefox/common/host-hunspell", "ext4", "ro"),
        sdiskpart("/dev/nvme0n1p1", "/boot/efi", "vfat", "rw"),
    ]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: partitions)
    real_root = psutil.disk_usage("/")
    monkeypatch.setattr(psutil, "disk_usage", lambda mount: real_root)
    disks = HostSampler().sample(slow=True).disks
    assert [(d.mountpoint, d.device) for d in disks] == [
        ("/", "/dev/nvme0n1p2"),
        ("/boot/efi", "/dev/nvme0n1p1"),
    ]
    assert disks[0].total == real_root.total // MIB


def test_the_slow_tier_is_read_on_slow_ticks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(host, "_disk_usage", lambda: calls.append(1) or [])
    sampler = HostSampler()
    sampler.sample(slow=True)
    for _ in range(3):
        sampler.sample()
    assert len(calls) == 1
    sampler.sample(slow=True)
    assert len(calls) == 2


def test_sensors_missing_from_psutil_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS and Windows: psutil has no sensors_temperatures / sensors_fans at all.
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    monkeypatch.delattr(psutil, "sensors_fans", raising=False)
    sample = HostSampler().sample(slow=True)
    assert sample.temperatures == [] and sample.fans == []
    assert sample.unsupported["temperatures"] == NO_SENSOR_API
    assert sample.unsupported["fans"] == NO_SENSOR_API


def test_it_reads_temperatures_and_fans(monkeypatch: pytest.MonkeyPatch) -> None:
    # What psutil gives on a desktop with coretemp and an nct6775 fan controller.
    monkeypatch.setattr(
        psutil,
        "sensors_temperatures",
        lambda: {
            "coretemp": [shwtemp("Package id 0", 45.0, 80.0, 100.0), shwtemp("", 40.0, None, None)]
        },
        raising=False,
    )
    monkeypatch.setattr(
        psutil, "sensors_fans", lambda: {"nct6775": [sfan("fan2", 0)]}, raising=False
    )
    sample = HostSampler().sample(slow=True)
    assert [(t.label, t.current, t.critical) for t in sample.temperatures] == [
        ("Package id 0", 45.0, 100.0),
        ("coretemp", 40.0, None),
    ]
    assert [(f.sensor, f.rpm) for f in sample.fans] == [("nct6775", 0)]
    assert "temperatures" not in sample.unsupported and "fans" not in sample.unsupported


def test_load_average_missing_on_windows_is_none_with_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "getloadavg", raising=False)
    sample = HostSampler().sample()
    assert sample.load_average is None
    assert "load_average" in sample.unsupported


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "while True: pass", "--api-key", "topsecret42"],
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_top_processes_are_a_true_cpu_rate(busy: subprocess.Popen[bytes]) -> None:
    sampler = HostSampler()
    first = sampler.sample(top_processes=True)
    assert first.top_processes == []
    assert first.unsupported["top_processes"] == NEEDS_TWO_READINGS
    time.sleep(0.5)
    sample = sampler.sample(top_processes=True)
    assert "top_processes" not in sample.unsupported
    rows = {row.pid: row for row in sample.top_processes}
    assert busy.pid in rows, sample.top_processes
    row = rows[busy.pid]
    assert row.cpu_percent > 30.0
    assert row.command is not None and "topsecret42" not in row.command
    assert "--api-key ***" in row.command
    assert row.user == psutil.Process(busy.pid).username()
    assert row.memory_rss >= 1
    percents = [r.cpu_percent for r in sample.top_processes]
    assert percents == sorted(percents, reverse=True)
    # Between top ticks the last list is kept rather than blanked.
    assert sampler.sample().top_processes == sample.top_processes


def test_a_hot_tick_is_fast() -> None:
    sampler = HostSampler()
    sampler.sample(slow=True)
    timings = []
    for _ in range(50):
        start = time.perf_counter()
        sampler.sample()
        timings.append(time.perf_counter() - start)
    # Target is 400 µs on this machine; the bound leaves room for a busy CI box.
    assert statistics.median(timings) < 0.002
