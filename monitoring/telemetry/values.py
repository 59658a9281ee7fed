"""Read one textual figure as nvidia-smi or nvtop writes it: a number, or why there is none.

Real outputs across drivers 350-610 write a missing figure in many ways (``N/A``,
``[N/A]``, ``[Not Supported]``, ``ERR!``, deprecation notices …) and put units inside
values (``698.59 W``, ``81559 MiB``, ``16x``). Every parser reads figures through here so
the same spelling means the same thing everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitoring.telemetry.schema import NOT_REPORTED, NOT_SUPPORTED, UNIFIED_MEMORY, GpuSample


@dataclass(frozen=True, slots=True)
class Missing:
    """A figure the source did not give, and why."""

    reason: str

    def __bool__(self) -> bool:
        return False


_MISSING_SPELLINGS: dict[str, str] = {
    "n/a": NOT_REPORTED,
    "[n/a]": NOT_REPORTED,
    "n\\a": NOT_REPORTED,  # sic: NVIDIA's nvidia_smi.py (nvidia-ml-py) writes N\A for memory
    "na": NOT_REPORTED,
    "none": NOT_REPORTED,
    "": NOT_REPORTED,
    "-": NOT_REPORTED,
    "[not supported]": NOT_SUPPORTED,
    "not supported": NOT_SUPPORTED,
    "[notsupported]": NOT_SUPPORTED,
    "err!": "the driver reported an error reading this value",
    "[err!]": "the driver reported an error reading this value",
    "[unknown error]": "the driver reported an unknown error",
    "unknown error": "the driver reported an unknown error",
    "[insufficient permissions]": "insufficient permissions to read this value",
    "insufficient permissions": "insufficient permissions to read this value",
    "[gpu is lost]": "the GPU is lost",
    "gpu is lost": "the GPU is lost",
    "[gpu requires reset]": "the GPU requires a reset",
    "unknown": NOT_REPORTED,
    "[unknown]": NOT_REPORTED,
}
_DEPRECATED = re.compile(r"deprecated", re.IGNORECASE)

# A number, optionally signed/decimal, then an optional unit (%, W, MiB, MHz, C, x, KB/s …).
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z%/°]*)\s*$")
_HEX = re.compile(r"^\s*0x([0-9a-fA-F]+)\s*$")

# Conversions into the schema's units, keyed by the unit text a source writes.
_SCALE_TO_MIB = {
    "b": 1 / 1048576,
    "kib": 1 / 1024,
    "kb": 1 / 1024,
    "mib": 1.0,
    "mb": 1.0,
    "gib": 1024.0,
    "gb": 1024.0,
}


def missing_reason(text: str | None) -> str | None:
    """The reason a raw value is a missing figure, or None if it may hold one."""
    if text is None:
        return NOT_REPORTED
    key = text.strip().lower()
    if key in _MISSING_SPELLINGS:
        return _MISSING_SPELLINGS[key]
    if _DEPRECATED.search(key):
        return "deprecated by this driver"
    return None


def number(text: str | None) -> float | Missing:
    """``'698.59 W'`` -> 698.59; ``'[N/A]'`` -> Missing. Raises ValueError on garbage."""
    reason = missing_reason(text)
    if reason is not None:
        return Missing(reason)
    assert text is not None
    match = _NUMBER.match(text)
    if match:
        return float(match.group(1))
    hex_match = _HEX.match(text)
    if hex_match:
        return float(int(hex_match.group(1), 16))
    raise ValueError(f"not a number: {text!r}")


def integer(text: str | None) -> int | Missing:
    value = number(text)
    return value if isinstance(value, Missing) else round(value)


def mebibytes(text: str | None, default_unit: str = "mib") -> int | Missing:
    """A memory figure in MiB whatever unit it was written in."""
    reason = missing_reason(text)
    if reason is not None:
        return Missing(reason)
    assert text is not None
    match = _NUMBER.match(text)
    if not match:
        raise ValueError(f"not a memory size: {text!r}")
    unit = (match.group(2) or default_unit).lower()
    if unit not in _SCALE_TO_MIB:
        raise ValueError(f"unknown memory unit in {text!r}")
    return round(float(match.group(1)) * _SCALE_TO_MIB[unit])


def hex_mask(text: str | None) -> int | Missing:
    """A bit mask such as ``0x0000000000000004``."""
    reason = missing_reason(text)
    if reason is not None:
        return Missing(reason)
    assert text is not None
    match = _HEX.match(text)
    if match:
        return int(match.group(1), 16)
    raise ValueError(f"not a hexadecimal mask: {text!r}")


def text_value(text: str | None) -> str | Missing:
    reason = missing_reason(text)
    if reason is not None:
        return Missing(reason)
    assert text is not None
    return text.strip()


def flag(text: str | None) -> bool | Missing:
    """``Enabled``/``Disabled``, ``On``/``Off``, ``Active``/``Not Active``, ``Yes``/``No``."""
    value = text_value(text)
    if isinstance(value, Missing):
        return value
    lowered = value.lower()
    if lowered in {"enabled", "on", "active", "yes", "true", "1"}:
        return True
    if lowered in {"disabled", "off", "not active", "no", "false", "0"}:
        return False
    raise ValueError(f"not an on/off value: {text!r}")


_MEMORY_FIELDS = ("memory_total", "memory_used", "memory_free", "memory_reserved")


def note_unified_memory(gpu: GpuSample) -> None:
    """A GPU that answers but has no memory total shares the host's memory (DGX Spark's
    GB10, Jetson): nvidia-smi prints N/A for each framebuffer figure, and "not reported"
    would hide why. Each such figure gets the unified-memory reason instead."""
    if gpu.memory_total is not None or gpu.unsupported.get("memory_total") != NOT_REPORTED:
        return
    for field in _MEMORY_FIELDS:
        if getattr(gpu, field) is None and gpu.unsupported.get(field) == NOT_REPORTED:
            gpu.unsupported[field] = UNIFIED_MEMORY
