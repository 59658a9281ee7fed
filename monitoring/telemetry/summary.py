"""A few plain lines per snapshot for the terminal (``collect`` without ``--json``)."""

from __future__ import annotations

from monitoring.telemetry import format as fmt
from monitoring.telemetry.schema import GPU_LOST, Snapshot


def notice_lines(snapshot: Snapshot) -> list[str]:
    """Why there is no GPU, and why better sources were passed over: the same every tick
    until something changes."""
    lines = [f"  {snapshot.driver.message}"] if snapshot.driver.message else []
    return lines + [f"  note: {message}" for message in snapshot.messages]


def summary_lines(snapshot: Snapshot, *, notices: bool = True) -> list[str]:
    """The snapshot in a few lines: host, then each GPU and its processes, then the notices
    (left out with ``notices=False``)."""
    system = snapshot.system
    load = (
        " ".join(f"{value:.2f}" for value in system.load_average)
        if system.load_average
        else fmt.DASH
    )
    lines = [
        f"{snapshot.timestamp:%H:%M:%S} {snapshot.host.hostname} [{snapshot.driver.source}]"
        f" cpu {fmt.percent(system.cpu_usage)} mem {fmt.percent(system.memory_usage)} load {load}"
        f" net ↓{fmt.rate(system.net_recv_bytes_per_s)} ↑{fmt.rate(system.net_sent_bytes_per_s)}"
    ]
    for gpu in snapshot.gpus:
        if gpu.state == GPU_LOST:
            lines.append(f"  GPU {gpu.index} {gpu.name or ''}: LOST ({gpu.lost_reason})")
            continue
        # The maker is said only where it is not NVIDIA (nvtop also lists AMD, Intel, Apple …).
        maker = f" ({gpu.vendor})" if gpu.vendor and gpu.vendor != "nvidia" else ""
        lines.append(
            f"  GPU {gpu.index} {gpu.name or 'unnamed'}{maker}: util {fmt.percent(gpu.utilization)}"
            f" mem {fmt.mib(gpu.memory_used)}/{fmt.mib(gpu.memory_total)}"
            f" {fmt.celsius(gpu.temperature)} {fmt.watts(gpu.power_usage)}/{fmt.watts(gpu.power_limit)}"
            f" fan {fmt.percent(gpu.fan_speed)} sm {fmt.mhz(gpu.clocks.sm)} {gpu.performance_state or ''}"
        )
        for proc in gpu.processes:
            lines.append(
                f"    pid {proc.pid} {proc.user or '?'} {proc.name or '?'} {fmt.mib(proc.used_memory_mib)}"
                f" sm {fmt.percent(proc.sm_utilization)}"
                + (
                    f" [{proc.container.runtime} {proc.container.name or proc.container.id or ''}]"
                    if proc.container
                    else ""
                )
            )
        if gpu.processes_note:
            lines.append(f"    {gpu.processes_note}")
    if notices:
        lines[1:1] = notice_lines(snapshot)
    return lines


class SummaryPrinter:
    """Summaries for a terminal that gets one every tick (``collect --print``): the notices
    once, and again only when they change, so a machine without a GPU does not repeat the
    same four lines every second."""

    def __init__(self) -> None:
        self._notices: list[str] | None = None

    def lines(self, snapshot: Snapshot) -> list[str]:
        lines = summary_lines(snapshot, notices=False)
        notices = notice_lines(snapshot)
        if notices != self._notices:
            first, self._notices = self._notices is None, notices
            if notices:
                lines[1:1] = notices
            elif not first:
                lines.insert(1, "  (the notices above no longer apply)")
        return lines
