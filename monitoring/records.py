"""Plain records the worker hands to storage: events and alert changes.

They carry names (host, GPU UUID) instead of database rows, so they can be made while the
database is away and written when it is back. No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What an event says happened: the ``kind`` stored on ``monitoring.models.Event``."""

    GPU_LOST = "gpu_lost"
    GPU_FOUND = "gpu_found"
    GPU_ADDED = "gpu_added"
    GPU_REMOVED = "gpu_removed"
    DRIVER_CHANGED = "driver_changed"
    SOURCE_ERROR = "source_error"
    WORKER_STARTED = "worker_started"
    WORKER_STOPPED = "worker_stopped"
    SAMPLES_DROPPED = "samples_dropped"

    @property
    def label(self) -> str:
        """How admin and the event log name it."""
        return _EVENT_LABELS[self]


_EVENT_LABELS = {
    EventKind.GPU_LOST: "GPU lost",
    EventKind.GPU_FOUND: "GPU found again",
    EventKind.GPU_ADDED: "GPU added",
    EventKind.GPU_REMOVED: "GPU removed",
    EventKind.DRIVER_CHANGED: "driver changed",
    EventKind.SOURCE_ERROR: "GPU source error",
    EventKind.WORKER_STARTED: "worker started",
    EventKind.WORKER_STOPPED: "worker stopped",
    EventKind.SAMPLES_DROPPED: "samples dropped",
}


@dataclass(slots=True)
class EventRecord:
    """Something that happened once (``kind``: an :class:`EventKind`)."""

    time: datetime
    kind: str
    message: str
    gpu_uuid: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class AlertRecord:
    """The current state of one alert; sent again whenever it changes (escalates, clears).

    ``key`` identifies one alert occurrence from opening to clearing, so storage can
    insert it the first time and update the same row afterwards.
    """

    key: str
    rule: str  # "threshold" | "unexpected_user"
    metric: str
    severity: str  # "warning" | "critical"
    started_at: datetime
    message: str
    value: float | None = None
    peak_value: float | None = None
    ended_at: datetime | None = None
    gpu_uuid: str | None = None
    threshold_id: int | None = None
    pid: int | None = None
