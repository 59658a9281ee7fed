"""Durable storage of snapshots: the worker hands them over, batches are written later.

``SnapshotStore.add`` only queues (O(1), never touches the database, never raises), so the
sampling loop keeps its clock whatever the database does. ``flush`` writes what is queued,
oldest first, in one transaction per batch: host and GPU rows (cached ids, see
:mod:`~monitoring.storage.registry`), one GPU row per GPU and one host row per snapshot (COPY
on PostgreSQL, bulk INSERT elsewhere: :mod:`~monitoring.storage.samples`), process sessions
(:mod:`~monitoring.storage.sessions`: new and closed ones at once, the figures of open ones
every ``SESSION_REFRESH_S`` and at stop, see :meth:`SnapshotStore.stopping`), events and
alert changes.

When the database is away (stopped, restarting, network gone) the batch is rolled back and
put back in front of the queue, the connection is dropped so the next flush reconnects,
and ``flush`` returns the error instead of raising. (A connection that died between two
flushes, the server having restarted meanwhile, is replaced and the batch retried at once:
cheaper than a health-check query before every flush.) Nothing collected is lost until the
bounded buffer is full; then the oldest snapshots go, counted. When the database is back,
each flush writes up to ``max_snapshots`` of the backlog, in order, exactly once.

Alerts of this host still open in the database when the store first writes were left by a
previous worker that stopped without clearing them: the first write closes them
(:mod:`~monitoring.storage.alert_rows`). The evaluator starts afresh and opens anew, from
live data, whatever still holds.

A batch the database rejects for its content (not for being unreachable) would otherwise
block the queue forever; after three such failures in a row its oldest item is dropped,
logged and counted.
A GPU another running host reports (:class:`~monitoring.storage.registry.GpuHeld`: a
second worker on the machine under another name) fails the batch before anything is written;
the result's ``refused`` says so and the worker stops: retrying would never succeed.
A database that lacks our tables or columns (recreated empty, restored from an older dump)
rejects every batch alike: that is not a bad record, so nothing is dropped; the operator is
told once to run ``manage.py migrate``, and the queue is written once they have.
"""

from __future__ import annotations

import logging
import math
import threading
import time as monotonic_time
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.conf import settings
from django.db import connections, transaction

from monitoring.models import Event, Gpu, GpuSample, HostSample
from monitoring.records import AlertRecord, EventKind, EventRecord
from monitoring.storage.alert_rows import AlertRows
from monitoring.storage.buffer import DropOldestBuffer, KeyedQueue, RecordQueue
from monitoring.storage.db_errors import SCHEMA_MISSING, UNREACHABLE, schema_missing
from monitoring.storage.latest import write_latest
from monitoring.storage.registry import GpuHeld, HostGpuRegistry, event_gpu_key
from monitoring.storage.samples import (
    GPU_SAMPLE_COLUMNS,
    HOST_SAMPLE_COLUMNS,
    gpu_sample_rows,
    host_sample_rows,
    insert_rows,
)
from monitoring.storage.session_rows import insert_sessions, load_open_sessions, update_sessions
from monitoring.storage.sessions import ProcessSessionTracker, Session
from monitoring.telemetry.schema import Snapshot

log = logging.getLogger(__name__)

POISON_STRIKES = 3  # content failures in a row before the oldest queued item is dropped


@dataclass(slots=True)
class FlushResult:
    written_snapshots: int
    pending: int  # snapshots still queued (a backlog is written over the next flushes)
    dropped: int  # snapshots dropped since the previous flush (buffer full, or rejected)
    error: str | None  # why nothing was written, or None
    gpu_rows: int = 0
    host_rows: int = 0
    sessions: int = 0
    events: int = 0
    alerts: int = 0
    seconds: float = 0.0
    refused: str | None = None  # why this host may not write at all (GpuHeld), or None


class SnapshotStore:
    """The worker's storage: queue snapshots, events and alert changes; write them in batches.

    One per worker (per host). ``add*`` may be called from the sampling thread while
    ``flush`` runs in another; flushes themselves are serialised.
    """

    def __init__(
        self,
        host_name: str,
        *,
        buffer_size: int | None = None,
        using: str = "default",
        records_size: int | None = None,
        session_grace_s: float | None = None,
        session_refresh_s: float | None = None,
        use_copy: bool | None = None,
    ) -> None:
        self.host_name = host_name
        self.using = using
        self._snapshots: DropOldestBuffer[Snapshot] = DropOldestBuffer(
            buffer_size or settings.BUFFER_SNAPSHOTS
        )
        records = records_size or settings.BUFFER_RECORDS
        self._events: RecordQueue[EventRecord] = RecordQueue(records, "events")
        self._alerts: KeyedQueue[AlertRecord] = KeyedQueue(records, "alert changes")
        if session_grace_s is None:
            session_grace_s = 2 * settings.PROCESS_INTERVAL_MS / 1000 + 1
        if session_refresh_s is None:
            session_refresh_s = settings.SESSION_REFRESH_S
        self._registry = HostGpuRegistry(host_name, using=using)
        self._sessions = ProcessSessionTracker(
            session_grace_s, session_refresh_s, gpu_key=self._registry.key
        )
        self._sessions_resumed = False
        self._resumed: list[Session] = []  # what the first flush resumed, until taken
        self._stopping = False
        self._alert_rows = AlertRows(host_name, self._registry, using=using)
        self._use_copy = settings.INGEST_COPY if use_copy is None else use_copy
        self._flush_lock = threading.Lock()
        self._last_error: str | None = None
        self._strikes = 0
        self._no_uuid_logged: set[int] = set()
        self._had_connection = False
        self._worker_stats: dict[str, Any] = {}

    # -- queueing (the sampling loop) ----------------------------------------------------------

    def add(self, snapshot: Snapshot) -> None:
        try:
            self._snapshots.append(snapshot)
        except Exception:  # the loop must go on whatever happens here
            log.exception("could not queue a snapshot")

    def add_event(self, event: EventRecord) -> None:
        try:
            self._events.append(event)
        except Exception:
            log.exception("could not queue event %r", event)

    def add_alert(self, alert: AlertRecord) -> None:
        try:
            # one entry per occurrence: a newer state of it replaces the queued one, but an
            # occurrence that cleared is still written before the next one opens
            self._alerts.put((alert.key, alert.started_at), alert)
        except Exception:
            log.exception("could not queue alert %r", alert)

    @property
    def capacity(self) -> int:
        """Snapshots the buffer holds before it drops the oldest."""
        return self._snapshots.capacity

    @property
    def pending(self) -> int:
        """Snapshots waiting to be written."""
        return len(self._snapshots)

    @property
    def pending_records(self) -> int:
        """Events and alert changes waiting to be written."""
        return len(self._events) + len(self._alerts)

    @property
    def dropped_total(self) -> int:
        """Snapshots dropped since the store was made."""
        return self._snapshots.dropped_total

    @property
    def last_error(self) -> str | None:
        """Why the last flush failed; None once a flush succeeds."""
        return self._last_error

    @property
    def open_sessions(self) -> list[Session]:
        return self._sessions.open_sessions

    def take_resumed(self) -> list[Session]:
        """The open sessions a previous worker of this host left, as the first flush loaded
        them; once (the worker's "seen since" takes their first sightings)."""
        resumed, self._resumed = self._resumed, []
        return resumed

    def stopping(self) -> None:
        """The worker stops: from now on every flush also writes the running figures of the
        open sessions (otherwise written every ``SESSION_REFRESH_S``), so their rows are up to
        date at exit. Flushes that fail keep them queued like the snapshots."""
        self._stopping = True

    # -- writing (the flush) -------------------------------------------------------------------

    def flush(
        self, *, max_snapshots: int = 600, worker: dict[str, Any] | None = None
    ) -> FlushResult:
        """Write up to ``max_snapshots`` queued snapshots (oldest first), the queued events and
        alert changes, in one transaction. Never raises: a failure is in ``error``.

        The newest snapshot written also replaces the host's :class:`LatestSnapshot`, with
        ``worker`` (the worker's own counters) beside it."""
        with self._flush_lock:
            if worker is not None:
                self._worker_stats = worker
            started = monotonic_time.perf_counter()
            batch = self._snapshots.take(max_snapshots)
            events = self._events.take()
            alerts = self._alerts.take()
            sessions_due = self._stopping and self._sessions.has_news
            if not (batch or events or alerts or sessions_due):
                return FlushResult(0, 0, self._snapshots.take_dropped(), None)
            result = self._attempt(batch, events, alerts)
            if isinstance(result, Exception) and self._stale_connection(result):
                result = self._attempt(batch, events, alerts)  # on a fresh connection
            if isinstance(result, Exception):
                self._snapshots.put_back(batch)
                self._events.put_back(events)
                self._alerts.put_back(alerts)
                refused = str(result) if isinstance(result, GpuHeld) else None
                error = refused or self._failed(result)
                self._last_error = error
                return FlushResult(
                    0, len(self._snapshots), self._snapshots.take_dropped(), error, refused=refused
                )
            if self._last_error is not None:
                log.info(
                    "database writes resumed for %s (%d snapshots still queued)",
                    self.host_name,
                    len(self._snapshots),
                )
            self._last_error = None
            self._strikes = 0
            result.pending = len(self._snapshots)
            result.dropped = self._snapshots.take_dropped()
            result.seconds = monotonic_time.perf_counter() - started
            return result

    def _attempt(
        self,
        batch: list[Snapshot],
        events: list[EventRecord],
        alerts: list[tuple[Any, AlertRecord]],
    ) -> FlushResult | Exception:
        """One transaction; on failure, every cache and the session tracker are as before."""
        checkpoint = self._sessions.checkpoint()
        resumed = self._sessions_resumed
        alerts_checkpoint = self._alert_rows.checkpoint()
        connection = connections[self.using]
        self._had_connection = connection.connection is not None
        try:
            if connection.errors_occurred and not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()  # after an error: is it still there?
            with transaction.atomic(using=self.using):
                return self._write(batch, events, alerts)
        except Exception as exc:
            self._sessions.rollback(checkpoint)
            self._sessions_resumed = resumed
            self._registry.reset()
            self._alert_rows.rollback(alerts_checkpoint)
            return exc

    def _stale_connection(self, exc: Exception) -> bool:
        """True (and the connection dropped) when a connection that worked before has died
        meanwhile (a server restart between flushes): worth one retry on a new connection.
        Cheaper than a health-check query before every flush."""
        connection = connections[self.using]
        if not (isinstance(exc, UNREACHABLE) and self._had_connection):
            return False
        if self._last_error is not None or connection.in_atomic_block:
            return False  # already failing: the database is away, not just our connection
        log.info("database connection lost (%s): reconnecting", exc)
        self._close_connection()
        return True

    def _close_connection(self) -> None:
        connection = connections[self.using]
        if connection.in_atomic_block:
            return
        try:
            connection.close()  # the next attempt opens a fresh one
        except Exception:
            log.debug("closing the broken connection failed", exc_info=True)

    def _failed(self, exc: Exception) -> str:
        error = f"{type(exc).__name__}: {exc}".strip()
        if schema_missing(exc):
            error = f"{SCHEMA_MISSING}: {error}"
            if not (self._last_error or "").startswith(SCHEMA_MISSING):
                log.error("%s; keeping %d snapshots queued", error, len(self._snapshots))
            self._strikes = 0  # every record fails alike: none of them is the bad one
        elif isinstance(exc, UNREACHABLE):
            if self._last_error is None:
                log.info(  # the worker says it to the operator, with what it means
                    "database unavailable, keeping %d snapshots queued: %s",
                    len(self._snapshots),
                    error,
                )
            else:
                log.debug("database still unavailable: %s", error)
            self._close_connection()
        else:
            self._strikes += 1
            log.error(
                "writing a batch failed (%d/%d): %s",
                self._strikes,
                POISON_STRIKES,
                error,
                exc_info=exc,
            )
            if self._strikes >= POISON_STRIKES:
                self._strikes = 0
                self._drop_poison()
        self._last_error = error
        return error

    def _drop_poison(self) -> None:
        """Give up on the oldest queued item so one bad record cannot block all others."""
        if self._snapshots.take(1):
            self._snapshots.drop(1)
            log.error("dropped the oldest snapshot: the database rejected its batch 3 times")
        elif self._events.take(1):
            self._events.drop(1)
            log.error("dropped the oldest event: the database rejected it 3 times")
        else:
            taken = self._alerts.take()
            if taken:
                self._alerts.put_back(taken[1:])
                log.error("dropped alert change %r: the database rejected it 3 times", taken[0])

    def _write(
        self,
        batch: list[Snapshot],
        events: list[EventRecord],
        alerts: list[tuple[Any, AlertRecord]],
    ) -> FlushResult:
        self._alert_rows.close_stale_once()  # before this batch marks the host seen
        registry = self._registry
        latest = batch[-1] if batch else None
        host_id = registry.host_id(latest, seen=latest.timestamp if latest else None)
        gpu_ids = registry.gpu_ids(host_id, batch)
        self._log_gpus_without_uuid(batch)
        gpu_rows = gpu_sample_rows(batch, gpu_ids, registry.key)
        host_rows = host_sample_rows(batch, host_id)
        connection = connections[self.using]
        insert_rows(connection, GpuSample, GPU_SAMPLE_COLUMNS, gpu_rows, use_copy=self._use_copy)
        insert_rows(connection, HostSample, HOST_SAMPLE_COLUMNS, host_rows, use_copy=self._use_copy)
        sessions = self._write_sessions(host_id, batch, gpu_ids)
        self._write_events(host_id, events)
        self._alert_rows.write(host_id, [record for _key, record in alerts])
        if latest is not None:
            write_latest(host_id, latest, self._worker_stats, using=self.using)
        return FlushResult(
            written_snapshots=len(batch),
            pending=0,
            dropped=0,
            error=None,
            gpu_rows=len(gpu_rows),
            host_rows=len(host_rows),
            sessions=sessions,
            events=len(events),
            alerts=len(alerts),
        )

    def _log_gpus_without_uuid(self, batch: list[Snapshot]) -> None:
        for snapshot in batch:
            for gpu in snapshot.gpus:
                if not gpu.uuid and gpu.index not in self._no_uuid_logged:
                    self._no_uuid_logged.add(gpu.index)
                    log.info(
                        "GPU %d of %s reports no UUID: its history is kept under %s",
                        gpu.index,
                        self.host_name,
                        self._registry.key(gpu),
                    )

    # -- sessions ------------------------------------------------------------------------------

    def _write_sessions(self, host_id: int, batch: list[Snapshot], gpu_ids: dict[str, int]) -> int:
        tracker = self._sessions
        if not self._sessions_resumed:
            loaded = load_open_sessions(connections[self.using], host_id)
            if loaded:
                log.info("resuming %d open GPU process sessions of %s", len(loaded), self.host_name)
            tracker.resume(loaded)
            self._resumed = [session.copy() for session in loaded]
            self._sessions_resumed = True
        for snapshot in batch:
            tracker.observe(snapshot)
        due = tracker.take(batch[-1].timestamp if batch else None, everything=self._stopping)
        if not due:
            return 0
        connection = connections[self.using]
        existing = [s for s in due if s.db_id is not None]
        new = [s for s in due if s.db_id is None]
        gone = update_sessions(connection, existing)
        if gone:
            log.warning(
                "%d open GPU process sessions of %s had lost their rows (database recreated "
                "or emptied?): written anew",
                len(gone),
                self.host_name,
            )
            for session in gone:
                session.db_id = None
            new += gone
        created = []
        for session in new:
            gpu_id = gpu_ids.get(session.gpu_uuid) or self._registry.gpu_id(session.gpu_uuid)
            if gpu_id is not None:
                created.append((session, gpu_id))
        insert_sessions(connection, created)
        return len(created) + len(existing) - len(gone)

    # -- events ---------------------------------------------------------------------

    def _write_events(self, host_id: int, events: list[EventRecord]) -> None:
        if not events:
            return
        rows = []
        removed = []
        for event in events:
            key = event_gpu_key(self.host_name, event.gpu_uuid, event.data)
            gpu_id = self._registry.gpu_id(key)
            if key and event.kind == EventKind.GPU_REMOVED:
                removed.append(key)
            data = dict(event.data)
            if event.gpu_uuid:
                data.setdefault("gpu_uuid", event.gpu_uuid)
            rows.append(
                Event(
                    host_id=host_id,
                    gpu_id=gpu_id,
                    time=event.time,
                    kind=event.kind[:32],
                    message=event.message,
                    data=_jsonable(data),
                )
            )
        Event.objects.using(self.using).bulk_create(rows)
        self._registry.mark_state(removed, Gpu.STATE_GONE)


def _jsonable(value: Any) -> Any:
    """Event data as JSON takes it: times as ISO text, NaN and infinity as null (PostgreSQL's
    jsonb refuses them), anything else unknown as its text."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
