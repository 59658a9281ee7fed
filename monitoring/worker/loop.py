"""The long-running collect worker: sample on a steady clock, record, alert, publish.

Two threads, so that the database can never hold up the clock:

* the **sampling thread** (the caller of :meth:`CollectWorker.run`, the main thread) does
  only in-memory work each tick: sample → detect events → queue the snapshot and events in
  the store → evaluate alerts → queue alert changes → hand the live message to the
  publisher (which sends from its own thread);
* the **storage thread** does everything that talks to the database, each on its own
  schedule: write the queued batch every ``FLUSH_INTERVAL_MS``, reload alert rules every
  ``RULES_REFRESH_S`` (a failure keeps the rules in force), roll up and prune every
  ``MAINTENANCE_INTERVAL_S``, and keep the per-host database lock. Django connections are
  per thread, so this thread has its own.

While the database is away samples wait in the store's bounded buffer; when it is full the
oldest go, are counted, and one ``samples_dropped`` event says how many once writes resume.
An exception in one tick is logged and the next tick runs. SIGTERM or SIGINT sets a flag:
the tick in progress finishes, a ``worker_stopped`` event is queued, the buffer is written
(waiting at most ``stop_timeout_s`` for a database that is down, then saying what is lost)
and :meth:`run` returns 0.

Every step is a small method the tests call directly (:meth:`tick`, :meth:`flush`,
:meth:`refresh_rules`, :meth:`maintain`), with no thread or clock involved.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connections

from monitoring.events import EventTracker
from monitoring.records import AlertRecord, EventKind, EventRecord
from monitoring.storage.registry import gpu_storage_key
from monitoring.telemetry.backoff import Backoff
from monitoring.telemetry.schema import GPU_LOST, STATUS_ERROR, Snapshot
from monitoring.telemetry.select import Opened
from monitoring.worker.collaborators import (
    Evaluator,
    HostLock,
    Publisher,
    SnapshotSampler,
    Store,
    WriteResult,
)
from monitoring.worker.first_seen import FirstSeen
from monitoring.worker.lock import LockLost
from monitoring.worker.tiers import LOW_INTERVAL_WARNING_MS, SteadyClock, Tick, Tiers, TierSchedule

log = logging.getLogger(__name__)

#: A tick starting this much after it was due (fraction of the interval) counts as late.
LATE_FRACTION = 0.1
#: Reopening a broken GPU source: first retry after this, doubling up to REOPEN_MAX_S.
REOPEN_FIRST_S = 10.0
REOPEN_MAX_S = 300.0
#: A backlog is written in batches of this many snapshots, back to back.
FLUSH_BATCH = 600


@dataclass(slots=True)
class WorkerConfig:
    """The worker's timings (defaults from settings, see :meth:`from_settings`)."""

    host_name: str
    interval_ms: int = 1000
    process_interval_ms: int = 2000
    slow_interval_ms: int = 10000
    top_interval_ms: int = 10000
    flush_interval_s: float = 2.0
    maintenance_interval_s: float = 300.0
    rules_refresh_s: float = 30.0
    stop_timeout_s: float = 15.0
    source_rescan_s: float = 0.0  # 0: reopen the GPU source only when it is in trouble
    count: int = 0  # stop after this many ticks (0: run until told to stop)

    @classmethod
    def from_settings(cls, host_name: str | None = None, **overrides: Any) -> WorkerConfig:
        values: dict[str, Any] = {
            "host_name": host_name or settings.HOST_NAME,
            "interval_ms": settings.POLL_INTERVAL_MS,
            "process_interval_ms": settings.PROCESS_INTERVAL_MS,
            "slow_interval_ms": settings.SLOW_INTERVAL_MS,
            "top_interval_ms": settings.TOP_PROCESSES_INTERVAL_MS,
            "flush_interval_s": settings.FLUSH_INTERVAL_MS / 1000,
            "maintenance_interval_s": float(settings.MAINTENANCE_INTERVAL_S),
            "rules_refresh_s": float(settings.RULES_REFRESH_S),
            "stop_timeout_s": float(settings.WORKER_STOP_TIMEOUT_S),
            "source_rescan_s": float(settings.GPU_RESCAN_S),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def interval_s(self) -> float:
        return self.interval_ms / 1000


class StopSignal:
    """A stop flag a signal handler may set, and a sleep that it cuts short.

    A self-pipe rather than ``threading.Event``: an Event's internal lock may be held by the
    very thread a signal handler interrupts, while ``os.write`` takes no lock.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.requested = False
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self.requested:
            self.reason = reason
        self.requested = True
        with contextlib.suppress(OSError):  # the pipe is full: it is readable already
            os.write(self._write, b"x")

    def sleep(self, seconds: float) -> None:
        if not self.requested and seconds > 0:
            with contextlib.suppress(InterruptedError):
                select.select([self._read], [], [], seconds)

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


class CollectWorker:
    """One host's worker. ``store`` is a SnapshotStore; the other collaborators are optional
    (what each must offer: :mod:`monitoring.worker.collaborators`).

    ``rules_loader()`` returns a RuleSet and ``evaluator_factory(rules)`` an AlertEvaluator;
    ``maintenance()`` rolls up and prunes; ``lock`` is a WorkerLock already acquired;
    ``reopen_source()`` returns a fresh ``select.Opened`` GPU source (after a driver
    reload, for a GPU that appeared); ``on_snapshot`` sees every snapshot (``--json``).
    """

    def __init__(
        self,
        sampler: SnapshotSampler,
        store: Store,
        config: WorkerConfig,
        *,
        publisher: Publisher | None = None,
        rules_loader: Callable[[], Any] | None = None,
        evaluator_factory: Callable[[Any], Evaluator] | None = None,
        maintenance: Callable[[], Any] | None = None,
        lock: HostLock | None = None,
        reopen_source: Callable[[], Opened] | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sampler = sampler
        self.store = store
        self.config = config
        self.publisher = publisher
        self.rules_loader = rules_loader
        self.evaluator_factory = evaluator_factory
        self.maintenance = maintenance
        self.lock = lock
        self.reopen_source = reopen_source
        self.on_snapshot = on_snapshot
        self.monotonic = monotonic
        self.schedule = TierSchedule(
            config.interval_ms,
            config.process_interval_ms,
            config.slow_interval_ms,
            config.top_interval_ms,
        )
        self.events = EventTracker()
        # as the storage's process sessions wait: two process ticks and a second
        self.first_seen = FirstSeen(
            2 * config.process_interval_ms / 1000 + 1,
            functools.partial(gpu_storage_key, config.host_name),
        )
        self.evaluator: Evaluator | None = None
        self.stop = StopSignal()
        self.exit_code = 0
        # counters for logs, tests and the benchmark
        self.ticks = 0
        self.failed_ticks = 0
        self.late_ticks = 0
        self.skipped_ticks = 0
        self.last_snapshot: Snapshot | None = None
        self._new_rules: Any = None  # handed from the storage thread to the sampling thread
        self._rules_lock = threading.Lock()
        self._rules_error_logged = False
        self._alerts_error_logged = False
        self._alert_severity: dict[str, str] = {}  # open alerts' keys, as last logged
        self._drops: dict[str, Any] | None = None  # the drop run being counted
        self._dropped_seen = 0
        self._db_down: str | None = None  # why the database is unavailable, while it is
        self._reopen_at: float | None = None
        self._reopen_backoff = Backoff(REOPEN_FIRST_S, REOPEN_MAX_S)
        self._rescan_at = monotonic() + config.source_rescan_s
        self._storage_stop = threading.Event()
        self._storage_thread: threading.Thread | None = None
        self._forced = False
        self._refused = False

    # --- the sampling thread: one tick ----------------------------------------------------

    def tick(self, tiers: Tiers | None = None) -> Snapshot | None:
        """Sample once and hand the result on; never raises (a failure is logged)."""
        tiers = tiers or Tiers(processes=True, slow=True)
        try:
            self.apply_new_rules()
            snapshot = self.sampler.sample(
                processes=tiers.processes, slow=tiers.slow, top_processes=tiers.top_processes
            )
            self.first_seen.stamp(snapshot)
            events = self.events.update(snapshot)
            self.store.add(snapshot)
            for event in events:
                log.warning("%s: %s", event.kind, event.message)
                self.store.add_event(event)
            changes = self.evaluate(snapshot)
            if self.publisher is not None:
                # the closes too: the page shows an alert cleared when the worker says so, at
                # the end time it writes, never because an alert went missing from a message
                closed = [change for change in changes if change.ended_at is not None]
                self.publisher.publish(
                    snapshot, alerts=self.active_alerts() + closed, events=events
                )
            if self.on_snapshot is not None:
                self.on_snapshot(snapshot)
            self.last_snapshot = snapshot
            self._maybe_reopen(snapshot)
            return snapshot
        except Exception:
            self.failed_ticks += 1
            log.exception("tick failed; sampling goes on")
            return None
        finally:
            self.ticks += 1

    def evaluate(self, snapshot: Snapshot) -> list[AlertRecord]:
        """Open, escalate and close alerts for this snapshot; queue the changes."""
        if self.evaluator is None:
            return []
        try:
            changes = self.evaluator.evaluate(snapshot, snapshot.timestamp)
        except Exception:
            if not self._alerts_error_logged:
                self._alerts_error_logged = True
                log.exception("evaluating alerts failed (logged once); sampling goes on")
            return []
        for change in changes:
            self._log_alert(change)
            self.store.add_alert(change)
        return changes

    def _log_alert(self, change: AlertRecord) -> None:
        """One line when an alert opens, changes severity or clears; a new peak of an open
        alert (re-sent every 30 s for storage) is not news to the log."""
        before = self._alert_severity.pop(change.key, None)
        if change.ended_at is not None:
            log.warning("alert cleared: %s", change.message)
            return
        self._alert_severity[change.key] = change.severity
        if before is None:
            log.warning("alert open (%s): %s", change.severity, change.message)
        elif before != change.severity:
            log.warning("alert now %s: %s", change.severity, change.message)

    def active_alerts(self) -> list[AlertRecord]:
        if self.evaluator is None:
            return []
        try:
            return list(self.evaluator.active)
        except Exception:
            return []

    def apply_new_rules(self) -> None:
        """Use the rules the storage thread loaded last (on the sampling thread)."""
        with self._rules_lock:
            rules, self._new_rules = self._new_rules, None
        if rules is None:
            return
        if self.evaluator is None:
            if self.evaluator_factory is not None:
                self.evaluator = self.evaluator_factory(rules)
        else:
            self.evaluator.update_rules(rules)

    # --- the sampling thread: a GPU source in trouble ---------------------------------------

    def _maybe_reopen(self, snapshot: Snapshot) -> None:
        """Reopen the GPU source after a driver reload (it errors, or GPUs stay lost) and,
        if configured, now and then to find GPUs that appeared (hot-plug)."""
        if self.reopen_source is None:
            return
        now = self.monotonic()
        broken = snapshot.driver.status == STATUS_ERROR
        troubled = broken or any(gpu.state == GPU_LOST for gpu in snapshot.gpus)
        if troubled and (self._reopen_at is None or now >= self._reopen_at):
            if self._reopen_at is None:  # first sight of trouble: give the source its retries
                self._reopen_at = now + self._reopen_backoff.delay
                return
            self._reopen_at = now + self._reopen_backoff.next()
            # with some GPUs still answering, keep the source unless a new one opens
            self.swap_source(keep_working=not broken)
        elif not troubled:
            self._reopen_at = None
            self._reopen_backoff.reset()
            if self.config.source_rescan_s > 0 and now >= self._rescan_at:
                self._rescan_at = now + self.config.source_rescan_s
                self.swap_source(keep_working=True)

    def swap_source(self, *, keep_working: bool) -> bool:
        """Open the GPU source afresh and use it; with ``keep_working`` only if it opened."""
        try:
            opened = self.reopen_source()
        except Exception:
            log.exception("reopening the GPU source failed")
            return False
        if opened.source is None and keep_working:
            return False
        old = self.sampler.use_source(opened.source, no_source=opened.no_source, notes=opened.notes)
        if old is not None:
            try:
                old.close()
            except Exception:
                log.debug("closing the old GPU source failed", exc_info=True)
        log.info(
            "reopened the GPU source: %s",
            opened.source.name if opened.source else opened.no_source.message,
        )
        return True

    # --- the storage thread: one unit of work each ------------------------------------------

    def flush_job(self) -> WriteResult | None:
        """The scheduled write: only while this worker holds its host's lock."""
        if not self.check_lock():
            self._note_drops()
            if not self._forced:
                self._outage((self.lock.last_error if self.lock else None) or "unreachable")
            return None
        return self.flush()

    def flush(self, *, max_snapshots: int = FLUSH_BATCH) -> WriteResult:
        """Write what is queued (a backlog in batches, back to back); count drops."""
        result = self.store.flush(max_snapshots=max_snapshots, worker=self.stats())
        refused = getattr(result, "refused", None)  # a stand-in's result may have none
        if refused:
            self._refuse(refused)
            return result
        take_resumed = getattr(self.store, "take_resumed", None)  # a stand-in may have none
        if take_resumed is not None:
            self.first_seen.resume(take_resumed())
        while result.error is None and result.written_snapshots and result.pending:
            if self._forced:
                break
            result = self.store.flush(max_snapshots=max_snapshots, worker=self.stats())
        self._note_drops()
        if result.error is not None:
            self._outage(result.error)
        else:
            if self._db_down is not None:
                self._db_down = None
                log.warning("database back: the buffered samples are written")
            self._record_drops()
        return result

    def _refuse(self, reason: str) -> None:
        """The store may not write for this host at all (a GPU another running host has):
        stop now, exit status 2, writing nothing (the worker_stopped event neither)."""
        log.error("%s", reason)
        self.exit_code = 2
        self._refused = True
        self._forced = True
        self.stop.set("refused")

    def stats(self) -> dict[str, int]:
        """The worker's own health, as ``LatestSnapshot.worker`` keeps it (camelCase keys)."""
        publisher = self.publisher
        return {
            "ticks": self.ticks,
            "failedTicks": self.failed_ticks,
            "lateTicks": self.late_ticks,
            "skippedTicks": self.skipped_ticks,
            "bufferDepth": self.store.pending,
            "bufferCapacity": self.store_capacity,
            "snapshotsDropped": self.store.dropped_total,
            "published": publisher.sent if publisher is not None else 0,
            "publishDropped": publisher.dropped if publisher is not None else 0,
        }

    def _outage(self, reason: str) -> None:
        """Say once per outage that samples now wait in memory, and for how long they can."""
        if self._db_down is None:
            log.warning(
                "database unavailable (%s): samples wait in the buffer (%d queued; room for "
                "%.0f min at this interval, then the oldest are dropped)",
                _first_line(reason),
                self.store.pending,
                self.store_capacity * self.config.interval_s / 60,
            )
        self._db_down = reason

    def _note_drops(self) -> None:
        """Count snapshots the store's buffer dropped since last time (it was full)."""
        total = self.store.dropped_total
        dropped, self._dropped_seen = total - self._dropped_seen, total
        if dropped <= 0:
            return
        now = datetime.now(UTC)
        if self._drops is None:
            self._drops = {"count": 0, "first": now}
            log.error(
                "the sample buffer (%d snapshots) is full: dropping the oldest until the "
                "database is back",
                self.store_capacity,
            )
        self._drops["count"] += dropped
        self._drops["last"] = now

    def _record_drops(self) -> None:
        """Once writes work again: one samples_dropped event for the whole run of drops."""
        drops, self._drops = self._drops, None
        if drops is None:
            return
        first, last = drops["first"], drops.get("last", drops["first"])
        message = (
            f"{drops['count']} snapshots were dropped while the database was unavailable "
            f"(buffer full from {first:%Y-%m-%d %H:%M:%S} to {last:%H:%M:%S} UTC)"
        )
        log.error("%s", message)
        self.store.add_event(
            EventRecord(
                time=last,
                kind=EventKind.SAMPLES_DROPPED,
                message=message,
                data={
                    "count": drops["count"],
                    "from": first.isoformat(),
                    "to": last.isoformat(),
                },
            )
        )

    @property
    def store_capacity(self) -> int:
        """How many snapshots the store's buffer holds (for the outage arithmetic)."""
        return self.store.capacity

    def refresh_rules(self) -> bool:
        """Reload the rules edited in admin; on failure the rules in force stay."""
        if self.rules_loader is None:
            return False
        try:
            self._refresh_connections()
            rules = self.rules_loader()
        except Exception as exc:
            self._close_connection()
            if not self._rules_error_logged:
                self._rules_error_logged = True
                log.warning("could not reload alert rules (keeping the current ones): %s", exc)
            return False
        self._rules_error_logged = False
        with self._rules_lock:
            self._new_rules = rules
        return True

    def maintain(self) -> Any:
        """Roll up and prune; a failure is logged and retried at the next interval."""
        if self.maintenance is None:
            return None
        try:
            self._refresh_connections()
            return self.maintenance()
        except Exception as exc:
            self._close_connection()
            log.warning("roll-up and pruning failed (retried later): %s", exc)
            return None

    def check_lock(self) -> bool:
        """Keep the per-host database lock; another worker holding it stops this one."""
        if self.lock is None:
            return True
        try:
            return self.lock.ensure()
        except LockLost as exc:
            log.error("%s: stopping, without writing what is buffered", exc)
            self.exit_code = 1
            self._forced = True
            self.stop.set("lock lost")
            return False

    @staticmethod
    def _close_connection() -> None:
        """Drop a connection a failure may have broken; the next job reconnects."""
        for conn in connections.all(initialized_only=True):
            if not conn.in_atomic_block:
                with contextlib.suppress(Exception):
                    conn.close()

    @staticmethod
    def _refresh_connections() -> None:
        """close_old_connections(), but leaving alone a connection inside a transaction
        (a caller's, as in tests): between jobs, as Django does between requests."""
        for conn in connections.all(initialized_only=True):
            if not conn.in_atomic_block:
                conn.close_if_unusable_or_obsolete()

    # --- running ----------------------------------------------------------------------------

    def run(self) -> int:
        """Sample until stopped; returns the exit status: 0 after SIGTERM/SIGINT or
        ``--count`` with everything written, 1 when snapshots could not be written by then."""
        self._install_signal_handlers()
        self._log_start()
        self.store.add_event(
            self._lifecycle_event(EventKind.WORKER_STARTED, "collect worker started")
        )
        self._storage_thread = threading.Thread(
            target=self._storage_loop, name="hoofhearted-storage", daemon=True
        )
        self._storage_thread.start()
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # garbage collector's full passes, which would otherwise rescan it every few minutes.
        gc.collect()
        gc.freeze()
        try:
            self._sampling_loop()
        finally:
            self._shutdown()
        return self.exit_code

    def request_stop(self, reason: str = "requested") -> None:
        self.stop.set(reason)

    def _sampling_loop(self) -> None:
        clock = SteadyClock(self.config.interval_s, now=self.monotonic)
        late_after = self.config.interval_s * LATE_FRACTION
        while not self.stop.requested:
            tick = clock.next_tick()
            if tick.skipped:
                self.skipped_ticks += tick.skipped
                log.warning(
                    "a tick overran the %d ms interval: skipped %d tick(s) rather than "
                    "bursting to catch up",
                    self.config.interval_ms,
                    tick.skipped,
                )
            clock.wait(tick, self.stop.sleep)
            if self.stop.requested:
                break
            self._count_late(tick, late_after)
            self.tick(self.schedule.tiers(tick.number))
            if self.config.count and self.ticks >= self.config.count:
                break

    def _count_late(self, tick: Tick, late_after: float) -> None:
        if self.monotonic() - tick.due > late_after:
            self.late_ticks += 1

    def _storage_loop(self) -> None:
        """The storage thread: flush, rules, maintenance and lock, each when due."""
        cfg = self.config
        now = self.monotonic()
        due = {
            "flush": now + cfg.flush_interval_s,
            "rules": now,
            "maintain": now + cfg.maintenance_interval_s,
        }
        jobs = {
            "flush": (self.flush_job, cfg.flush_interval_s),
            "rules": (self.refresh_rules, cfg.rules_refresh_s),
            "maintain": (self.maintain, cfg.maintenance_interval_s),
        }
        try:
            while True:
                wait = max(0.0, min(due.values()) - self.monotonic())
                if self._storage_stop.wait(wait):
                    break
                for name, (job, every) in jobs.items():
                    now = self.monotonic()
                    if now >= due[name]:
                        due[name] = now + every
                        try:
                            job()
                        except Exception:
                            log.exception("storage job %s failed; it runs again later", name)
            if not self._forced:
                self._final_flush()
        finally:
            with contextlib.suppress(Exception):
                connections.close_all()

    def _final_flush(self) -> None:
        """Write everything queued, retrying a database that is down until the deadline."""
        deadline = self.monotonic() + self.config.stop_timeout_s
        self.store.stopping()  # the open sessions' latest figures too
        while True:
            result = self.flush_job()
            error = result.error if result is not None else self._db_down or "lock not held"
            if error is None and not (self.store.pending or self._pending_records()):
                log.info("buffer written: nothing queued is lost at stop")
                return
            if self._refused:
                return  # said why; nothing of this run was ever to be written
            if self._forced or self.monotonic() >= deadline:
                break
            if error is not None:
                time.sleep(0.5)
        self.exit_code = self.exit_code or 1  # a service manager must see that data was lost
        log.error(
            "stopping with %d snapshots and %d events/alert changes NOT written "
            "(database: %s); they are lost",
            self.store.pending,
            self._pending_records(),
            _first_line(error or "still writing at the deadline"),
        )

    def _pending_records(self) -> int:
        return self.store.pending_records

    def _shutdown(self) -> None:
        reason = self.stop.reason or ("count reached" if self.config.count else "stopped")
        log.info(
            "stopping (%s) after %d ticks (%d failed, %d late, %d skipped)",
            reason,
            self.ticks,
            self.failed_ticks,
            self.late_ticks,
            self.skipped_ticks,
        )
        if not self._forced:
            self.store.add_event(
                self._lifecycle_event(
                    EventKind.WORKER_STOPPED, f"collect worker stopped ({reason})"
                )
            )
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                self.publisher.close()
        self._storage_stop.set()
        thread = self._storage_thread
        if thread is not None:
            # the storage thread does the final flush; it is bounded by stop_timeout_s
            thread.join(self.config.stop_timeout_s + 10)
            if thread.is_alive():
                self.exit_code = self.exit_code or 1
                log.error(
                    "the storage thread did not finish in time: %d snapshots not written",
                    self.store.pending,
                )
        self.stop.close()

    def _lifecycle_event(self, kind: str, message: str) -> EventRecord:
        return EventRecord(
            time=datetime.now(UTC),
            kind=kind,
            message=message,
            data={
                "pid": os.getpid(),
                "intervalMs": self.config.interval_ms,
                "source": self.sampler.source_name,
                "ticks": self.ticks,
            },
        )

    def _log_start(self) -> None:
        cfg = self.config
        capacity = self.store_capacity
        log.info(
            "collect worker for host %r: %s; writing every %.1f s",
            cfg.host_name,
            self.schedule.describe(),
            cfg.flush_interval_s,
        )
        self._log_source()
        if cfg.interval_ms < LOW_INTERVAL_WARNING_MS:
            log.warning(
                "sampling every %d ms: below %d ms the worker's own load on the host and "
                "the database grows noticeably",
                cfg.interval_ms,
                LOW_INTERVAL_WARNING_MS,
            )
        log.info(
            "buffer of %d snapshots covers %.0f min of database outage at this interval",
            capacity,
            capacity * cfg.interval_s / 60,
        )

    def _log_source(self) -> None:
        """Which GPU source answers, or why none does: said once here, never every tick."""
        source = getattr(self.sampler, "gpu_source", None)
        if source is not None:
            log.info("GPU source: %s", source.name)
            return
        no_source = getattr(self.sampler, "no_source", None)
        notes = list(getattr(self.sampler, "notes", ()))
        message = (no_source.message if no_source is not None else None) or "No GPU source."
        why = [note for note in notes if note not in message]
        log.warning("%s%s", message, f" Why: {'; '.join(why)}" if why else "")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests run the worker in a thread and stop it with request_stop()

        def handle(signum: int, _frame: Any) -> None:
            if self.stop.requested:
                self._forced = True  # a second signal: stop retrying the database
            self.stop.set(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "unknown error"
