"""Time helpers shared by storage, the history query and the API.

Every stored time is UTC; buckets are aligned to the Unix epoch. Raw SQL gets datetimes the
way the backend stores them (SQLite: naive UTC text) and gives them back as aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (as the database stores it)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def floor_time(moment: datetime, seconds: int) -> datetime:
    """Start of the ``seconds``-wide bucket (aligned to the Unix epoch) holding ``moment``."""
    step = timedelta(seconds=seconds)
    return EPOCH + ((as_utc(moment) - EPOCH) // step) * step


def db_time(moment: datetime) -> Any:
    """A datetime as the backend stores it (SQLite: naive UTC text), for raw SQL parameters."""
    return connection.ops.adapt_datetimefield_value(as_utc(moment))


def from_db_time(value: datetime | str | None) -> datetime | None:
    """A datetime read by raw SQL (SQLite gives text) as aware UTC."""
    if value is None:
        return None
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)
