"""What every GPU source offers the sampler, whatever it talks to underneath.

A source is opened once and read every tick. Tiers keep the hot path cheap: ``read``
is told whether this tick also wants the process list (every ~2 s) and the slow figures
(PCIe throughput, energy, ECC, max clocks: every ~10 s). On other ticks a source repeats
its last slow figures rather than leaving them empty.
"""

from __future__ import annotations

from typing import Protocol

from monitoring.telemetry.schema import GpuReading


class GpuSource(Protocol):
    #: One of schema.SOURCES.
    name: str
    #: True when the source fills process user/command/container itself (replay does, from
    #: the capture); otherwise the sampler attributes processes from this host's /proc.
    attributes_processes: bool

    def read(self, *, processes: bool = True, slow: bool = True) -> GpuReading:
        """One reading. Never raises for a lost GPU (that GPU is marked lost instead)."""
        ...

    def close(self) -> None:
        """Release the library or child process. Safe to call twice."""
        ...
