"""What the worker needs from each of its collaborators, as small Protocols.

The worker is handed its sampler, store, publisher, lock and alert evaluator (the collect
command wires the real ones; tests hand real ones or small stand-ins). These say which calls
and figures the worker relies on, so a stand-in or a new implementation knows what to give.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from monitoring.records import AlertRecord, EventRecord
from monitoring.telemetry.schema import DriverInfo, Snapshot
from monitoring.telemetry.sources import GpuSource


@runtime_checkable
class SnapshotSampler(Protocol):
    """``monitoring.telemetry.sampler.Sampler``: one snapshot per call."""

    @property
    def source_name(self) -> str: ...

    def sample(self, *, processes: bool, slow: bool, top_processes: bool) -> Snapshot: ...

    def use_source(
        self, source: GpuSource | None, *, no_source: DriverInfo, notes: list[str]
    ) -> GpuSource | None: ...


class PcieWanter(Protocol):
    """``Sampler.want_pcie``: read PCIe throughput for ``seconds`` (``gpu`` None: every GPU);
    False for a GPU this host does not have."""

    def want_pcie(self, seconds: float = 30.0, gpu: str | None = None) -> bool: ...


@runtime_checkable
class WriteResult(Protocol):
    """``monitoring.storage.writer.FlushResult``: what one write did."""

    error: str | None
    written_snapshots: int
    pending: int


@runtime_checkable
class Store(Protocol):
    """``monitoring.storage.writer.SnapshotStore``: queues in memory, writes on ``flush``."""

    @property
    def capacity(self) -> int: ...  # snapshots the buffer holds while the database is away

    @property
    def pending(self) -> int: ...  # snapshots queued

    @property
    def pending_records(self) -> int: ...  # events and alert changes queued

    @property
    def dropped_total(self) -> int: ...  # snapshots dropped from a full buffer, ever

    def add(self, snapshot: Snapshot) -> None: ...

    def add_event(self, event: EventRecord) -> None: ...

    def add_alert(self, alert: AlertRecord) -> None: ...

    def flush(self, *, max_snapshots: int = ...) -> WriteResult: ...

    def stopping(self) -> None: ...


@runtime_checkable
class Publisher(Protocol):
    """``monitoring.worker.publish.SnapshotPublisher``: live updates, never blocking."""

    def publish(
        self,
        snapshot: Snapshot,
        *,
        alerts: list[AlertRecord] | None = None,
        events: list[EventRecord] | None = None,
    ) -> bool: ...

    def listen_for_wants(self, sampler: Any) -> Any: ...  # the dashboard's asks, to sampler

    def close(self) -> None: ...


@runtime_checkable
class HostLock(Protocol):
    """``monitoring.worker.lock.WorkerLock``, already acquired: kept while writing."""

    last_error: str | None

    def ensure(self) -> bool: ...  # raises LockLost when another worker took it


@runtime_checkable
class Evaluator(Protocol):
    """``monitoring.alerting.evaluator.AlertEvaluator``: opens, escalates, clears alerts."""

    @property
    def active(self) -> Sequence[AlertRecord]: ...

    def evaluate(self, snapshot: Snapshot, now: datetime | None = None) -> list[AlertRecord]: ...

    def update_rules(self, rules: Any) -> None: ...
