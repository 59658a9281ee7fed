"""The newest snapshot of each host, kept in the database for processes that did not take it.

The worker writes it with each flush (one row per host, replaced), so a web process that has
not heard a live message yet (just started, or a viewer polling over HTTP, or the overview
of several hosts) still shows the latest figures and, from their age, whether the collector
is running at all.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from monitoring.models import LatestSnapshot
from monitoring.telemetry import serialize
from monitoring.telemetry.schema import Snapshot


def write_latest(
    host_id: int, snapshot: Snapshot, worker: dict[str, Any] | None = None, using: str = "default"
) -> None:
    """Replace the host's latest snapshot (inside the caller's transaction)."""
    LatestSnapshot.objects.using(using).update_or_create(
        host_id=host_id,
        defaults={
            "time": snapshot.timestamp,
            "data": serialize.to_data(snapshot),
            "worker": worker or {},
            "updated_at": datetime.now(UTC),
        },
    )


def latest_snapshots(
    host: str | None = None, using: str = "default", among: Collection[str] | None = None
) -> list[LatestSnapshot]:
    """Each host's latest snapshot row (one query, ordered by host name); ``host`` keeps one,
    ``among`` those of these hosts.

    Rows carry their ``host`` (selected with them), ``time``, ``data`` and ``worker``.
    """
    rows = LatestSnapshot.objects.using(using).select_related("host").order_by("host__name")
    if host is not None:
        rows = rows.filter(host__name=host)
    if among is not None:
        rows = rows.filter(host__name__in=list(among))
    return list(rows)


def latest_times(hosts: Collection[str], using: str = "default") -> dict[str, datetime]:
    """Host name -> when its newest stored sample was taken, for ``hosts`` (one query that
    reads no snapshot data: a page asks it every second of hosts it hears nothing live from)."""
    rows = LatestSnapshot.objects.using(using).filter(host__name__in=list(hosts))
    return dict(rows.values_list("host__name", "time"))
