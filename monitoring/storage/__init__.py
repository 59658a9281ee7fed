"""Durable storage of what the worker samples: batched writes through a bounded buffer.

``SnapshotStore`` (in :mod:`.writer`) is what the worker uses; it is exported lazily so the
plain-Python parts (:mod:`.buffer`, :mod:`.sessions`) import without Django settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitoring.storage.writer import FlushResult, SnapshotStore

__all__ = ["FlushResult", "SnapshotStore"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from monitoring.storage import writer

        return getattr(writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
