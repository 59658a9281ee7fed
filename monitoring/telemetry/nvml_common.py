"""What the parts of the NVML source share: bytes to MiB as nvidia-smi rounds them, and the
reason a figure is missing when its call raised something that is not an NVML error."""

from __future__ import annotations

READ_FAILED = "reading failed"
_MIB_HALF = 1 << 19


def mib(n: int) -> int:
    """Bytes -> MiB, rounded to the nearest (as nvidia-smi prints them)."""
    return (n + _MIB_HALF) >> 20


def failed_call(exc: Exception) -> str:
    """Why a figure is missing when its call raised something other than an NVML error."""
    return f"{READ_FAILED}: {exc!r}"
