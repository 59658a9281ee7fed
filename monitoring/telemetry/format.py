"""Format figures for people, the same way in the terminal and in the browser."""

from __future__ import annotations

DASH = "—"


def mib(value: float | None) -> str:
    """MiB -> ``'4.6 GiB'`` / ``'512 MiB'``."""
    if value is None:
        return DASH
    if abs(value) >= 1024:
        return f"{value / 1024:.1f} GiB"
    return f"{value:.0f} MiB"


def percent(value: float | None, digits: int = 0) -> str:
    return DASH if value is None else f"{value:.{digits}f} %"


def watts(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f} W"


def celsius(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f} °C"


def mhz(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f} MHz"


def rate(bytes_per_s: float | None) -> str:
    if bytes_per_s is None:
        return DASH
    for unit in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if abs(bytes_per_s) < 1024 or unit == "GiB/s":
            return f"{bytes_per_s:.0f} {unit}" if unit == "B/s" else f"{bytes_per_s:.1f} {unit}"
        bytes_per_s /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """``'3d 4h'``, ``'5h 12m'``, ``'4m 10s'``."""
    if seconds is None:
        return DASH
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
