"""What changed between two snapshots that deserves a line in the event log. Pure.

A GPU falling off the bus, coming back, a new board appearing (hot-plug), one disappearing,
a driver upgrade, the GPU source breaking: each is one :class:`EventRecord`, made by
comparing the previous snapshot with the current one. GPUs are matched by UUID (their
index can change across a reboot or a reload); a source that gives no UUID falls back to
the PCI bus id, then the index.

:class:`EventTracker` is the small memory the worker needs around :func:`detect_events`:
while the source is broken a snapshot lists no GPUs at all, and comparing against it would
announce every GPU as removed and then added again; the tracker compares against the last
snapshot in which the source worked instead.
"""

from __future__ import annotations

from monitoring.records import EventKind, EventRecord
from monitoring.telemetry.schema import GPU_LOST, STATUS_ERROR, GpuSample, Snapshot


def gpu_key(gpu: GpuSample) -> str:
    """The identity of a GPU across snapshots: UUID, else PCI bus id, else index."""
    return gpu.identity


def _label(gpu: GpuSample) -> str:
    name = f" ({gpu.name})" if gpu.name else ""
    return f"GPU {gpu.index}{name}"


def _gpu_data(gpu: GpuSample) -> dict[str, object]:
    return {"index": gpu.index, "name": gpu.name, "pciBusId": gpu.pci_bus_id}


def _source_broken(snapshot: Snapshot) -> bool:
    return snapshot.driver.status == STATUS_ERROR


def detect_events(previous: Snapshot | None, current: Snapshot) -> list[EventRecord]:
    """The events between two snapshots of one host (none for the first snapshot)."""
    at = current.timestamp
    events: list[EventRecord] = []
    if _source_broken(current):
        if previous is None or not _source_broken(previous):
            events.append(
                EventRecord(
                    time=at,
                    kind=EventKind.SOURCE_ERROR,
                    message=current.driver.message or f"the {current.driver.source} source failed",
                    data={"source": current.driver.source},
                )
            )
        return events  # no GPU list to compare: the tracker keeps the last good one
    if previous is None:
        return events

    old_driver, new_driver = previous.driver.driver_version, current.driver.driver_version
    if old_driver and new_driver and old_driver != new_driver:
        events.append(
            EventRecord(
                time=at,
                kind=EventKind.DRIVER_CHANGED,
                message=f"NVIDIA driver changed from {old_driver} to {new_driver}",
                data={
                    "from": old_driver,
                    "to": new_driver,
                    "cudaFrom": previous.driver.cuda_version,
                    "cudaTo": current.driver.cuda_version,
                },
            )
        )

    before = {gpu_key(gpu): gpu for gpu in previous.gpus}
    after = {gpu_key(gpu): gpu for gpu in current.gpus}
    for key, gpu in after.items():
        old = before.get(key)
        if old is None:
            events.append(
                EventRecord(
                    time=at,
                    kind=EventKind.GPU_ADDED,
                    message=f"{_label(gpu)} appeared",
                    gpu_uuid=gpu.uuid,
                    data=_gpu_data(gpu),
                )
            )
            if gpu.state == GPU_LOST:
                events.append(_lost(gpu, at))
        elif gpu.state == GPU_LOST and old.state != GPU_LOST:
            events.append(_lost(gpu, at))
        elif gpu.state != GPU_LOST and old.state == GPU_LOST:
            events.append(
                EventRecord(
                    time=at,
                    kind=EventKind.GPU_FOUND,
                    message=f"{_label(gpu)} is answering again",
                    gpu_uuid=gpu.uuid,
                    data=_gpu_data(gpu),
                )
            )
    for key, gpu in before.items():
        if key not in after:
            events.append(
                EventRecord(
                    time=at,
                    kind=EventKind.GPU_REMOVED,
                    message=f"{_label(gpu)} is no longer reported",
                    gpu_uuid=gpu.uuid,
                    data=_gpu_data(gpu),
                )
            )
    return events


def _lost(gpu: GpuSample, at) -> EventRecord:
    reason = gpu.lost_reason or "no reason given"
    return EventRecord(
        time=at,
        kind=EventKind.GPU_LOST,
        message=f"{_label(gpu)} stopped answering: {reason}",
        gpu_uuid=gpu.uuid,
        data={**_gpu_data(gpu), "reason": reason},
    )


class EventTracker:
    """Feeds :func:`detect_events` the right previous snapshot, tick after tick."""

    def __init__(self) -> None:
        self.last: Snapshot | None = None  # the previous snapshot, whatever it said
        self.last_good: Snapshot | None = None  # the last one in which the source worked

    def update(self, current: Snapshot) -> list[EventRecord]:
        if _source_broken(current):
            events = detect_events(self.last, current)
        else:
            events = detect_events(self.last_good, current)
            self.last_good = current
        self.last = current
        return events
