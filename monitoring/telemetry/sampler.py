"""Assemble one Snapshot from the GPU source, the host sampler and process attribution.

The sampler owns no loop and no clock: the worker (or ``collect --once``) decides which
tiers a tick wants and calls :meth:`Sampler.sample`. A GPU source failing mid-run turns
into a reading that says so; the host part of the snapshot always goes on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from monitoring.telemetry.schema import (
    STATUS_ERROR,
    DriverInfo,
    GpuReading,
    HostInfo,
    Snapshot,
)
from monitoring.telemetry.sources import GpuSource

log = logging.getLogger(__name__)


class Sampler:
    """One snapshot per call, from whichever GPU source was opened (or none)."""

    def __init__(
        self,
        gpu_source: GpuSource | None,
        *,
        host_info: HostInfo,
        host_sampler,
        attributor=None,
        no_source: DriverInfo,
        notes: list[str] | None = None,
    ) -> None:
        self.gpu_source = gpu_source
        self.host_info = host_info
        self.host_sampler = host_sampler
        self.attributor = attributor
        self.no_source = no_source
        # Why the better sources were passed over; shown once per snapshot so users see it.
        self.notes = list(notes or [])

    def use_source(
        self, source: GpuSource | None, *, no_source: DriverInfo, notes: list[str]
    ) -> GpuSource | None:
        """Read from ``source`` from now on (a reopened driver, a GPU that appeared);
        returns the previous source, which the caller closes."""
        old, self.gpu_source = self.gpu_source, source
        self.no_source = no_source
        self.notes = list(notes)
        return old

    def want_pcie(self, seconds: float = 30.0, gpu: str | None = None) -> bool:
        """Someone looks at PCIe throughput (a GPU's detail, a /metrics scrape): a source
        that reads it only now and then (NVML, replay) reads it on every slow tick for
        ``seconds``, for the GPU with UUID ``gpu`` (None: all); the others read it anyway.
        False when the source knows no such GPU (or there is no source). Any thread."""
        source = self.gpu_source
        if source is None:
            return False
        want = getattr(source, "want_pcie", None)
        return True if want is None else bool(want(seconds, gpu))

    @property
    def source_name(self) -> str:
        return self.gpu_source.name if self.gpu_source else self.no_source.source

    def read_gpus(self, *, processes: bool, slow: bool) -> GpuReading:
        if self.gpu_source is None:
            return GpuReading(driver=self.no_source)
        try:
            reading = self.gpu_source.read(processes=processes, slow=slow)
        except Exception as exc:  # a source must not take the host monitoring down with it
            log.exception("GPU source %s failed", self.gpu_source.name)
            return GpuReading(
                driver=DriverInfo(
                    source=self.gpu_source.name,
                    status=STATUS_ERROR,
                    message=f"{self.gpu_source.name} failed: {exc}",
                )
            )
        if processes and self.attributor is not None and not self.gpu_source.attributes_processes:
            self.attributor.attribute(reading.gpus)
        return reading

    def sample(
        self,
        *,
        processes: bool = True,
        slow: bool = True,
        top_processes: bool | None = None,
        now: datetime | None = None,
    ) -> Snapshot:
        timestamp = now or datetime.now(UTC)
        reading = self.read_gpus(processes=processes, slow=slow)
        system = self.host_sampler.sample(
            top_processes=processes if top_processes is None else top_processes, slow=slow
        )
        return Snapshot(
            timestamp=timestamp,
            host=self.host_info,
            driver=reading.driver,
            gpus=reading.gpus,
            system=system,
            messages=[*self.notes, *reading.messages],
        )

    def close(self) -> None:
        if self.gpu_source is not None:
            self.gpu_source.close()
