"""What the page says about one snapshot: the "why" banner, GPU cards, processes, the host.

Pure functions from the normalised model (:mod:`monitoring.telemetry.schema`) to small view
objects the templates only print: every figure is formatted, every bar has its width and
every level (ok, warn, crit) is decided here, once, for the first page, the live push and
the polling fallback alike. No Django, no database: the renderer calls these once a tick.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

from monitoring.telemetry import format as fmt
from monitoring.telemetry.codes import REASON_LABELS
from monitoring.telemetry.schema import (
    GPU_LOST,
    NO_FANS,
    STATUS_ERROR,
    STATUS_NO_GPU,
    GpuProcess,
    GpuSample,
    Snapshot,
)

#: A GPU at or above this utilization, or with this share of its memory used by processes,
#: is "busy" and gets its line in the banner.
BUSY_UTILIZATION = 20
BUSY_MEMORY_PERCENT = 50
#: Degrees under the slowdown threshold where a temperature turns amber.
TEMPERATURE_MARGIN_C = 10
#: Without a slowdown threshold from the driver, these levels are used (°C).
TEMPERATURE_WARN_C, TEMPERATURE_CRIT_C = 80, 90
#: The banner names a job in at most this many characters.
SHORT_COMMAND = 60
#: A command line in a process table (shown truncated, whole in its tooltip) is cut here: a
#: browser's or a JVM's runs to kilobytes, and every live frame would carry it twice.
COMMAND_SHOWN = 300
#: Clock event reasons that mean "slowed down", not merely idle or configured.
SLOWDOWN_REASONS = {
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
}


def level(value: float | None, warn: float, crit: float) -> str:
    """``'ok'``, ``'warn'`` or ``'crit'`` for a figure against two limits (None: ``'none'``)."""
    if value is None:
        return "none"
    if value >= crit:
        return "crit"
    if value >= warn:
        return "warn"
    return "ok"


def bar(value: float | None, full: float | None) -> int:
    """Width of a bar in whole percent of ``full``, clamped to 0..100 (0 when unknown)."""
    if value is None or not full:
        return 0
    return max(0, min(100, round(100 * value / full)))


def human_duration(seconds: float | None) -> str:
    """``'2 h 14 min'``, ``'3 d 4 h'``, ``'5 min'``, ``'40 s'``: how long, in words."""
    if seconds is None or seconds < 0:
        return fmt.DASH
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def short_command(proc: GpuProcess) -> str:
    """``'python3 train.py'``: the program and what it runs, as a person names a job.

    From the redacted command line when there is one (``python3 -m vllm.entrypoints``,
    ``python3 -c``), else the process name; at most ``SHORT_COMMAND`` characters.
    """
    words: list[str] = []
    if proc.command:
        try:
            argv = shlex.split(proc.command)
        except ValueError:
            argv = proc.command.split()
        if argv:
            words.append(PurePosixPath(argv[0]).name or argv[0])
            rest = iter(argv[1:])
            for arg in rest:
                if arg in ("-m", "-c"):
                    words.append(arg)
                    if arg == "-m":
                        words.append(next(rest, ""))
                    break
                if not arg.startswith("-"):
                    words.append(PurePosixPath(arg).name or arg)
                    break
    return clip(
        " ".join(word for word in words if word) or proc.name or f"pid {proc.pid}", SHORT_COMMAND
    )


def clip(text: str, limit: int = COMMAND_SHOWN) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis saying it was."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def container_label(proc: GpuProcess) -> str | None:
    """``'container llm-train'``, ``'unit ollama.service'``, ``'pod 1a2b…'`` or None."""
    container = proc.container
    if container is None:
        return None
    if container.runtime == "systemd":
        return f"unit {container.name}" if container.name else None
    if container.runtime == "kubernetes":
        name = container.name or container.pod_uid or container.id
        return f"pod {name[:12]}" if name else "pod"
    name = container.name or (container.id[:12] if container.id else None)
    return f"container {name}" if name else f"{container.runtime} container"


@dataclass(slots=True)
class Figure:
    """One figure of a card: its words, a bar and a level for colour."""

    label: str
    value: str
    detail: str = ""
    percent: int = 0
    level: str = "none"
    missing: str | None = None  # why there is no value, said in the tooltip


@dataclass(slots=True)
class ProcessRow:
    pid: int
    gpu_index: int
    name: str
    command: str
    user: str
    where: str
    memory: str
    memory_mib: int
    sm: str
    kind: str
    since: str
    running_for: str


@dataclass(slots=True)
class PcieView:
    """A GPU's "PCIe and link" detail: throughput both ways, the link, replays."""

    rx: str
    tx: str
    link: str  # "Gen 4 x16 (max Gen 5 x16)"
    replays: str
    missing: str | None = None  # why there is no throughput (not read yet, not supported)


@dataclass(slots=True)
class GpuCard:
    index: int
    name: str
    uuid: str | None
    lost: bool
    lost_reason: str | None
    state_label: str
    utilization: Figure
    memory: Figure
    temperature: Figure
    power: Figure
    fan: Figure
    clocks: Figure
    memory_clock: Figure
    codec: Figure
    pstate: str
    reasons: list[str]
    slowdown: list[str]
    processes: list[ProcessRow]
    processes_note: str | None
    mig: list[dict[str, str]]
    vendor: str | None = None  # shown for GPUs that are not NVIDIA's (read through nvtop)
    pcie: PcieView | None = None


@dataclass(slots=True)
class BannerLine:
    text: str
    level: str  # busy | idle | warn | info


@dataclass(slots=True)
class UserMemory:
    user: str
    memory: str
    processes: int
    percent: int


@dataclass(slots=True)
class HostView:
    name: str
    os: str
    cpu_model: str
    cores: int
    cpu: Figure
    per_core: list[Figure]
    memory: Figure
    swap: Figure
    load: Figure
    load_values: str
    disk_read: str
    disk_write: str
    net_recv: str
    net_sent: str
    uptime: str
    temperatures: list[Figure]
    disks: list[Figure]
    top: list[dict[str, str]]


@dataclass(slots=True)
class View:
    """Everything the page shows of one snapshot."""

    host: str
    timestamp: datetime
    source: str
    driver: str
    status: str
    driver_message: str | None
    messages: list[str]
    banner: list[BannerLine]
    gpus: list[GpuCard]
    processes: list[ProcessRow]
    users: list[UserMemory]
    system: HostView
    gpu_count: int = 0
    busy_count: int = 0
    hottest: str = fmt.DASH
    extra: dict[str, str] = field(default_factory=dict)


# --- GPU cards -------------------------------------------------------------------------------


def _missing(gpu: GpuSample, *names: str) -> str | None:
    for name in names:
        if name in gpu.unsupported:
            return gpu.unsupported[name]
    return None


def running_since(proc: GpuProcess, now: datetime) -> tuple[str, str]:
    """How long a process has run, and when it started, in words: ``('2 h 14 min',
    'started 2026-11-30 13:02 UTC')`` from its start time; where the source gives none
    (NVML, a replayed capture), ``('seen since 13:02', 'first seen by the monitor at
    2026-11-30 13:02:11 UTC; the driver gives no start time')``, never a made-up start;
    dashes when neither is known."""
    if proc.start_time is not None:
        start = proc.start_time
        return human_duration((now - start).total_seconds()), f"started {_moment(start)}"
    if proc.first_seen is not None:
        return (
            f"seen since {_clock_time(proc.first_seen, now)}",
            f"first seen by the monitor at {_moment(proc.first_seen, seconds=True)}; "
            "the driver gives no start time",
        )
    return fmt.DASH, "start time unknown"


def _local(at: datetime) -> datetime:
    """In the server's TIME_ZONE, as the page's other times (alerts, history) are."""
    from django.utils import timezone

    return at.astimezone(timezone.get_default_timezone())


def _moment(at: datetime, seconds: bool = False) -> str:
    return f"{_local(at):%Y-%m-%d %H:%M:%S %Z}" if seconds else f"{_local(at):%Y-%m-%d %H:%M %Z}"


def _clock_time(at: datetime, now: datetime) -> str:
    """``13:02`` on the snapshot's day, else ``Nov 29 13:02`` (local time)."""
    at, now = _local(at), _local(now)
    return f"{at:%H:%M}" if at.date() == now.date() else f"{at:%b %d %H:%M}"


def _process_row(proc: GpuProcess, now: datetime) -> ProcessRow:
    running_for, since = running_since(proc, now)
    return ProcessRow(
        pid=proc.pid,
        gpu_index=proc.gpu_index,
        name=proc.name or "?",
        command=clip(proc.command or proc.name or ""),
        user=proc.user or "?",
        where=container_label(proc) or "host",
        memory=fmt.mib(proc.used_memory_mib),
        memory_mib=proc.used_memory_mib or 0,
        sm=fmt.percent(proc.sm_utilization),
        kind=proc.type,
        since=since,
        running_for=running_for,
    )


def _clock(label: str, mhz: int | None, maximum: int | None) -> Figure:
    return Figure(
        label,
        fmt.mhz(mhz),
        f"max {fmt.mhz(maximum)}" if maximum else "",
        bar(mhz, maximum),
        "ok" if mhz is not None else "none",
    )


def gpu_card(gpu: GpuSample, now: datetime) -> GpuCard:
    """The card of one GPU; a lost GPU keeps its name and says why it is lost."""
    slowdown_c = gpu.temperature_slowdown
    if slowdown_c:
        temp_level = level(gpu.temperature, slowdown_c - TEMPERATURE_MARGIN_C, slowdown_c)
        temp_detail = f"slowdown at {fmt.celsius(slowdown_c)}"
    else:
        temp_level = level(gpu.temperature, TEMPERATURE_WARN_C, TEMPERATURE_CRIT_C)
        temp_detail = ""
    memory_percent = gpu.memory_percent
    power_limit = gpu.power_limit_enforced or gpu.power_limit
    if gpu.fans:
        fan = Figure("Fan", fmt.percent(gpu.fan_speed), "", bar(gpu.fan_speed, 100), "ok")
    elif _missing(gpu, "fans") == NO_FANS or "fans" in gpu.unsupported:
        passive = gpu.unsupported.get("fans") == NO_FANS
        fan = Figure(
            "Fan", "passive" if passive else fmt.DASH, "", missing=gpu.unsupported.get("fans")
        )
    else:
        fan = Figure("Fan", fmt.DASH)
    clocks = gpu.clocks
    reasons = gpu.clock_event_reasons or []
    return GpuCard(
        index=gpu.index,
        name=gpu.name or f"GPU {gpu.index}",
        uuid=gpu.uuid,
        lost=gpu.state == GPU_LOST,
        lost_reason=gpu.lost_reason,
        state_label="lost" if gpu.state == GPU_LOST else "ok",
        utilization=Figure(
            "Utilization",
            fmt.percent(gpu.utilization),
            f"memory bus {fmt.percent(gpu.memory_utilization)}",
            bar(gpu.utilization, 100),
            "ok" if gpu.utilization is not None else "none",
            _missing(gpu, "utilization"),
        ),
        memory=Figure(
            "Memory",
            fmt.mib(gpu.memory_used),
            f"of {fmt.mib(gpu.memory_total)}",
            bar(memory_percent, 100),
            level(memory_percent, 90, 95),
            _missing(gpu, "memory_used"),
        ),
        temperature=Figure(
            "Temperature",
            fmt.celsius(gpu.temperature),
            temp_detail,
            bar(gpu.temperature, slowdown_c or 100),
            temp_level,
            _missing(gpu, "temperature"),
        ),
        power=Figure(
            "Power",
            fmt.watts(gpu.power_usage),
            f"limit {fmt.watts(power_limit)}" if power_limit else "",
            bar(gpu.power_usage, power_limit),
            level(bar(gpu.power_usage, power_limit) if power_limit else None, 90, 98),
            _missing(gpu, "power_usage"),
        ),
        fan=fan,
        clocks=_clock("SM clock", clocks.sm, clocks.sm_max),
        memory_clock=_clock("Memory clock", clocks.memory, clocks.memory_max),
        codec=Figure(
            "Encoder / decoder",
            f"{fmt.percent(gpu.encoder_utilization)} / {fmt.percent(gpu.decoder_utilization)}",
        ),
        pstate=gpu.performance_state or fmt.DASH,
        reasons=[REASON_LABELS.get(reason, reason.replace("_", " ")) for reason in reasons],
        slowdown=[REASON_LABELS.get(r, r) for r in reasons if r in SLOWDOWN_REASONS],
        processes=sorted(
            (_process_row(proc, now) for proc in gpu.processes),
            key=lambda row: -row.memory_mib,
        ),
        processes_note=gpu.processes_note,
        mig=[
            {
                "id": f"GI {mig.gpu_instance_id}"
                + (
                    f" / CI {mig.compute_instance_id}"
                    if mig.compute_instance_id is not None
                    else ""
                ),
                "name": mig.name or "MIG instance",
                "memory": f"{fmt.mib(mig.memory_used)} of {fmt.mib(mig.memory_total)}",
                "percent": str(bar(mig.memory_used, mig.memory_total)),
                "sms": str(mig.sm_count) if mig.sm_count is not None else fmt.DASH,
            }
            for mig in gpu.mig_instances
        ],
        vendor=gpu.vendor.upper() if gpu.vendor and gpu.vendor != "nvidia" else None,
        pcie=pcie_view(gpu),
    )


def _link(gen: int | None, width: int | None) -> str:
    words = [f"Gen {gen}" if gen is not None else "", f"x{width}" if width is not None else ""]
    return " ".join(word for word in words if word) or fmt.DASH


def pcie_view(gpu: GpuSample) -> PcieView:
    """The GPU's PCIe detail (throughput is read only now and then, or while it is open)."""
    pcie = gpu.pcie
    link = _link(pcie.gen_current, pcie.width_current)
    if pcie.gen_max is not None or pcie.width_max is not None:
        link = f"{link} (max {_link(pcie.gen_max, pcie.width_max)})"
    return PcieView(
        rx=fmt.rate(pcie.rx_bytes_per_s),
        tx=fmt.rate(pcie.tx_bytes_per_s),
        link=link,
        replays=fmt.DASH if pcie.replay_counter is None else f"{pcie.replay_counter:,}",
        missing=_missing(gpu, "pcie_rx_bytes_per_s", "pcie_tx_bytes_per_s"),
    )


# --- the banner: why is it busy ----------------------------------------------------------------


def is_busy(gpu: GpuSample) -> bool:
    if gpu.state == GPU_LOST:
        return False
    if gpu.utilization is not None and gpu.utilization >= BUSY_UTILIZATION:
        return True
    used_by_processes = sum(p.used_memory_mib or 0 for p in gpu.processes)
    return bool(gpu.memory_total) and 100 * used_by_processes / gpu.memory_total >= (
        BUSY_MEMORY_PERCENT
    )


def _main_process(gpu: GpuSample) -> GpuProcess | None:
    """The process most likely behind the load: highest SM %, then most memory."""
    if not gpu.processes:
        return None
    return max(
        gpu.processes,
        key=lambda p: (p.sm_utilization or 0, p.used_memory_mib or 0),
    )


def busy_line(gpu: GpuSample, now: datetime) -> str:
    """``GPU 0 at 100 %: python3 train.py (alice, container llm-train), 3.6 GiB, for 2 h 14 min``."""
    head = f"GPU {gpu.index} at {fmt.percent(gpu.utilization)}"
    proc = _main_process(gpu)
    if proc is None:
        why = gpu.processes_note or "no process is listed by the driver"
        return f"{head}: {why}"
    who = ", ".join(part for part in (proc.user, container_label(proc)) if part)
    text = f"{head}: {short_command(proc)}" + (f" ({who})" if who else "")
    if proc.used_memory_mib is not None:
        text += f", {fmt.mib(proc.used_memory_mib)}"
    if proc.start_time is not None:
        text += f", for {human_duration((now - proc.start_time).total_seconds())}"
    elif proc.first_seen is not None:
        text += f", seen since {_clock_time(proc.first_seen, now)}"
    others = len(gpu.processes) - 1
    if others > 0:
        text += f" (+{others} more process{'es' if others > 1 else ''})"
    return text


def banner(snapshot: Snapshot) -> list[BannerLine]:
    """One line per busy GPU; one line for all idle ones; the reason when there is no GPU."""
    now = snapshot.timestamp
    driver = snapshot.driver
    if driver.status == STATUS_ERROR and not snapshot.gpus:
        return [BannerLine(driver.message or "The GPU driver did not answer.", "warn")]
    if driver.status == STATUS_NO_GPU or not snapshot.gpus:
        return [
            BannerLine(
                f"No NVIDIA GPU found on {snapshot.host.hostname}: showing the host only. "
                "To see a real H100 under load, run ./scripts/run --demo.",
                "info",
            )
        ]
    lines = []
    for gpu in snapshot.gpus:
        if gpu.state == GPU_LOST:
            lines.append(
                BannerLine(f"GPU {gpu.index} is lost: {gpu.lost_reason or 'no answer'}", "warn")
            )
        elif is_busy(gpu):
            text = busy_line(gpu, now)
            slow = [
                REASON_LABELS.get(r, r)
                for r in gpu.clock_event_reasons or []
                if r in SLOWDOWN_REASONS
            ]
            if slow:
                text += f"; slowed by {', '.join(slow)}"
            lines.append(BannerLine(text, "busy"))
    idle = [g for g in snapshot.gpus if g.state != GPU_LOST and not is_busy(g)]
    if idle:
        hottest = max((g.temperature for g in idle if g.temperature is not None), default=None)
        hot = f", hottest {fmt.celsius(hottest)}" if hottest is not None else ""
        if len(idle) == len(snapshot.gpus):
            count = "The GPU is" if len(idle) == 1 else f"All {len(idle)} GPUs"
            lines.append(BannerLine(f"{count} idle{hot}", "idle"))
        else:
            names = ", ".join(str(g.index) for g in idle)
            lines.append(BannerLine(f"GPU {names} idle{hot}", "idle"))
    return lines


# --- processes, users, host -------------------------------------------------------------------


def memory_by_user(snapshot: Snapshot) -> list[UserMemory]:
    """GPU memory summed per user over every GPU, biggest first."""
    totals: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for proc in snapshot.processes:
        user = proc.user or "?"
        totals[user] += proc.used_memory_mib or 0
        counts[user] += 1
    total_memory = sum(g.memory_total or 0 for g in snapshot.gpus)
    return [
        UserMemory(user, fmt.mib(mib), counts[user], bar(mib, total_memory))
        for user, mib in sorted(totals.items(), key=lambda item: -item[1])
    ]


def host_view(snapshot: Snapshot) -> HostView:
    system = snapshot.system
    info = snapshot.host
    cores = info.cores or len(system.cpu_per_core) or 1
    load = system.load_average
    uptime = system.uptime
    return HostView(
        name=info.hostname,
        os=info.os,
        cpu_model=info.cpu_model or "",
        cores=cores,
        cpu=Figure(
            "CPU",
            fmt.percent(system.cpu_usage),
            f"{cores} cores",
            bar(system.cpu_usage, 100),
            level(system.cpu_usage, 80, 90),
        ),
        per_core=[
            Figure(f"core {n}", fmt.percent(value), "", bar(value, 100), level(value, 80, 95))
            for n, value in enumerate(system.cpu_per_core)
        ],
        memory=Figure(
            "Memory",
            fmt.mib(system.memory_used),
            f"of {fmt.mib(system.memory_total)}",
            bar(system.memory_usage, 100),
            level(system.memory_usage, 90, 95),
        ),
        swap=Figure(
            "Swap",
            fmt.mib(system.swap_used) if system.swap_total else "none",
            f"of {fmt.mib(system.swap_total)}" if system.swap_total else "",
            bar(system.swap_usage, 100),
            level(system.swap_usage, 50, 80) if system.swap_total else "none",
        ),
        load=Figure(
            "Load",
            f"{load[0]:.2f}" if load else fmt.DASH,
            f"{cores} cores",
            bar(load[0], cores) if load else 0,
            level(load[0], cores, 2 * cores) if load else "none",
        ),
        load_values=" · ".join(f"{v:.2f}" for v in load) if load else fmt.DASH,
        disk_read=fmt.rate(system.disk_read_bytes_per_s),
        disk_write=fmt.rate(system.disk_write_bytes_per_s),
        net_recv=fmt.rate(system.net_recv_bytes_per_s),
        net_sent=fmt.rate(system.net_sent_bytes_per_s),
        uptime=human_duration(uptime) if uptime is not None else fmt.DASH,
        temperatures=[
            Figure(
                f"{t.sensor} {t.label}".strip(),
                fmt.celsius(t.current),
                "",
                bar(t.current, t.critical or t.high or 100),
                level(t.current, t.high or 80, t.critical or 95),
            )
            for t in system.temperatures[:8]
        ],
        disks=[
            Figure(
                d.mountpoint,
                f"{d.percent:.0f} %",
                f"{fmt.mib(d.used)} of {fmt.mib(d.total)}",
                bar(d.percent, 100),
                level(d.percent, 85, 95),
            )
            for d in system.disks[:6]
        ],
        top=[
            {
                "pid": str(p.pid),
                "name": p.name,
                "user": p.user or "?",
                "cpu": fmt.percent(p.cpu_percent),
                "memory": fmt.mib(p.memory_rss),
                "command": clip(p.command or p.name or ""),
            }
            for p in system.top_processes[:8]
        ],
    )


def view(snapshot: Snapshot, host: str | None = None) -> View:
    """The whole view of one snapshot."""
    now = snapshot.timestamp
    cards = [gpu_card(gpu, now) for gpu in snapshot.gpus]
    temps = [g.temperature for g in snapshot.gpus if g.temperature is not None]
    driver = snapshot.driver
    driver_text = " · ".join(
        part
        for part in (
            f"driver {driver.driver_version}" if driver.driver_version else "",
            f"CUDA {driver.cuda_version}" if driver.cuda_version else "",
        )
        if part
    )
    return View(
        host=host or snapshot.host.hostname,
        timestamp=now,
        source=driver.source,
        driver=driver_text,
        status=driver.status,
        driver_message=driver.message,
        messages=list(snapshot.messages),
        banner=banner(snapshot),
        gpus=cards,
        processes=[row for card in cards for row in card.processes],
        users=memory_by_user(snapshot),
        system=host_view(snapshot),
        gpu_count=len(snapshot.gpus),
        busy_count=sum(1 for g in snapshot.gpus if is_busy(g)),
        hottest=fmt.celsius(max(temps)) if temps else fmt.DASH,
    )
