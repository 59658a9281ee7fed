"""What alerts a host's page shows: the one place that weighs the worker's live word and the
database's ``Alert`` rows.

Two sources say what alerts a host has. The worker's live message carries the alerts open on
that tick and those it closed on it (the close record is the very row it writes, end time
included); the database has the rows the worker wrote (up to a flush later). Either may fall
silent or lag: Redis away, a message dropped, a flush not written yet, a page opened when the
hub last heard the host long ago. So silence never clears an alert. An alert is shown open
while the worker's latest word or the database says it is open, and cleared only once one of
them says it ended, at the end time it gives. An alert shown open that the worker's latest
message no longer carries is *unconfirmed*: the hub reads the database again
(:attr:`HostAlerts.recheck`), and the database's answer stands.

Rows (what ``templates/dashboard/fragments/alerts.html`` reads)::

    {"key": str, "severity": "warning" | "critical", "message": str, "rule": str,
     "metric": str, "started": datetime | None, "ended": datetime | None, "active": bool}

An alert is one *occurrence*, ``(key, started)``: a threshold's key is reused by its next
occurrence, which is another row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: Alerts kept per host: every open one first, then the most recently ended.
ALERTS_KEPT = 12

Occurrence = tuple[str, datetime | None]


class HostAlerts:
    """One host's alerts as its page shows them (not thread-safe: the hub holds its lock)."""

    def __init__(self) -> None:
        self.rows: dict[Occurrence, dict[str, Any]] = {}
        #: open alerts the worker's latest live message did not carry: the database decides
        self.unconfirmed: set[Occurrence] = set()
        self.read_at: float | None = None  # monotonic time of the last database read

    @property
    def recheck(self) -> bool:
        """Whether the database should be asked again (an open alert the worker dropped)."""
        return bool(self.unconfirmed)

    def shown(self) -> list[dict[str, Any]]:
        """The rows in the page's order: open first, then newest first."""
        return sorted(self.rows.values(), key=alert_order)

    def take_live(self, alerts: list[dict[str, Any]]) -> bool:
        """The worker's live message's ``alerts`` (serialized ``AlertRecord`` s); True when
        what the page shows changed."""
        before = self.shown()
        carried = set()
        for alert in alerts:
            row = live_row(alert)
            if not row["key"]:
                continue
            carried.add(occurrence(row))
            self._put(row)
        self.unconfirmed = {
            occ for occ, row in self.rows.items() if row["active"] and occ not in carried
        }
        self._trim()
        return self.shown() != before

    def take_stored(self, rows: list[dict[str, Any]], at: float | None = None) -> bool:
        """What :func:`stored_alerts` read (``at``: when, monotonic); True when what the page
        shows changed. An unconfirmed alert the database does not have open is gone."""
        before = self.shown()
        self.read_at = at
        stored = {occurrence(row): row for row in rows}
        for row in rows:
            self._put(row)
        for occ in self.unconfirmed:
            if occ not in stored and self.rows.get(occ, {}).get("active"):
                del self.rows[occ]
        self.unconfirmed = set()
        self._trim()
        return self.shown() != before

    def _put(self, row: dict[str, Any]) -> None:
        occ = occurrence(row)
        known = self.rows.get(occ)
        if known is not None and not known["active"] and row["active"]:
            return  # an ended alert stays ended: the other source has not heard yet
        self.rows[occ] = row

    def _trim(self) -> None:
        for row in self.shown()[ALERTS_KEPT:]:
            self.rows.pop(occurrence(row), None)
            self.unconfirmed.discard(occurrence(row))


def occurrence(row: dict[str, Any]) -> Occurrence:
    return (row["key"], row["started"])


def alert_order(row: dict[str, Any]) -> tuple:
    started = row["started"] or datetime.min.replace(tzinfo=UTC)
    return (not row["active"], -started.timestamp(), row["key"])


def live_row(alert: dict[str, Any]) -> dict[str, Any]:
    """A row from a serialized ``AlertRecord`` of a live message."""
    ended = parse_time(alert.get("endedAt"))
    return {
        "key": alert.get("key") or "",
        "severity": alert.get("severity", "warning"),
        "message": alert.get("message", ""),
        "rule": alert.get("rule", ""),
        "metric": alert.get("metric", ""),
        "started": parse_time(alert.get("startedAt")),
        "ended": ended,
        "active": ended is None,
    }


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime) or value is None:
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def stored_alerts(host: str) -> list[dict[str, Any]]:
    """The host's alerts in the database (1 query): every open one, then the most recently
    ended, :data:`ALERTS_KEPT` in all. Rows shaped as :func:`live_row` makes them."""
    from django.db.models import F

    from monitoring.models import Alert

    newest = Alert.objects.filter(host__name=host).order_by(
        F("ended_at").desc(nulls_first=True), "-started_at"
    )
    return [
        {
            "key": alert.key or f"db-{alert.pk}",
            "severity": alert.severity,
            "message": alert.message,
            "rule": alert.rule,
            "metric": alert.metric,
            "started": alert.started_at,
            "ended": alert.ended_at,
            "active": alert.ended_at is None,
        }
        for alert in newest[:ALERTS_KEPT]
    ]
