"""History query and maintenance on a month of 8-GPU history in PostgreSQL.

Fills its own database with what the retention policy leaves after ``--days`` (30) days of
one host with 8 GPUs at 1 Hz: 48 h of raw samples (1.38 M GPU rows), 30 days of 1-minute
roll-ups (345 k), 10-minute roll-ups (34.5 k) and 1-hour roll-ups (5.8 k), and the host's own
samples and roll-ups, written with COPY and interleaved in time across GPUs as the worker
writes them. As if the last maintenance ran 5 minutes ago: the newest 5 minutes are raw only.

Then times, median of ``--runs`` after one warm-up:
- ``history_series`` returning 500 points, for one GPU and for all 8 in turn (target,
  issue 4: <= 150 ms for every range a range picker gives), over 90 d to 1 h, including the
  costliest range of each resolution at 500 points (just under 3.47 d: 4,990 minute rows;
  just under 20.8 d: 2,995 10-minute rows), and the API view with JSON rendering;
- the history page (``GET /history/``) of a GPU and of the host, with a session every two
  hours per GPU;
- ``run_maintenance`` in steady state (5 more minutes of samples each run), and a first prune
  after cutting raw retention to 24 h (chunked deletes of ~0.7 M rows).

    source scripts/services.sh      # a throw-away PostgreSQL (or point DB_* at your own)
    DB=postgres .venv/bin/python bench/bench_history.py [--runs 7] [--days 90] [--json]

Writes only to its own database (``--database``, default ``hoofhearted_bench_history``),
created and migrated when missing, emptied first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_database import setup_django  # noqa: E402

GPUS = 8
HOST = "bench-history"
CHUNK_LINES = 20_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (median)")
    parser.add_argument("--days", type=int, default=30, help="days of roll-ups to fill")
    parser.add_argument("--database", default="hoofhearted_bench_history")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args()


# --- fill ------------------------------------------------------------------------------------


def stamp(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(epoch))


def copy_lines(table: str, columns: list[str], lines: Iterator[str]) -> int:
    """COPY text lines into ``table``; returns the row count."""
    from django.db import connection

    count = 0
    with connection.cursor() as cursor:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with cursor.cursor.copy(sql) as copy:
            batch: list[str] = []
            for line in lines:
                batch.append(line)
                if len(batch) == CHUNK_LINES:
                    copy.write("".join(batch))
                    count += len(batch)
                    batch = []
            copy.write("".join(batch))
            count += len(batch)
    return count


def utilization(second: int, gpu: int) -> int:
    """A synthetic but varied load: slow waves, different per GPU."""
    return (second // 7 + gpu * 13) % 101


def gpu_raw_lines(gpu_ids: list[int], start: int, end: int) -> Iterator[str]:
    for second in range(start, end):
        ts = stamp(second)
        for n, gpu_id in enumerate(gpu_ids):
            u = utilization(second, n)
            yield (
                f"{gpu_id}\t{ts}\t{u}\t{u // 3}\t{4734 + second % 600 * 10}\t{40 + u // 4}\t"
                f"{100 + u * 6.0:.1f}\t\\N\t1350\t2619\t0\t0\t{second % 1000 * 1000}\t"
                f"{second % 777 * 1000}\n"
            )


def host_raw_lines(host_id: int, start: int, end: int) -> Iterator[str]:
    for second in range(start, end):
        u = utilization(second, 3)
        yield (
            f"{host_id}\t{stamp(second)}\t{u * 0.9:.1f}\t{30 + u / 10:.1f}\t0.0\t"
            f"{u / 25:.2f}\t{u / 30:.2f}\t{u / 35:.2f}\t{u * 1000}\t{u * 800}\t{u * 500}\t{u * 400}\n"
        )


def _aggregates(values: list[float | None]) -> str:
    out = []
    for value in values:
        if value is None:
            out.append("\\N\t\\N\t\\N")
        else:
            out.append(f"{value * 0.8:.2f}\t{value:.2f}\t{value * 1.2 + 1:.2f}")
    return "\t".join(out)


def gpu_rollup_lines(gpu_ids: list[int], resolution: int, start: int, end: int) -> Iterator[str]:
    for bucket in range(start, end, resolution):
        ts = stamp(bucket)
        for n, gpu_id in enumerate(gpu_ids):
            u = utilization(bucket, n)
            values = [u, u / 3, 4734.0, 40 + u / 4, 100 + u * 6.0, None, 1350, 2619, 0, 0, 1e5, 2e5]
            yield f"{gpu_id}\t{resolution}\t{ts}\t{resolution}\t{_aggregates(values)}\n"


def host_rollup_lines(host_id: int, resolution: int, start: int, end: int) -> Iterator[str]:
    for bucket in range(start, end, resolution):
        u = utilization(bucket, 3)
        values = [u * 0.9, 30 + u / 10, 0.0, u / 25, u / 30, u / 35, u * 1e3, u * 8e2, 5e2, 4e2]
        yield f"{host_id}\t{resolution}\t{stamp(bucket)}\t{resolution}\t{_aggregates(values)}\n"


def fill(now: datetime, days: int) -> dict[str, int]:
    """The month of history the retention policy leaves, as of ``now``."""
    from django.conf import settings
    from django.db import connection

    from monitoring.metrics import STORED_GPU_METRICS, STORED_HOST_METRICS
    from monitoring.models import Gpu, GpuRollup, GpuSample, Host, HostRollup, HostSample
    from monitoring.storage.rollup import HOUR, MINUTE, TEN_MINUTES
    from monitoring.storage.times import floor_time

    tables = [GpuSample, HostSample, GpuRollup, HostRollup, Gpu, Host]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(m._meta.db_table for m in tables)} CASCADE")
    host = Host.objects.create(name=HOST, cores=2)
    gpu_ids = [
        Gpu.objects.create(host=host, uuid=f"GPU-bench-history-{i}", index=i, name="H100").id
        for i in range(GPUS)
    ]
    last_run = now - timedelta(minutes=5)  # the previous maintenance
    epoch = lambda moment: int(moment.timestamp())  # noqa: E731
    raw_from = epoch(floor_time(last_run - timedelta(hours=settings.RETENTION_RAW_HOURS), MINUTE))
    minutes_to = epoch(floor_time(last_run, MINUTE))
    tens_to = epoch(floor_time(last_run, TEN_MINUTES))
    hours_to = epoch(floor_time(last_run, HOUR))
    rollups_from = epoch(floor_time(now - timedelta(days=days), HOUR))
    raw_cols = ["gpu_id", "time", *STORED_GPU_METRICS]
    host_cols = ["host_id", "time", *STORED_HOST_METRICS]
    agg = lambda keys: [f"{k}_{a}" for k in keys for a in ("min", "avg", "max")]  # noqa: E731
    rollup_cols = ["gpu_id", "resolution", "bucket", "samples", *agg(STORED_GPU_METRICS)]
    host_rollup_cols = ["host_id", "resolution", "bucket", "samples", *agg(STORED_HOST_METRICS)]
    rows = {
        "gpu raw": copy_lines(
            "monitoring_gpusample", raw_cols, gpu_raw_lines(gpu_ids, raw_from, epoch(now))
        ),
        "gpu minute": copy_lines(
            "monitoring_gpurollup",
            rollup_cols,
            gpu_rollup_lines(gpu_ids, MINUTE, rollups_from, minutes_to),
        ),
        "gpu 10min": copy_lines(
            "monitoring_gpurollup",
            rollup_cols,
            gpu_rollup_lines(gpu_ids, TEN_MINUTES, rollups_from, tens_to),
        ),
        "gpu hour": copy_lines(
            "monitoring_gpurollup",
            rollup_cols,
            gpu_rollup_lines(gpu_ids, HOUR, rollups_from, hours_to),
        ),
        "host raw": copy_lines(
            "monitoring_hostsample", host_cols, host_raw_lines(host.id, raw_from, epoch(now))
        ),
        "host minute": copy_lines(
            "monitoring_hostrollup",
            host_rollup_cols,
            host_rollup_lines(host.id, MINUTE, rollups_from, minutes_to),
        ),
        "host 10min": copy_lines(
            "monitoring_hostrollup",
            host_rollup_cols,
            host_rollup_lines(host.id, TEN_MINUTES, rollups_from, tens_to),
        ),
        "host hour": copy_lines(
            "monitoring_hostrollup",
            host_rollup_cols,
            host_rollup_lines(host.id, HOUR, rollups_from, hours_to),
        ),
    }
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return rows


def table_sizes() -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
            "WHERE relname IN ('monitoring_gpusample', 'monitoring_gpurollup', "
            "'monitoring_hostsample', 'monitoring_hostrollup') ORDER BY relname"
        )
        return dict(cursor.fetchall())


# --- timing ----------------------------------------------------------------------------------


def timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    """Median wall time in ms of ``runs`` calls after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def history_figures(now: datetime, runs: int) -> dict[str, object]:
    from django.test import RequestFactory

    from dashboard import api
    from monitoring.storage.history import history_series

    figures: dict[str, object] = {}
    # At 500 points: hours from 20.8 d (500 hours) up, 10 minutes from 3.47 d up, minutes
    # below, raw up to 4,000 rows (1.1 h). Just under each switch is the costliest range of a
    # resolution. (90 d reads what the fill holds: --days 90 for the whole range.)
    spans = (
        ("90 d", timedelta(days=90)),
        ("30 d", timedelta(days=30)),
        ("20.8 d", timedelta(hours=499)),
        ("7 d", timedelta(days=7)),
        ("3.47 d", timedelta(minutes=4990)),
        ("24 h", timedelta(hours=24)),
        ("1 h", timedelta(hours=1)),
    )
    for label, span in spans:
        start = now - span
        one, series = timed(
            lambda s=start: history_series(HOST, 0, "utilization", s, now, 500, now=now), runs
        )
        every, _ = timed(
            lambda s=start: [
                history_series(HOST, i, "utilization", s, now, 500, now=now) for i in range(GPUS)
            ],
            runs,
        )
        figures[f"{label}, 1 GPU, 500 points (ms)"] = round(one, 1)
        figures[f"{label}, 8 GPUs one after another, 500 points each (ms)"] = round(every, 1)
        figures[f"{label} resolution / points returned"] = (
            f"{series.resolution} / {len(series.points)}"
        )
    host, _ = timed(
        lambda: history_series(
            HOST, None, "cpu_percent", now - timedelta(days=30), now, 500, now=now
        ),
        runs,
    )
    figures["30 d, host CPU, 500 points (ms)"] = round(host, 1)
    request = RequestFactory().get(
        "/api/history",
        {"host": HOST, "gpu": "3", "metric": "power_w", "from": "-30d", "points": "500"},
    )
    view, response = timed(lambda: api.history(request), runs)
    assert response.status_code == 200, response.content[:300]
    figures["GET /api/history 30 d, 1 GPU, JSON (ms)"] = round(view, 1)
    return figures


def add_sessions(now: datetime, days: int) -> int:
    """A GPU process session every 2 hours per GPU, 90 minutes long, over the fill."""
    from monitoring.models import Gpu, ProcessSession

    sessions = []
    for gpu in Gpu.objects.filter(host__name=HOST):
        for n in range(days * 12):
            start = now - timedelta(hours=2 * n + 2)
            sessions.append(
                ProcessSession(
                    gpu=gpu, pid=1000 + n, name="python3", user=f"user{n % 5}",
                    container="docker train", command=f"python3 train.py --run {n}",
                    first_seen=start, last_seen=start + timedelta(minutes=90), open=False,
                    peak_memory_mib=40_000, mean_memory_mib=30_000.0, samples=2700,
                )
            )  # fmt: skip
    ProcessSession.objects.bulk_create(sessions, batch_size=2000)
    return len(sessions)


def page_figures(now: datetime, days: int, runs: int) -> dict[str, object]:
    """The history page (``GET /history/``): every chart of a GPU or the host read in one
    statement, and the sessions in the range, rendered to HTML."""
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from dashboard import views

    figures: dict[str, object] = {"sessions added": add_sessions(now, days)}
    factory = RequestFactory()
    for label, params in (
        ("1 h, GPU 3", {"gpu": "3", "range": "1h"}),
        ("24 h, GPU 3", {"gpu": "3", "range": "24h"}),
        ("7 d, GPU 3", {"gpu": "3", "range": "7d"}),
        ("30 d, GPU 3", {"gpu": "3", "range": "30d"}),
        ("30 d, host", {"range": "30d"}),
    ):
        request = factory.get("/history/", {"host": HOST, **params})
        page, response = timed(lambda r=request: views.history(r), runs)
        assert response.status_code == 200, response.content[:300]
        with CaptureQueriesContext(connection) as queries:
            views.history(request)
        figures[f"GET /history/ {label} (ms / statements / KiB)"] = (
            f"{page:.1f} / {len(queries)} / {len(response.content) / 1024:.0f}"
        )
    return figures


def maintenance_figures(now: datetime, runs: int) -> dict[str, object]:
    from django.db import connection

    from monitoring.metrics import STORED_GPU_METRICS, STORED_HOST_METRICS
    from monitoring.models import Gpu, GpuSample, Host
    from monitoring.storage.retention import RetentionPolicy, run_maintenance

    figures: dict[str, object] = {}
    first = run_maintenance(now)
    figures["maintenance, first run after the fill (ms)"] = round(first.seconds * 1000, 1)
    figures["  rolled up / deleted"] = f"{first.rolled_up} / {first.deleted}"
    gpu_ids = list(Gpu.objects.order_by("index").values_list("id", flat=True))
    host_id = Host.objects.get(name=HOST).id
    times = []
    for _ in range(runs):
        start = int(now.timestamp())
        now += timedelta(minutes=5)
        copy_lines(
            "monitoring_gpusample",
            ["gpu_id", "time", *STORED_GPU_METRICS],
            gpu_raw_lines(gpu_ids, start, int(now.timestamp())),
        )
        copy_lines(
            "monitoring_hostsample",
            ["host_id", "time", *STORED_HOST_METRICS],
            host_raw_lines(host_id, start, int(now.timestamp())),
        )
        result = run_maintenance(now)
        times.append(result.seconds * 1000)
    figures["maintenance every 5 min, steady state, median (ms)"] = round(
        statistics.median(times), 1
    )
    figures["  last run rolled up / deleted"] = f"{result.rolled_up} / {result.deleted}"
    policy = RetentionPolicy.from_settings()
    shorter = RetentionPolicy(
        raw=timedelta(hours=24),
        minute=policy.minute,
        hour=policy.hour,
        lookback=policy.lookback,
        chunk_rows=policy.chunk_rows,
    )
    before = GpuSample.objects.count()
    big = run_maintenance(now, policy=shorter)
    figures["first prune after raw retention 48 h -> 24 h (ms)"] = round(big.seconds * 1000, 1)
    figures["  raw GPU rows deleted (chunks of PRUNE_CHUNK_ROWS)"] = (
        f"{big.deleted['gpu_raw']} of {before} ({policy.chunk_rows} a chunk)"
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return figures


def main() -> None:
    args = parse_args()
    setup_django(args.database, "bench_history")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    rows = fill(now, args.days)
    fill_s = time.perf_counter() - started
    figures: dict[str, object] = {
        "PostgreSQL": version,
        "CPU cores": os.cpu_count(),
        "rows filled (COPY)": rows,
        "fill + VACUUM ANALYZE (s)": round(fill_s, 1),
        "table sizes": table_sizes(),
    }
    figures.update(history_figures(now, args.runs))
    figures.update(page_figures(now, args.days, args.runs))
    figures.update(maintenance_figures(now, args.runs))
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
        return
    for key, value in figures.items():
        print(f"{key:58} {value}")


if __name__ == "__main__":
    main()
