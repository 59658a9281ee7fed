"""Plain records the worker hands to storage: events and alert changes.

They carry names (host, GPU UUID) instead of database rows, so they can be made while the
database is away and written when it is back. No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class EventRecord:
    """Something that happened once (kinds: monitoring.models.Event constants)."""

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
