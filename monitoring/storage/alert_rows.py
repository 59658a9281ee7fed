"""``Alert`` rows for the evaluator's alert changes: one row per occurrence, updated in place.

An occurrence (same key, same start) is inserted the first time and updated as it escalates
and clears; its row id is cached while it is open. Alerts of this host a previous worker left
open (killed, crashed) are closed at the first write, ended at that worker's last sample: with
the per-host lock held nobody else can clear them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.db.models import Count, Max

from monitoring.models import Alert, Host, HostSample, Threshold
from monitoring.records import AlertRecord
from monitoring.storage.registry import HostGpuRegistry
from monitoring.storage.samples import to_float

log = logging.getLogger(__name__)

#: Appended to the message of an alert a previous worker left open.
STALE_ALERT_REASON = "closed at worker start: the worker that raised it stopped without clearing it"


class AlertRows:
    """Writes one host's alert changes inside the store's transaction.

    A failed transaction takes back what the writes learnt: :meth:`checkpoint` before it,
    :meth:`rollback` after it failed.
    """

    def __init__(self, host_name: str, registry: HostGpuRegistry, *, using: str) -> None:
        self.host_name = host_name
        self.using = using
        self._registry = registry
        self._rows: dict[str, tuple[int, datetime]] = {}  # key -> (row id, started_at)
        self._stale_closed = False

    def checkpoint(self) -> bool:
        return self._stale_closed

    def rollback(self, checkpoint: bool) -> None:
        """Forget the row ids cached in a transaction that was rolled back."""
        self._stale_closed = checkpoint
        self._rows.clear()

    def close_stale_once(self) -> None:
        """At the first write: close what a previous worker left open."""
        if not self._stale_closed:
            self.close_stale()
            self._stale_closed = True

    def write(self, host_id: int, alerts: list[AlertRecord]) -> None:
        if not alerts:
            return
        rows = Alert.objects.using(self.using)
        wanted = {a.threshold_id for a in alerts if a.threshold_id is not None}
        thresholds = (
            set(
                Threshold.objects.using(self.using)
                .filter(pk__in=wanted)
                .values_list("pk", flat=True)
            )
            if wanted
            else set()
        )
        for record in alerts:
            fields = {
                "host_id": host_id,
                "gpu_id": self._registry.gpu_id(record.gpu_uuid),
                # a threshold deleted in admin meanwhile: keep the alert, without the link
                "threshold_id": record.threshold_id if record.threshold_id in thresholds else None,
                "rule": record.rule[:32],
                "metric": record.metric[:32],
                "severity": record.severity[:8],
                "started_at": record.started_at,
                "ended_at": record.ended_at,
                "value": to_float(record.value),
                "peak_value": to_float(record.peak_value),
                "message": record.message,
                "pid": record.pid,
            }
            pk = self._row(host_id, record)
            if pk is None:
                pk = rows.create(key=record.key[:255], **fields).pk
            else:
                rows.filter(pk=pk).update(**fields)
            if record.ended_at is None:
                self._rows[record.key] = (pk, record.started_at)
            else:
                self._rows.pop(record.key, None)  # closed: a new occurrence is a new row

    def _row(self, host_id: int, record: AlertRecord) -> int | None:
        """The row of this alert occurrence: cached, else the row it was written to before
        (same key and start; the cache is dropped with a failed write). An open row of a
        previous worker is never resumed: the first write closed it."""
        cached = self._rows.get(record.key)
        if cached is not None and cached[1] == record.started_at:
            return cached[0]
        return (
            Alert.objects.using(self.using)
            .filter(host_id=host_id, key=record.key[:255], started_at=record.started_at)
            .values_list("pk", flat=True)
            .first()
        )

    def close_stale(self) -> int:
        """Close the alerts of this host a previous worker left open; returns how many.

        Ended at the last moment that worker is known to have seen the host (its last
        written sample, or the host's ``last_seen``), never before the alert started; now
        when nothing is known.
        """
        host = (
            Host.objects.using(self.using)
            .filter(name=self.host_name)
            .values_list("pk", "last_seen")
            .first()
        )
        if host is None:
            return 0
        host_id, last_seen = host
        stale = list(Alert.objects.using(self.using).filter(host_id=host_id, ended_at__isnull=True))
        if not stale:
            return 0
        last_sample = (
            HostSample.objects.using(self.using)
            .filter(host_id=host_id)
            .aggregate(last=Max("time"))["last"]
        )
        known = [moment for moment in (last_seen, last_sample) if moment is not None]
        ended = max(known) if known else datetime.now(UTC)
        when = f"last sample {ended:%Y-%m-%d %H:%M:%S} UTC" if known else "no sample known"
        was = "; ".join(alert.message for alert in stale[:5])
        for alert in stale:
            alert.ended_at = max(ended, alert.started_at)
            alert.message = f"{alert.message} ({STALE_ALERT_REASON}; {when})"
        Alert.objects.using(self.using).bulk_update(stale, ["ended_at", "message"])
        log.warning(
            "closed %d alert(s) of %s left open by the previous worker (%s): %s; whatever "
            "still holds opens again from live data",
            len(stale),
            self.host_name,
            when,
            was,
        )
        return len(stale)


def open_alert_counts(using: str = "default") -> list[tuple[str, str, str, str, int]]:
    """How many alerts are open, per (host, severity, rule, metric): what ``/metrics``
    exposes. One grouped query; an alert is open while its row has no ``ended_at``."""
    rows = (
        Alert.objects.using(using)
        .filter(ended_at__isnull=True)
        .values_list("host__name", "severity", "rule", "metric")
        .annotate(open=Count("pk"))
        .order_by("host__name", "severity", "rule", "metric")
    )
    return list(rows)
