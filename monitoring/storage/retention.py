"""Retention: how long each resolution is kept, pruning, and the maintenance the worker runs.

WHY: the worker must run for months without the database growing. ``run_maintenance`` rolls
finished buckets up (``monitoring.storage.rollup``) and *then* deletes what the policy no
longer keeps, so nothing is deleted before it is summarised one level up.

Cut-offs are aligned to whole buckets of the next level (raw to the minute, minutes to the
hour), so a roll-up never sees a half-pruned bucket. Deletes go in bounded chunks, each its
own short statement, so the first prune of a big table never locks it for minutes.

TimescaleDB: not used. Hypertables and continuous aggregates are not implemented (the
extension cannot be installed here to test them); plain tables with these roll-ups work the
same with or without it, and ``timescaledb_installed`` only lets ``manage.py prune`` say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from monitoring.models import Gpu, Host
from monitoring.storage.rollup import (
    ALL_TABLES,
    HOUR,
    MINUTE,
    TEN_MINUTES,
    SeriesTables,
    q,
    roll_up,
)
from monitoring.storage.times import as_utc, db_time, floor_time


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    raw: timedelta
    minute: timedelta
    hour: timedelta
    lookback: timedelta  # recent window every roll-up recomputes, for late-written samples
    chunk_rows: int  # most rows one DELETE removes

    @classmethod
    def from_settings(cls) -> RetentionPolicy:
        return cls(
            raw=timedelta(hours=settings.RETENTION_RAW_HOURS),
            minute=timedelta(days=settings.RETENTION_MINUTE_DAYS),
            hour=timedelta(days=settings.RETENTION_HOUR_DAYS),
            lookback=timedelta(seconds=settings.ROLLUP_LOOKBACK_S),
            chunk_rows=settings.PRUNE_CHUNK_ROWS,
        )

    def cutoffs(self, now: datetime) -> Cutoffs:
        """Rows before these times are no longer kept. Pure."""
        return Cutoffs(
            raw=floor_time(now - self.raw, MINUTE),
            minute=floor_time(now - self.minute, HOUR),
            hour=floor_time(now - self.hour, HOUR),
        )


@dataclass(frozen=True, slots=True)
class Cutoffs:
    raw: datetime
    minute: datetime
    hour: datetime


@dataclass(slots=True)
class MaintenanceResult:
    now: datetime
    dry_run: bool
    cutoffs: Cutoffs
    rolled_up: dict[str, int] = field(default_factory=dict)  # buckets written, "gpu_minute" …
    deleted: dict[str, int] = field(default_factory=dict)  # rows deleted, "gpu_raw" …
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What happened, for people (``manage.py prune``, the worker's log)."""
        verb = "would" if self.dry_run else ""
        rolled = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.rolled_up.items())
        deleted = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.deleted.items())
        return [
            f"{'dry run: ' if self.dry_run else ''}maintenance at {self.now:%Y-%m-%d %H:%M:%S}Z"
            f" in {self.seconds:.2f} s",
            f"roll-up buckets {verb + ' be ' if verb else ''}written: {rolled or 'none'}",
            f"rows {verb + ' be ' if verb else ''}deleted: {deleted or 'none'}",
            f"kept: raw since {self.cutoffs.raw:%Y-%m-%d %H:%M}Z, minutes and 10 minutes since "
            f"{self.cutoffs.minute:%Y-%m-%d %H:%M}Z, hours since {self.cutoffs.hour:%Y-%m-%d %H:%M}Z",
            *self.notes,
        ]


def _delete(table: str, where: str, params: list, chunk_rows: int, dry_run: bool) -> int:
    """Delete the rows matching ``where`` in chunks of at most ``chunk_rows``; returns the count."""
    with connection.cursor() as cursor:
        if dry_run:
            cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params)
            return int(cursor.fetchone()[0])
        total = 0
        while True:
            cursor.execute(
                f"DELETE FROM {table} WHERE {q('id')} IN "
                f"(SELECT {q('id')} FROM {table} WHERE {where} LIMIT %s)",
                [*params, chunk_rows],
            )
            total += cursor.rowcount
            if cursor.rowcount < chunk_rows:
                return total


def _host_filter(tables: SeriesTables, host_id: int | None) -> tuple[str, list]:
    """Extra SQL condition limiting a prune to one host's rows."""
    if host_id is None:
        return "", []
    if tables.name == "host":
        return f" AND {q('host_id')} = %s", [host_id]
    gpus = f"SELECT {q('id')} FROM {q(Gpu._meta.db_table)} WHERE {q('host_id')} = %s"
    return f" AND {q('gpu_id')} IN ({gpus})", [host_id]


def prune(
    cutoffs: Cutoffs, chunk_rows: int, *, host_id: int | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Delete raw samples and roll-ups older than their cut-offs; returns rows per kind."""
    deleted: dict[str, int] = {}
    for tables in ALL_TABLES:
        extra, extra_params = _host_filter(tables, host_id)
        deleted[f"{tables.name}_raw"] = _delete(
            q(tables.raw_table),
            f"{q('time')} < %s{extra}",
            [db_time(cutoffs.raw), *extra_params],
            chunk_rows,
            dry_run,
        )
        for resolution, label, cutoff in (
            (MINUTE, "minute", cutoffs.minute),
            (TEN_MINUTES, "10min", cutoffs.minute),  # kept as long as the minutes they sum
            (HOUR, "hour", cutoffs.hour),
        ):
            deleted[f"{tables.name}_{label}"] = _delete(
                q(tables.rollup_table),
                f"{q('resolution')} = {resolution} AND {q('bucket')} < %s{extra}",
                [db_time(cutoff), *extra_params],
                chunk_rows,
                dry_run,
            )
    return deleted


def timescaledb_installed() -> bool:
    """Whether this PostgreSQL has the TimescaleDB extension (only reported, not used)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        return cursor.fetchone() is not None


def run_maintenance(
    now: datetime | None = None,
    *,
    host_name: str | None = None,
    dry_run: bool = False,
    policy: RetentionPolicy | None = None,
) -> MaintenanceResult:
    """Roll up finished buckets, then prune. Safe to call often and concurrently with writes.

    ``host_name`` limits both to one host (a worker maintains its own host); an unknown host
    has nothing to maintain. ``dry_run`` counts instead of writing.
    """
    started = time.perf_counter()
    now = as_utc(now or timezone.now())
    policy = policy or RetentionPolicy.from_settings()
    cutoffs = policy.cutoffs(now)
    result = MaintenanceResult(now=now, dry_run=dry_run, cutoffs=cutoffs)
    host_id: int | None = None
    if host_name is not None:
        host_id = Host.objects.filter(name=host_name).values_list("id", flat=True).first()
        if host_id is None:
            result.notes.append(f"no host named {host_name!r}: nothing to maintain")
            return result
    result.rolled_up = roll_up(now, policy.lookback, host_id=host_id, dry_run=dry_run)
    result.deleted = prune(cutoffs, policy.chunk_rows, host_id=host_id, dry_run=dry_run)
    result.seconds = time.perf_counter() - started
    return result
