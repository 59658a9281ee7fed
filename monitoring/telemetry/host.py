"""Sample the host around the GPUs: CPU, memory, load, disks, network, sensors, busy processes.

Called every tick, so the hot part reads only what changes fast and does it without ever
sleeping: rates come from the previous tick's counters and ``time.monotonic``. On Linux the
hot figures are read straight from /proc (one read per file, about half of what psutil's
wrappers cost); elsewhere psutil answers. Slow figures (disk usage, sensors) are refreshed
on the slow tier and reused in between; top processes have their own tier. Anything the
platform lacks is None with a reason in ``SystemSample.unsupported``, never a crash.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psutil

from monitoring.telemetry.redact import redact_command
from monitoring.telemetry.schema import (
    DiskUsage,
    FanReading,
    HostInfo,
    HostProcess,
    SystemSample,
    TemperatureReading,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
NEEDS_TWO_READINGS = "needs two readings"
COUNTER_RESET = "counter reset or wrapped since the last reading"
NO_SENSOR_API = "not exposed by psutil on this OS"

# Filesystems that are not storage a user fills: memory-backed, read-only images, overlays.
PSEUDO_FS = frozenset(
    {
        "tmpfs",
        "devtmpfs",
        "ramfs",
        "squashfs",
        "overlay",
        "overlayfs",
        "aufs",
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "nsfs",
        "autofs",
        "devfs",
        "fuse.snapfuse",
        "fuse.lxcfs",
        "fuse.gvfsd-fuse",
        "fuse.portal",
        "tracefs",
        "debugfs",
        "securityfs",
        "pstore",
        "bpf",
        "efivarfs",
        "iso9660",
        "nullfs",
    }
)
# Mount points that only repeat a filesystem already shown, or hold runtime images.
SKIPPED_MOUNT_PREFIXES = (
    "/snap/",
    "/var/lib/docker/",
    "/var/lib/containers/",
    "/var/lib/kubelet/",
    "/run/",
    "/proc/",
    "/sys/",
    "/dev/",
    "/private/var/vm",
)
# Loopback interfaces: traffic that never leaves the host.
_LOOPBACK = ("lo", "lo0")


# ---------------------------------------------------------------- host info (read once)


def _os_name() -> str:
    system = platform.system()
    if system == "Linux":
        try:
            release = platform.freedesktop_os_release()
            return release.get("PRETTY_NAME") or release.get("NAME") or "Linux"
        except OSError:
            return "Linux"
    if system == "Darwin":
        version = platform.mac_ver()[0]
        return f"macOS {version}" if version else "macOS"
    if system == "Windows":
        return f"Windows {platform.release()} ({platform.version()})"
    return f"{system} {platform.release()}".strip() or "unknown"


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            brand = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=2,
                check=False,
            ).stdout.strip()
            if brand:
                return brand
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None


def read_host_info() -> HostInfo:
    """What machine this is. Called once at start, not per tick."""
    try:
        boot_time: datetime | None = datetime.fromtimestamp(psutil.boot_time(), UTC)
    except (OSError, RuntimeError):
        boot_time = None
    try:
        memory_total: int | None = psutil.virtual_memory().total // MIB
    except (OSError, RuntimeError):
        memory_total = None
    return HostInfo(
        hostname=socket.gethostname() or platform.node(),
        os=_os_name(),
        kernel=platform.release(),
        cpu_model=_cpu_model(),
        cores=psutil.cpu_count() or os.cpu_count() or 1,
        physical_cores=psutil.cpu_count(logical=False),
        boot_time=boot_time,
        memory_total=memory_total,
    )


# ---------------------------------------------------------------- hot counters


def _read(path: str) -> str:
    """One file in one read: /proc files are generated whole on read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 16).decode("ascii", "replace")
    finally:
        os.close(fd)


def _physical_disks(sys_block: str = "/sys/block") -> frozenset[str] | None:
    """Whole disks backed by a device (not loop, zram, dm or md, which would count twice)."""
    try:
        names = os.listdir(sys_block)
    except OSError:
        return None
    disks = frozenset(n for n in names if os.path.exists(os.path.join(sys_block, n, "device")))
    return disks or None


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as kB values."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            values[key] = int(fields[0])
    return values


def parse_diskstats(text: str, disks: frozenset[str]) -> tuple[int, int]:
    """Bytes read and written by the given disks since boot (sectors are always 512 B)."""
    read = written = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[2] in disks:
            read += int(fields[5])
            written += int(fields[9])
    return read * 512, written * 512


def parse_net_dev(text: str) -> tuple[int, int]:
    """Bytes received and sent by all non-loopback interfaces since boot."""
    recv = sent = 0
    for line in text.splitlines()[2:]:
        name, _, data = line.partition(":")
        fields = data.split()
        if len(fields) >= 9 and name.strip() not in _LOOPBACK:
            recv += int(fields[0])
            sent += int(fields[8])
    return recv, sent


@dataclass(slots=True)
class _Counter:
    """The previous reading of cumulative counters, to turn the next one into rates."""

    values: tuple[int, ...] | None = None
    at: float = 0.0

    def rates(self, values: tuple[int, ...], now: float) -> tuple[list[float | None], str | None]:
        previous, then = self.values, self.at
        self.values, self.at = values, now
        if previous is None:
            return [None] * len(values), NEEDS_TWO_READINGS
        if now <= then:
            return [None] * len(values), "no time elapsed since the last reading"
        out: list[float | None] = []
        reason = None
        for new, old in zip(values, previous, strict=True):
            if new < old:
                out.append(None)
                reason = COUNTER_RESET
            else:
                out.append((new - old) / (now - then))
        return out, reason


# ---------------------------------------------------------------- top processes


@dataclass(slots=True)
class _Tracked:
    process: psutil.Process
    cpu: float  # user + system seconds at the last look
    at: float
    percent: float | None = None
    details: tuple[str, str | None, str | None] | None = None  # name, user, command


class _TopProcesses:
    """Busiest processes by CPU, as a true rate between two looks at each process.

    Keeps its own Process objects (psutil.process_iter's cache is module-wide, so another
    caller asking for cpu_percent would shorten our interval). Name, user and the redacted
    command are read only for the few processes shown, once per process.
    """

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.clock = clock
        self._tracked: dict[int, _Tracked] = {}

    def sample(self) -> list[HostProcess] | None:
        """The top list, or None on the first look (rates need two)."""
        primed = bool(self._tracked)
        now = self.clock()
        alive: dict[int, _Tracked] = {}
        for pid in psutil.pids():
            if pid == 0:  # Windows "System Idle Process", BSD swapper: not a real load
                continue
            tracked = self._tracked.get(pid)
            try:
                process = tracked.process if tracked else psutil.Process(pid)
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            cpu = times.user + times.system
            if tracked is None or cpu < tracked.cpu or now <= tracked.at:
                alive[pid] = _Tracked(process, cpu, now)  # new, or a recycled pid: prime
                continue
            tracked.percent = 100.0 * (cpu - tracked.cpu) / (now - tracked.at)
            tracked.cpu, tracked.at = cpu, now
            alive[pid] = tracked
        self._tracked = alive
        if not primed:
            return None
        ranked = sorted(
            (t for t in alive.values() if t.percent is not None),
            key=lambda t: t.percent or 0.0,
            reverse=True,
        )
        return [row for t in ranked[: self.limit] if (row := self._row(t)) is not None]

    def _row(self, tracked: _Tracked) -> HostProcess | None:
        process = tracked.process
        try:
            if not process.is_running():  # the pid was recycled: start over next time
                self._tracked.pop(process.pid, None)
                return None
            rss = process.memory_info().rss // MIB
            if tracked.details is None:
                tracked.details = _details(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        name, user, command = tracked.details
        return HostProcess(
            pid=process.pid,
            name=name,
            user=user,
            cpu_percent=round(tracked.percent or 0.0, 1),
            memory_rss=rss,
            command=command,
        )


def _details(process: psutil.Process) -> tuple[str, str | None, str | None]:
    with process.oneshot():
        name = process.name()
        try:
            user: str | None = process.username()
        except (psutil.AccessDenied, KeyError):
            user = None
        try:
            argv = process.cmdline()
        except (psutil.AccessDenied, psutil.ZombieProcess):
            argv = []
    return name, user, redact_command(argv) if argv else None


# ---------------------------------------------------------------- the sampler


class HostSampler:
    """One SystemSample per call; keeps the counters needed for rates between calls."""

    def __init__(
        self,
        *,
        proc_root: str = "/proc",
        sys_block: str = "/sys/block",
        top_limit: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proc_root = proc_root
        self.clock = clock
        self._linux = sys.platform.startswith("linux") and os.path.exists(
            os.path.join(proc_root, "meminfo")
        )
        self._disks_io = _physical_disks(sys_block) if self._linux else None
        try:
            self._boot_time: float | None = psutil.boot_time()
        except (OSError, RuntimeError):
            self._boot_time = None
        self._disk_counter = _Counter()
        self._net_counter = _Counter()
        self._top = _TopProcesses(top_limit, clock)
        self._top_rows: list[HostProcess] = []
        self._top_reason: str | None = NEEDS_TWO_READINGS
        self._slow: SystemSample | None = None
        psutil.cpu_percent(interval=None, percpu=True)  # prime: the next call is a rate

    def sample(self, *, top_processes: bool = False, slow: bool = False) -> SystemSample:
        out = SystemSample()
        self._cpu(out)
        self._memory(out)
        self._load(out)
        now = self.clock()
        self._disk_io(out, now)
        self._net_io(out, now)
        if self._boot_time is not None:
            out.uptime = max(0.0, time.time() - self._boot_time)
        else:
            out.unsupported["uptime"] = "boot time not available on this OS"
        if slow or self._slow is None:
            self._slow = self._slow_tier()
        out.disks = list(self._slow.disks)
        out.temperatures = list(self._slow.temperatures)
        out.fans = list(self._slow.fans)
        out.unsupported.update(self._slow.unsupported)
        if top_processes:
            self._refresh_top()
        out.top_processes = list(self._top_rows)
        if self._top_reason:
            out.unsupported["top_processes"] = self._top_reason
        return out

    # -- hot tier

    def _cpu(self, out: SystemSample) -> None:
        try:
            per_core = psutil.cpu_percent(interval=None, percpu=True)
        except (OSError, RuntimeError) as exc:
            out.unsupported["cpu_usage"] = f"CPU times unavailable: {exc}"
            return
        out.cpu_per_core = per_core
        out.cpu_usage = round(sum(per_core) / len(per_core), 1) if per_core else None

    def _memory(self, out: SystemSample) -> None:
        try:
            if self._linux:
                info = parse_meminfo(_read(os.path.join(self.proc_root, "meminfo")))
                total = info["MemTotal"] * 1024
                available = info.get("MemAvailable")
                if available is None:  # kernels before 3.14
                    available = (
                        info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
                    )
                available *= 1024
                swap_total = info.get("SwapTotal", 0) * 1024
                swap_used = swap_total - info.get("SwapFree", 0) * 1024
            else:
                memory = psutil.virtual_memory()
                total, available = memory.total, memory.available
                swap = psutil.swap_memory()
                swap_total, swap_used = swap.total, swap.used
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            out.unsupported["memory_used"] = f"memory figures unavailable: {exc}"
            return
        # "Used" is what is not available: matches free(1)'s available column and the %.
        out.memory_total = total // MIB
        out.memory_available = available // MIB
        out.memory_used = (total - available) // MIB
        out.memory_usage = round(100.0 * (total - available) / total, 1) if total else None
        out.swap_total = swap_total // MIB
        out.swap_used = swap_used // MIB
        if swap_total:
            out.swap_usage = round(100.0 * swap_used / swap_total, 1)
        else:
            out.unsupported["swap_usage"] = "no swap configured"

    @staticmethod
    def _load(out: SystemSample) -> None:
        try:
            out.load_average = os.getloadavg()
        except (AttributeError, OSError):
            out.unsupported["load_average"] = "load average is not available on this OS"

    def _disk_io(self, out: SystemSample, now: float) -> None:
        try:
            if self._disks_io is not None:
                text = _read(os.path.join(self.proc_root, "diskstats"))
                values = parse_diskstats(text, self._disks_io)
            else:
                counters = psutil.disk_io_counters()
                if counters is None:
                    raise OSError("no disk counters")
                values = (counters.read_bytes, counters.write_bytes)
        except (OSError, RuntimeError, ValueError) as exc:
            reason = f"disk I/O counters unavailable: {exc}"
            out.unsupported["disk_read_bytes_per_s"] = reason
            out.unsupported["disk_write_bytes_per_s"] = reason
            return
        (read, write), reason = self._disk_counter.rates(values, now)
        out.disk_read_bytes_per_s, out.disk_write_bytes_per_s = read, write
        if reason:
            if read is None:
                out.unsupported["disk_read_bytes_per_s"] = reason
            if write is None:
                out.unsupported["disk_write_bytes_per_s"] = reason

    def _net_io(self, out: SystemSample, now: float) -> None:
        try:
            if self._linux:
                values = parse_net_dev(_read(os.path.join(self.proc_root, "net", "dev")))
            else:
                nics = psutil.net_io_counters(pernic=True)
                values = (
                    sum(c.bytes_recv for n, c in nics.items() if n not in _LOOPBACK),
                    sum(c.bytes_sent for n, c in nics.items() if n not in _LOOPBACK),
                )
        except (OSError, RuntimeError, ValueError) as exc:
            reason = f"network counters unavailable: {exc}"
            out.unsupported["net_recv_bytes_per_s"] = reason
            out.unsupported["net_sent_bytes_per_s"] = reason
            return
        (recv, sent), reason = self._net_counter.rates(values, now)
        out.net_recv_bytes_per_s, out.net_sent_bytes_per_s = recv, sent
        if reason:
            if recv is None:
                out.unsupported["net_recv_bytes_per_s"] = reason
            if sent is None:
                out.unsupported["net_sent_bytes_per_s"] = reason

    # -- slow tier

    def _slow_tier(self) -> SystemSample:
        """Disk usage and sensors: slow to read, slow to change."""
        slow = SystemSample()
        slow.disks = _disk_usage()
        if not slow.disks:
            slow.unsupported["disks"] = "no mounted storage filesystem found"
        _sensors(slow)
        return slow

    # -- top processes tier

    def _refresh_top(self) -> None:
        try:
            rows = self._top.sample()
        except (OSError, RuntimeError) as exc:
            log.warning("top processes unavailable: %s", exc)
            self._top_rows, self._top_reason = [], f"process list unavailable: {exc}"
            return
        if rows is None:
            self._top_rows, self._top_reason = [], NEEDS_TWO_READINGS
        else:
            self._top_rows, self._top_reason = rows, None


def _disk_usage() -> list[DiskUsage]:
    """Usage of each real mounted filesystem, one row per device."""
    try:
        partitions = psutil.disk_partitions(all=False)
    except (OSError, RuntimeError):
        return []
    disks: list[DiskUsage] = []
    devices: set[str] = set()
    for part in sorted(partitions, key=lambda p: len(p.mountpoint)):
        mount = part.mountpoint
        if part.fstype.lower() in PSEUDO_FS or not part.fstype:
            continue
        if mount.startswith(SKIPPED_MOUNT_PREFIXES) or part.device in devices:
            continue
        if mount.startswith("/System/Volumes/") and mount != "/System/Volumes/Data":
            continue  # macOS: the sealed system's helper volumes
        try:
            usage = psutil.disk_usage(mount)
        except (OSError, RuntimeError):
            continue  # an unreadable or vanished mount (CD drive, stale NFS)
        devices.add(part.device)
        disks.append(
            DiskUsage(
                mountpoint=mount,
                device=part.device,
                fstype=part.fstype,
                total=usage.total // MIB,
                used=usage.used // MIB,
                free=usage.free // MIB,
                percent=usage.percent,
            )
        )
    return disks


def _sensors(slow: SystemSample) -> None:
    read_temperatures = getattr(psutil, "sensors_temperatures", None)
    if read_temperatures is None:
        slow.unsupported["temperatures"] = NO_SENSOR_API
    else:
        try:
            groups = read_temperatures()
        except (OSError, RuntimeError) as exc:
            groups = {}
            slow.unsupported["temperatures"] = f"temperature sensors unreadable: {exc}"
        for sensor, entries in groups.items():
            for entry in entries:
                slow.temperatures.append(
                    TemperatureReading(
                        sensor=sensor,
                        label=entry.label or sensor,
                        current=entry.current,
                        high=entry.high,
                        critical=entry.critical,
                    )
                )
        if not slow.temperatures:
            slow.unsupported.setdefault(
                "temperatures", "no temperature sensor exposed by the OS (VM or container?)"
            )
    read_fans = getattr(psutil, "sensors_fans", None)
    if read_fans is None:
        slow.unsupported["fans"] = NO_SENSOR_API
        return
    try:
        fan_groups = read_fans()
    except (OSError, RuntimeError) as exc:
        fan_groups = {}
        slow.unsupported["fans"] = f"fan sensors unreadable: {exc}"
    for sensor, entries in fan_groups.items():
        for entry in entries:
            slow.fans.append(
                FanReading(sensor=sensor, label=entry.label or sensor, rpm=entry.current)
            )
    if not slow.fans:
        slow.unsupported.setdefault("fans", "no fan sensor exposed by the OS")
