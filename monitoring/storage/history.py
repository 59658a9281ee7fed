"""History of one metric as a downsampled series: the query behind ``GET /api/history``.

WHY: a chart wants at most a few hundred points whatever the range, and a 30-day range must
not scan millions of raw rows. So the query

1. picks a resolution for the range (``choose_resolution``): raw when the range is within raw
   retention, minute roll-ups could not give every point a row, and there are few enough
   raw rows; else the coarsest roll-up that still gives every point a row and whose
   retention reaches the start (7 days at 500 points: 1,008 10-minute rows, not 10,080
   minutes; 30 days: 720 hours, not 43,200 minutes); else 1-hour roll-ups. Rows are what
   costs: a roll-up row is wide and the series of a host are interleaved, so each row read
   is about one page read (issue 4: 28,800 minute rows for 20 days took 30-60 ms a GPU);
2. stitches fresher sources onto the end (``plan_segments``): roll-ups only exist up to the
   last maintenance run, so the minutes after the last rolled-up bucket come from finer
   roll-ups and raw rows, and a range ending now is never minutes stale;
3. downsamples in the database: every source row goes into one of ``points`` equal buckets
   (width = range / points), one ``GROUP BY`` returning min, sum, count and max per bucket.

The planning is pure; only ``history_series`` and its helpers touch the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from monitoring.metrics import ALL_METRICS, STORED_GPU_METRICS, STORED_HOST_METRICS, canonical
from monitoring.models import Gpu, Host
from monitoring.storage.retention import RetentionPolicy
from monitoring.storage.rollup import (
    GPU_TABLES,
    HOST_TABLES,
    HOUR,
    LEVELS,
    MINUTE,
    TEN_MINUTES,
    SeriesTables,
    q,
)
from monitoring.storage.times import EPOCH, as_utc, db_time, floor_time

RAW, BY_MINUTE, BY_TEN_MINUTES, BY_HOUR = "raw", "minute", "10min", "hour"
RESOLUTION_SECONDS = {RAW: 0, BY_MINUTE: MINUTE, BY_TEN_MINUTES: TEN_MINUTES, BY_HOUR: HOUR}
# Finest first: a coarser roll-up is stitched onto by the finer ones after its last bucket.
FINEST_FIRST = (RAW, BY_MINUTE, BY_TEN_MINUTES, BY_HOUR)
# Raw rows are used while there are at most this many per requested point. (The default
# view, the last hour at 1 Hz with 500 points, is 3600 rows: it stays raw.)
RAW_ROWS_PER_POINT = 8
MAX_POINTS = 5000


class HistoryError(ValueError):
    """A request that cannot be answered; ``param`` names the query parameter at fault."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Point:
    t: datetime  # start of the downsampled bucket
    min: float | None
    avg: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Series:
    host: str
    gpu: int | None  # GPU index, None for a host metric
    gpu_uuid: str | None
    metric: str
    unit: str
    # What the series is read from: the resolution chosen for the range, or a finer one where
    # that has not been rolled up yet. "raw" | "minute" | "10min" | "hour"
    resolution: str
    start: datetime
    end: datetime
    points: list[Point]


@dataclass(frozen=True, slots=True)
class Segment:
    """Part of the range read from one source."""

    source: str  # "raw" | "minute" | "10min" | "hour"
    start: datetime
    end: datetime


def choose_resolution(
    start: datetime,
    end: datetime,
    points: int,
    now: datetime,
    policy: RetentionPolicy,
    count_raw: Callable[[int], int],
) -> str:
    """The resolution for a range. ``count_raw(limit)`` counts raw rows, stopping at ``limit``.

    The finest whose retention reaches ``start``, but no finer than needed: a coarser
    resolution that still has a row for every point reads up to 10 times fewer rows. So a
    range reads at most 10 rows a point of a series (8 when raw). Hours when nothing
    finer reaches ``start``, even if they give fewer rows than points. Pure apart from the
    callback, which is only called when raw could serve the range.
    """
    seconds = (end - start).total_seconds()
    if start >= now - policy.raw and seconds / MINUTE < points:
        limit = points * RAW_ROWS_PER_POINT
        if count_raw(limit + 1) <= limit:
            return RAW
    if start >= now - policy.minute:  # minutes and 10 minutes are kept as long
        if seconds / TEN_MINUTES < points:
            return BY_MINUTE
        if seconds / HOUR < points:
            return BY_TEN_MINUTES
    return BY_HOUR


def plan_segments(
    resolution: str,
    start: datetime,
    end: datetime,
    rolled_until: dict[str, datetime | None],
) -> list[Segment]:
    """Which source serves which part of [start, end). Pure.

    ``rolled_until`` maps "minute" / "10min" / "hour" to the end of the last rolled-up bucket
    of the series (None or missing: nothing rolled up yet). The chosen resolution serves as
    far as it reaches, finer ones the rest: hour → 10 minutes → minute → raw.
    """
    segments: list[Segment] = []
    cursor = start
    for source in reversed(FINEST_FIRST[: FINEST_FIRST.index(resolution) + 1]):
        reach = end if source == RAW else min(end, rolled_until.get(source) or cursor)
        if reach > cursor:
            segments.append(Segment(source, cursor, reach))
            cursor = reach
    return segments


def _bucket_index_sql(column: str) -> str:
    """SQL for the downsampled bucket a row falls in; parameters: start epoch, width (s)."""
    if connection.vendor == "postgresql":
        return f"FLOOR((CAST(EXTRACT(EPOCH FROM {column}) AS DOUBLE PRECISION) - %s) / %s)"
    # SQLite: julianday() -> Unix seconds, rounded to its millisecond precision so that a row
    # on a bucket boundary (10:00:00 = 3599.99999… s) is not put in the bucket before.
    # CAST truncates toward zero: rows just before the start are merged into the first point.
    seconds = f"ROUND((julianday({column}) - 2440587.5) * 86400.0, 3)"
    return f"CAST(({seconds} - %s) / %s AS INTEGER)"


def _segment_sql(
    tables: SeriesTables,
    metrics: Sequence[str],
    segment: Segment,
    key: int,
    epoch0: float,
    width: float,
) -> tuple[str, list]:
    """One source's rows of the range, grouped into downsampled buckets: idx, then lo, total,
    n, hi of each metric in turn."""
    columns: list[str] = []
    if segment.source == RAW:
        for n, metric in enumerate(metrics):
            column = q(metric)
            columns.append(
                f"MIN({column}) AS lo{n}, SUM(CAST({column} AS DOUBLE PRECISION)) AS total{n}, "
                f"COUNT({column}) AS n{n}, MAX({column}) AS hi{n}"
            )
        index = _bucket_index_sql(q("time"))
        sql = (
            f"SELECT {index} AS idx, {', '.join(columns)} FROM {q(tables.raw_table)} "
            f"WHERE {q(tables.key)} = %s AND {q('time')} >= %s AND {q('time')} < %s GROUP BY 1"
        )
        return sql, [epoch0, width, key, db_time(segment.start), db_time(segment.end)]
    seconds = RESOLUTION_SECONDS[segment.source]
    weight = q("samples")
    for n, metric in enumerate(metrics):
        low, mean, high = (q(f"{metric}_{agg}") for agg in ("min", "avg", "max"))
        columns.append(
            f"MIN({low}) AS lo{n}, SUM({mean} * {weight}) AS total{n}, "
            f"SUM(CASE WHEN {mean} IS NOT NULL THEN {weight} ELSE 0 END) AS n{n}, "
            f"MAX({high}) AS hi{n}"
        )
    index = _bucket_index_sql(q("bucket"))
    sql = (
        f"SELECT {index} AS idx, {', '.join(columns)} "
        f"FROM {q(tables.rollup_table)} WHERE {q(tables.key)} = %s "
        f"AND {q('resolution')} = {seconds} AND {q('bucket')} >= %s AND {q('bucket')} < %s "
        "GROUP BY 1"
    )
    # A bucket that starts before the range but overlaps it belongs to the first point.
    first = floor_time(segment.start, seconds)
    return sql, [epoch0, width, key, db_time(first), db_time(segment.end)]


def downsample(
    tables: SeriesTables,
    key: int,
    metrics: Sequence[str],
    segments: list[Segment],
    start: datetime,
    end: datetime,
    points: int,
) -> dict[str, list[Point]]:
    """Read the segments and return at most ``points`` points per metric, in one statement
    whatever the number of metrics (empty buckets are left out)."""
    if not segments:
        return {metric: [] for metric in metrics}
    width = (end - start).total_seconds() / points
    epoch0 = (start - EPOCH).total_seconds()
    parts = [_segment_sql(tables, metrics, s, key, epoch0, width) for s in segments]
    outer = ", ".join(
        f"MIN(lo{n}), SUM(total{n}), CAST(SUM(n{n}) AS DOUBLE PRECISION), MAX(hi{n})"
        for n in range(len(metrics))
    )
    sql = (
        f"SELECT idx, {outer} FROM ("
        + " UNION ALL ".join(p[0] for p in parts)
        + ") parts GROUP BY idx ORDER BY idx"
    )
    params = [value for part in parts for value in part[1]]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return {
        metric: _merge(rows, 1 + 4 * n, start, width, points) for n, metric in enumerate(metrics)
    }


def _merge(rows: list[tuple], at: int, start: datetime, width: float, points: int) -> list[Point]:
    """The points of one metric, whose lo, total, n, hi are at ``at``.. of each row."""
    merged: dict[int, list] = {}
    for row in rows:
        low, total, count, high = row[at : at + 4]
        slot = min(max(int(row[0]), 0), points - 1)  # edges: float rounding, overlapping buckets
        if slot in merged:
            old = merged[slot]
            merged[slot] = [
                _pick(min, old[0], low),
                (old[1] or 0) + (total or 0),
                (old[2] or 0) + (count or 0),
                _pick(max, old[3], high),
            ]
        else:
            merged[slot] = [low, total, count, high]
    return [
        Point(
            t=start + timedelta(seconds=slot * width),  # rounded to the microsecond
            min=_float(low),
            avg=(float(total) / float(count)) if count and total is not None else None,
            max=_float(high),
        )
        for slot, (low, total, count, high) in sorted(merged.items())
    ]


def _pick(choose: Callable, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def resolve_host(name: str | None) -> Host:
    """The host by name; with no name, the only host there is."""
    if name:
        host = Host.objects.filter(name=name).first()
        if host is None:
            raise HistoryError("host", f"host={name!r}: no such host")
        return host
    hosts = list(Host.objects.order_by("name")[:2])
    if len(hosts) == 1:
        return hosts[0]
    if not hosts:
        raise HistoryError("host", "host=: no host has reported yet")
    raise HistoryError("host", "host= is required when several hosts report")


def resolve_gpu(host: Host, gpu: str) -> Gpu:
    """A GPU of the host by index (the one present now, if the index was reused) or UUID."""
    return pick_gpu(list(Gpu.objects.filter(host=host)), gpu, host.name)


def pick_gpu(gpus: Iterable[Gpu], gpu: str, host: str) -> Gpu:
    """The GPU among a host's ``gpus`` that ``gpu`` (an index or a UUID) names. Pure.

    An index reused after a GPU was replaced names the one present now: state "ok" before
    "lost" and "gone", then the latest seen. Raises ``HistoryError`` (``gpu``) when none does.
    """
    if gpu.isdecimal():
        index = int(gpu) if len(gpu) <= 5 else -1  # beyond any index the column holds
        found = [g for g in gpus if g.index == index]
        never = datetime.min.replace(tzinfo=EPOCH.tzinfo)
        found.sort(key=lambda g: (g.state, g.last_seen or never, g.id), reverse=True)
    else:
        found = [g for g in gpus if g.uuid == gpu]
    if not found:
        raise HistoryError("gpu", f"gpu={gpu!r}: no such GPU on host {host!r}")
    return found[0]


def check_metric(metric: str, for_gpu: bool) -> str:
    """The stored metric of the right scope that ``metric`` names, by its current name (an old
    one, ``monitoring.metrics.RENAMED``, is accepted). Raises ``HistoryError``. Pure."""
    name = canonical(metric)
    stored = STORED_GPU_METRICS if for_gpu else STORED_HOST_METRICS
    if name in stored:
        return name
    if name in ALL_METRICS and ALL_METRICS[name].stored:
        if for_gpu:
            raise HistoryError("metric", f"metric={metric!r} is a host metric: leave out gpu=")
        raise HistoryError("metric", f"metric={metric!r} is a GPU metric: give gpu=")
    kind = "GPU" if for_gpu else "host"
    raise HistoryError(
        "metric", f"metric={metric!r} is not a stored {kind} metric (one of: {', '.join(stored)})"
    )


def _rolled_until(tables: SeriesTables, key: int) -> dict[str, datetime | None]:
    last = tables.last_buckets(key)
    return {
        label: None if last[seconds] is None else last[seconds] + timedelta(seconds=seconds)
        for seconds, label in LEVELS
    }


def _count_raw(tables: SeriesTables, key: int, start: datetime, end: datetime, limit: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {q(tables.raw_table)} WHERE {q(tables.key)} = %s "
            f"AND {q('time')} >= %s AND {q('time')} < %s LIMIT %s) found",
            [key, db_time(start), db_time(end), limit],
        )
        return int(cursor.fetchone()[0])


def history_series(
    host: str | None,
    gpu: str | int | None,
    metric: str,
    start: datetime,
    end: datetime,
    points: int = 500,
    *,
    now: datetime | None = None,
    policy: RetentionPolicy | None = None,
) -> Series:
    """The series of one metric of one GPU (index or UUID) or, with ``gpu=None``, of the host.

    Raises ``HistoryError`` for an unknown host, GPU or metric or a bad range.
    """
    start, end = as_utc(start), as_utc(end)
    if start >= end:
        raise HistoryError("from", "from= must be before to=")
    if not 1 <= points <= MAX_POINTS:
        raise HistoryError("points", f"points= must be between 1 and {MAX_POINTS}")
    metric = check_metric(metric, for_gpu=gpu is not None)
    host_row = resolve_host(host)
    gpu_row = resolve_gpu(host_row, str(gpu)) if gpu is not None else None
    return read_series(host_row, gpu_row, [metric], start, end, points, now=now, policy=policy)[
        metric
    ]


def read_series(
    host: Host,
    gpu: Gpu | None,
    metrics: Sequence[str],
    start: datetime,
    end: datetime,
    points: int = 500,
    *,
    now: datetime | None = None,
    policy: RetentionPolicy | None = None,
) -> dict[str, Series]:
    """Several stored metrics of one GPU (or, ``gpu=None``, of the host), by metric.

    For pages that chart several metrics of one series: they share the resolution and the
    segments, so the figures are read in one statement (plus at most two small look-ups:
    the raw row count and the last roll-up buckets), however many metrics. The caller has
    checked the metrics and the range (``check_metric``; ``start < end``).
    """
    start, end = as_utc(start), as_utc(end)
    tables, key = (GPU_TABLES, gpu.id) if gpu else (HOST_TABLES, host.id)
    now = as_utc(now or timezone.now())
    policy = policy or RetentionPolicy.from_settings()
    resolution = choose_resolution(
        start, end, points, now, policy, lambda limit: _count_raw(tables, key, start, end, limit)
    )
    segments = plan_segments(resolution, start, end, _rolled_until(tables, key))
    read = downsample(tables, key, metrics, segments, start, end, points)
    return {
        metric: Series(
            host=host.name,
            gpu=gpu.index if gpu else None,
            gpu_uuid=gpu.reported_uuid if gpu else None,
            metric=metric,
            unit=ALL_METRICS[metric].unit,
            resolution=segments[0].source if segments else resolution,  # what served the start
            start=start,
            end=end,
            points=read[metric],
        )
        for metric in metrics
    }
