"""Roll raw samples up into 1-minute buckets, and minute buckets into 1-hour buckets.

WHY: a year at 1 Hz for 8 GPUs is 250 M raw rows. Kept as 48 h raw (1.4 M) + 90 d of
minutes (1.0 M) and of 10-minute buckets (0.1 M) + 2 y of hours (0.14 M) it stays about
2.5 M rows whatever the age, and history reads at most a few thousand rows per series.

How, and why it never double counts:

- Set-based SQL: one ``INSERT … SELECT … GROUP BY`` per resolution for a group of series (a
  host's GPUs), bucketed with ``date_trunc`` on PostgreSQL and ``strftime`` on SQLite. No
  Python loop over sample rows.
- A bucket is computed from *all* rows of its source, never added to: the insert is an upsert
  on the unique (key, resolution, bucket) constraint, so re-running rewrites the same value.
  The update only fires when the bucket's sample count changed, so a re-run writes nothing.
- Only completed buckets (bucket end <= now) are rolled up.
- Late rows: the worker writes buffered samples when the database comes back, with their
  original times. Each run therefore recomputes the buckets of the last ``lookback`` as well as
  everything after the last rolled-up bucket (catching up after downtime).
- 10-minute and hour buckets come from minute buckets, averages weighted by each minute's
  sample count.

``run_maintenance`` (roll up, then prune) lives in ``monitoring.storage.retention``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import NotSupportedError, connection
from django.db.models import Model

from monitoring.metrics import STORED_GPU_METRICS, STORED_HOST_METRICS
from monitoring.models import Gpu, GpuRollup, GpuSample, Host, HostRollup, HostSample
from monitoring.storage.times import EPOCH, db_time, floor_time, from_db_time

MINUTE = GpuRollup.MINUTE
TEN_MINUTES = GpuRollup.TEN_MINUTES
HOUR = GpuRollup.HOUR
# Every roll-up resolution, finest first (the order they are rolled up in), with its label in
# the maintenance counts ("gpu_minute" …) and the history API's "resolution".
LEVELS = ((MINUTE, "minute"), (TEN_MINUTES, "10min"), (HOUR, "hour"))
# Series rolled up by one statement at most: one scan for a host's GPUs, bounded work each.
KEYS_PER_STATEMENT = 32


@dataclass(frozen=True, slots=True)
class SeriesTables:
    """Where one kind of series (GPU or host) keeps its raw samples and roll-ups."""

    name: str  # "gpu" | "host"
    raw: type[Model]
    rollup: type[Model]
    key: str  # the series key column in both tables: "gpu_id" | "host_id"
    metrics: tuple[str, ...]

    @property
    def raw_table(self) -> str:
        return self.raw._meta.db_table

    @property
    def rollup_table(self) -> str:
        return self.rollup._meta.db_table

    def keys(self, host_id: int | None) -> list[int]:
        """Ids of the series to maintain: every GPU / host, or those of one host."""
        if self.name == "host":
            query = Host.objects.all() if host_id is None else Host.objects.filter(id=host_id)
        else:
            query = Gpu.objects.all() if host_id is None else Gpu.objects.filter(host_id=host_id)
        return list(query.order_by("id").values_list("id", flat=True))

    def last_buckets(self, key: int) -> dict[int, datetime | None]:
        """Start of the newest bucket of one series at each resolution: one statement, one
        index look-up each (the history query runs this on every request)."""
        table, where = q(self.rollup_table), f"{q(self.key)} = %s AND {q('resolution')}"
        newest = f"SELECT MAX({q('bucket')}) FROM {table} WHERE {where}"
        with connection.cursor() as cursor:
            columns = ", ".join(f"({newest} = {seconds})" for seconds, _ in LEVELS)
            cursor.execute(f"SELECT {columns}", [key] * len(LEVELS))
            found = cursor.fetchone()
        return {
            seconds: from_db_time(value) for (seconds, _), value in zip(LEVELS, found, strict=True)
        }

    def last_bucket(self, key: int, resolution: int) -> datetime | None:
        return self.last_buckets(key)[resolution]


GPU_TABLES = SeriesTables("gpu", GpuSample, GpuRollup, "gpu_id", STORED_GPU_METRICS)
HOST_TABLES = SeriesTables("host", HostSample, HostRollup, "host_id", STORED_HOST_METRICS)
ALL_TABLES = (GPU_TABLES, HOST_TABLES)


def q(name: str) -> str:
    return connection.ops.quote_name(name)


def truncate_sql(column: str, seconds: int) -> str:
    """SQL for the start of the minute / 10 minutes / hour holding ``column``, as stored in
    ``bucket`` (10-minute buckets are aligned to the Unix epoch, as ``floor_time``)."""
    if connection.vendor == "postgresql":
        if seconds == TEN_MINUTES:
            return f"to_timestamp(FLOOR(EXTRACT(EPOCH FROM {column}) / {seconds}) * {seconds})"
        unit = {MINUTE: "minute", HOUR: "hour"}[seconds]
        return f"date_trunc('{unit}', {column})"
    if connection.vendor == "sqlite":
        if seconds == TEN_MINUTES:
            epoch = f"CAST(strftime('%%s', {column}) AS INTEGER)"
            return f"datetime({epoch} / {seconds} * {seconds}, 'unixepoch')"
        # '%%' because the SQL goes through the DB-API's %s parameter formatting.
        fmt = {MINUTE: "%%Y-%%m-%%d %%H:%%M:00", HOUR: "%%Y-%%m-%%d %%H:00:00"}[seconds]
        return f"strftime('{fmt}', {column})"
    raise NotSupportedError(f"roll-ups support PostgreSQL and SQLite, not {connection.vendor}")


def _select_sql(tables: SeriesTables, resolution: int, keys: int) -> str:
    """One row per bucket of ``keys`` series in [start, until): key, resolution, bucket,
    samples, aggregates. Parameters: the keys, start, until.
    """
    key = q(tables.key)
    among = f"{key} IN ({', '.join(['%s'] * keys)})"
    aggregates: list[str] = []
    if resolution == MINUTE:  # from raw samples
        source, time = q(tables.raw_table), q("time")
        samples = "COUNT(*)"
        for metric in tables.metrics:
            column = q(metric)
            aggregates += [
                f"MIN({column})",
                f"AVG(CAST({column} AS DOUBLE PRECISION))",
                f"MAX({column})",
            ]
        where = f"{among} AND {time} >= %s AND {time} < %s"
    else:  # from minute roll-ups, means weighted by each minute's sample count
        source, time = q(tables.rollup_table), q("bucket")
        weight = q("samples")
        samples = f"SUM({weight})"
        for metric in tables.metrics:
            low, mean, high = (q(f"{metric}_{agg}") for agg in ("min", "avg", "max"))
            aggregates += [
                f"MIN({low})",
                f"SUM({mean} * {weight}) / SUM(CASE WHEN {mean} IS NOT NULL THEN {weight} END)",
                f"MAX({high})",
            ]
        where = f"{among} AND {q('resolution')} = {MINUTE} AND {time} >= %s AND {time} < %s"
    bucket = truncate_sql(time, resolution)
    return (
        f"SELECT {key} AS k, {resolution} AS r, {bucket} AS b, {samples} AS n, "
        f"{', '.join(aggregates)} FROM {source} WHERE {where} GROUP BY {key}, {bucket}"
    )


def upsert_sql(tables: SeriesTables, resolution: int, keys: int = 1) -> str:
    """Write the buckets of ``_select_sql``; rewrite an existing one only if its count changed."""
    table = q(tables.rollup_table)
    metric_columns = [q(f"{m}_{agg}") for m in tables.metrics for agg in ("min", "avg", "max")]
    columns = [q(tables.key), q("resolution"), q("bucket"), q("samples"), *metric_columns]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in [q("samples"), *metric_columns])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) {_select_sql(tables, resolution, keys)} "
        f"ON CONFLICT ({q(tables.key)}, {q('resolution')}, {q('bucket')}) DO UPDATE SET {updates} "
        f"WHERE {table}.{q('samples')} <> EXCLUDED.{q('samples')}"
    )


def count_changes_sql(tables: SeriesTables, resolution: int, keys: int = 1) -> str:
    """How many buckets ``upsert_sql`` would write (for ``--dry-run``)."""
    table = q(tables.rollup_table)
    return (
        f"SELECT COUNT(*) FROM ({_select_sql(tables, resolution, keys)}) fresh "
        f"LEFT JOIN {table} kept ON kept.{q(tables.key)} = fresh.k "
        f"AND kept.{q('resolution')} = {resolution} AND kept.{q('bucket')} = fresh.b "
        f"WHERE kept.{q('id')} IS NULL OR kept.{q('samples')} <> fresh.n"
    )


def rollup_window(
    last_bucket: datetime | None, until: datetime, recompute_from: datetime, resolution: int
) -> tuple[datetime, datetime] | None:
    """The buckets [start, until) one run must (re)compute for one series, or None.

    Everything after the last rolled-up bucket (catch-up), plus the recent ``recompute_from``
    window that late rows may still change. Pure.
    """
    recompute_from = floor_time(recompute_from, resolution)
    if last_bucket is None:
        start = EPOCH
    else:
        start = min(last_bucket + timedelta(seconds=resolution), recompute_from)
    return (start, until) if start < until else None


def roll_up_level(
    tables: SeriesTables,
    keys: list[int],
    resolution: int,
    now: datetime,
    lookback: timedelta,
    *,
    dry_run: bool = False,
) -> int:
    """Roll up the completed buckets of these series at one resolution; returns buckets written.

    Each series has its own window; series with the same window (all of them, in the steady
    state) share statements of up to ``KEYS_PER_STATEMENT``, so that a host's GPUs are read
    in one scan rather than one scan each.
    """
    until = floor_time(now, resolution)
    groups: dict[tuple[datetime, datetime], list[int]] = defaultdict(list)
    for key in keys:
        last = tables.last_bucket(key, resolution)
        window = rollup_window(last, until, now - lookback, resolution)
        if window is not None:
            groups[window].append(key)
    written = 0
    for (start, end), members in groups.items():
        for i in range(0, len(members), KEYS_PER_STATEMENT):
            chunk = members[i : i + KEYS_PER_STATEMENT]
            params = [*chunk, db_time(start), db_time(end)]
            with connection.cursor() as cursor:
                if dry_run:
                    cursor.execute(count_changes_sql(tables, resolution, len(chunk)), params)
                    written += int(cursor.fetchone()[0])
                else:
                    cursor.execute(upsert_sql(tables, resolution, len(chunk)), params)
                    written += max(cursor.rowcount, 0)
    return written


def roll_up(
    now: datetime, lookback: timedelta, *, host_id: int | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Roll up every series (or one host's): minutes from raw, then 10 minutes and hours
    from minutes.

    Returns buckets written per ``"<gpu|host>_<minute|10min|hour>"``. In a dry run the
    coarser levels are counted from the minute buckets that already exist.
    """
    written: dict[str, int] = {}
    for tables in ALL_TABLES:
        keys = tables.keys(host_id)
        for resolution, label in LEVELS:
            written[f"{tables.name}_{label}"] = roll_up_level(
                tables, keys, resolution, now, lookback, dry_run=dry_run
            )
    return written
