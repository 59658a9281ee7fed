"""Roll-ups and retention on the real database: values against raw, idempotence, late rows,
hour-from-minute weighting, prune boundaries and chunks, one host only, dry run, the command.

Sample rows start from the real H100 capture's readings (played through ReplaySource) with
synthetic series laid over the metrics under test, written with bulk_create.
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.models import Gpu, GpuRollup, GpuSample, HostRollup, HostSample
from monitoring.storage.retention import prune, run_maintenance
from monitoring.storage.rollup import HOUR, MINUTE, TEN_MINUTES, rollup_window
from monitoring.storage.times import floor_time
from monitoring.tests.helpers import (
    POLICY,
    Series,
    captured,
    expected,
    gpu_rows,
    host_rows,
    make_host,
)

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def rollup_rows(gpu: Gpu, resolution: int, buckets: list[datetime], **values: float):
    return GpuRollup.objects.bulk_create(
        GpuRollup(gpu=gpu, resolution=resolution, bucket=b, samples=60, **values) for b in buckets
    )


def minutes_of(gpu: Gpu) -> dict[datetime, GpuRollup]:
    return {
        r.bucket: r for r in GpuRollup.objects.filter(gpu=gpu, resolution=MINUTE).order_by("bucket")
    }


# --- pure ------------------------------------------------------------------------------------


def test_it_floors_times_to_whole_minutes_and_hours():
    moment = datetime(2026, 3, 1, 12, 34, 56, 789, tzinfo=UTC)
    assert floor_time(moment, MINUTE) == datetime(2026, 3, 1, 12, 34, tzinfo=UTC)
    assert floor_time(moment, HOUR) == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert floor_time(moment.replace(tzinfo=None), MINUTE).tzinfo is UTC


def test_it_recomputes_after_the_last_bucket_and_the_recent_window_only():
    until = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    recent = until - timedelta(minutes=65)
    # Caught up: only the recent window (late rows) is recomputed.
    assert rollup_window(until - timedelta(minutes=1), until, recent, MINUTE) == (
        datetime(2026, 3, 1, 10, 55, tzinfo=UTC),
        until,
    )
    # Behind (the worker was down): everything after the last bucket.
    last = until - timedelta(days=1)
    assert rollup_window(last, until, recent, MINUTE) == (last + timedelta(minutes=1), until)
    # Nothing complete since the last bucket: nothing to do.
    assert rollup_window(until, until, until, MINUTE) is None


def test_it_aligns_prune_cutoffs_to_whole_buckets_of_the_next_level():
    cut = POLICY.cutoffs(NOW)  # 2026-03-01 12:00:30 less 48 h, 90 d, 730 d
    assert cut.raw == datetime(2026, 2, 27, 12, 0, tzinfo=UTC)
    assert cut.minute == datetime(2025, 12, 1, 12, 0, tzinfo=UTC)
    assert cut.hour == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


# --- roll-ups --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_rolls_completed_minutes_up_from_raw_with_min_avg_max_and_count():
    host, (gpu, other) = make_host()
    start = datetime(2026, 3, 1, 11, 55, tzinfo=UTC)
    util: Series = lambda i: (i * 37) % 101  # noqa: E731
    power: Series = lambda i: 300.0 + 7.25 * math.sin(i / 5)  # noqa: E731
    rows = gpu_rows(gpu, start, 330, utilization=util, power_w=power)  # to 12:00:29
    gpu_rows(other, start, 330, utilization=lambda i: 5)
    host_rows(host, start, 330, cpu_percent=lambda i: i % 50 * 1.5)

    result = run_maintenance(NOW, policy=POLICY)

    minutes = minutes_of(gpu)
    assert list(minutes) == [start + timedelta(minutes=m) for m in range(5)]  # not 12:00 yet
    for bucket, rollup in minutes.items():
        inside = [r for r in rows if bucket <= r.time < bucket + timedelta(minutes=1)]
        assert rollup.samples == len(inside) == 60
        for metric in ("utilization", "power_w", "memory_used_mib", "fan_speed"):
            low, mean, high = expected([getattr(r, metric) for r in inside])
            assert getattr(rollup, f"{metric}_min") == low
            assert getattr(rollup, f"{metric}_max") == high
            assert getattr(rollup, f"{metric}_avg") == pytest.approx(mean)
    assert rollup.fan_speed_avg is None  # the H100 reports no fan: stays unknown, not 0
    assert {r.utilization_avg for r in minutes_of(other).values()} == {5.0}
    host_minutes = HostRollup.objects.filter(host=host, resolution=MINUTE).order_by("bucket")
    assert host_minutes.count() == 5
    assert host_minutes[0].cpu_percent_max == 73.5 and host_minutes[0].samples == 60
    # 11:00-12:00 is over at 12:00:30: its hour (and 11:50-12:00) are rolled up from the
    # five minutes.
    assert result.rolled_up == {
        "gpu_minute": 10,
        "gpu_10min": 2,
        "gpu_hour": 2,
        "host_minute": 5,
        "host_10min": 1,
        "host_hour": 1,
    }
    low, mean, high = expected([util(i) for i in range(300)])
    for resolution, bucket in ((HOUR, "11:00"), (TEN_MINUTES, "11:50")):
        coarse = GpuRollup.objects.get(gpu=gpu, resolution=resolution)
        assert (f"{coarse.bucket:%H:%M}", coarse.samples) == (bucket, 300)
        assert (coarse.utilization_min, coarse.utilization_max) == (low, high)
        assert coarse.utilization_avg == pytest.approx(mean)


@pytest.mark.django_db
def test_a_series_never_rolled_up_has_its_oldest_samples_rolled_up_not_only_the_recent_ones():
    _host, (gpu,) = make_host(gpus=1)
    old = datetime(2026, 2, 27, 13, 0, tzinfo=UTC)  # 47 h before NOW, far beyond the lookback
    gpu_rows(gpu, old, 120, utilization=lambda i: 40)

    run_maintenance(NOW, policy=POLICY)

    assert list(minutes_of(gpu)) == [old, old + timedelta(minutes=1)]
    hour = GpuRollup.objects.get(gpu=gpu, resolution=HOUR)
    assert (hour.bucket, hour.samples, hour.utilization_avg) == (old, 120, 40.0)


@pytest.mark.django_db
def test_it_does_not_double_count_when_run_again():
    _host, (gpu, _) = make_host()
    gpu_rows(gpu, datetime(2026, 3, 1, 9, 0, tzinfo=UTC), 3 * 3600, utilization=lambda i: i % 90)
    first = run_maintenance(NOW, policy=POLICY)
    before = {
        (r.resolution, r.bucket): (r.samples, r.utilization_avg)
        for r in GpuRollup.objects.filter(gpu=gpu)
    }

    again = run_maintenance(NOW, policy=POLICY)
    later = run_maintenance(NOW + timedelta(seconds=20), policy=POLICY)

    after = {
        (r.resolution, r.bucket): (r.samples, r.utilization_avg)
        for r in GpuRollup.objects.filter(gpu=gpu)
    }
    assert after == before
    assert first.rolled_up["gpu_minute"] == 180 and first.rolled_up["gpu_hour"] == 3
    assert first.rolled_up["gpu_10min"] == 18
    assert again.rolled_up == later.rolled_up == dict.fromkeys(again.rolled_up, 0)
    assert sum(s for s, _ in after.values() if s) == 3 * 3 * 3600  # minutes + 10 min + hours


@pytest.mark.django_db
def test_it_takes_in_samples_written_late_for_a_minute_already_rolled_up():
    _host, (gpu, _) = make_host()
    start = datetime(2026, 3, 1, 11, 50, tzinfo=UTC)
    rows = gpu_rows(gpu, start, 600, utilization=lambda i: 10)
    run_maintenance(NOW, policy=POLICY)
    # The worker's outage buffer arrives: ten half-second readings inside 11:57.
    late = gpu_rows(
        gpu, datetime(2026, 3, 1, 11, 57, 0, 500000, tzinfo=UTC), 10, utilization=lambda i: 70
    )

    result = run_maintenance(NOW + timedelta(seconds=5), policy=POLICY)

    assert result.rolled_up["gpu_minute"] == 1
    minute = minutes_of(gpu)[datetime(2026, 3, 1, 11, 57, tzinfo=UTC)]
    assert minute.samples == 70
    assert minute.utilization_avg == pytest.approx((60 * 10 + 10 * 70) / 70)
    assert minute.utilization_max == 70
    assert sum(r.samples for r in minutes_of(gpu).values()) == len(rows) + len(late)


@pytest.mark.django_db
def test_it_builds_hours_from_minutes_weighted_by_their_sample_counts():
    _host, (gpu, _) = make_host()
    ten = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    gpu_rows(gpu, ten, 60, utilization=lambda i: 0, power_w=lambda i: 100.0)
    gpu_rows(gpu, ten + timedelta(minutes=30), 6, step_s=10, utilization=lambda i: 90)
    gpu_rows(gpu, ten + timedelta(minutes=61), 60, utilization=lambda i: 50)  # 11:01, incomplete

    run_maintenance(datetime(2026, 3, 1, 11, 59, 59, tzinfo=UTC), policy=POLICY)

    hours = list(GpuRollup.objects.filter(gpu=gpu, resolution=HOUR))
    assert [h.bucket for h in hours] == [ten]  # 11:00 is not over yet
    hour = hours[0]
    assert hour.samples == 66
    assert hour.utilization_avg == pytest.approx(6 * 90 / 66)  # not (0 + 90) / 2
    assert (hour.utilization_min, hour.utilization_max) == (0, 90)
    # A metric present in only some minutes is averaged over those minutes only.
    assert hour.power_w_avg == pytest.approx((100.0 * 60 + captured()[0]["power_w"] * 6) / 66)
    assert hour.fan_speed_avg is None


@pytest.mark.django_db
def test_it_rolls_up_raw_past_retention_before_deleting_it():
    _host, (gpu, _) = make_host()
    old = floor_time(NOW - timedelta(hours=50), MINUTE)
    gpu_rows(gpu, old, 120, utilization=lambda i: 40)

    result = run_maintenance(NOW, policy=POLICY)

    assert result.deleted["gpu_raw"] == 120
    assert not GpuSample.objects.exists()
    assert [r.samples for r in minutes_of(gpu).values()] == [60, 60]
    assert GpuRollup.objects.get(gpu=gpu, resolution=HOUR).utilization_avg == 40


# --- pruning ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_prunes_each_resolution_at_its_own_boundary():
    host, (gpu, _) = make_host()
    cut = POLICY.cutoffs(NOW)
    second, minute, hour = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)
    gpu_rows(gpu, cut.raw - second, 2, utilization=lambda i: 1)  # one before, one at the cut
    host_rows(host, cut.raw - second, 2)
    rollup_rows(gpu, MINUTE, [cut.minute - minute, cut.minute], utilization_avg=2)
    rollup_rows(gpu, TEN_MINUTES, [cut.minute - 10 * minute, cut.minute], utilization_avg=2)
    rollup_rows(gpu, HOUR, [cut.hour - hour, cut.hour], utilization_avg=3)
    HostRollup.objects.bulk_create(
        HostRollup(host=host, resolution=MINUTE, bucket=b, samples=60)
        for b in (cut.minute - minute, cut.minute)
    )

    result = run_maintenance(NOW, policy=POLICY)

    assert list(GpuSample.objects.values_list("time", flat=True)) == [cut.raw]
    assert list(HostSample.objects.values_list("time", flat=True)) == [cut.raw]
    minutes = GpuRollup.objects.filter(gpu=gpu, resolution=MINUTE)
    assert minutes.filter(bucket__lt=cut.minute).count() == 0
    assert minutes.filter(bucket=cut.minute).exists()
    tens = GpuRollup.objects.filter(gpu=gpu, resolution=TEN_MINUTES)
    assert tens.filter(bucket__lt=cut.minute).count() == 0  # kept as long as minutes
    assert tens.filter(bucket=cut.minute).exists()
    hours = GpuRollup.objects.filter(gpu=gpu, resolution=HOUR)
    assert hours.filter(bucket__lt=cut.hour).count() == 0
    assert hours.filter(bucket=cut.hour).exists()
    assert not HostRollup.objects.filter(resolution=MINUTE, bucket__lt=cut.minute).exists()
    assert result.deleted == {
        "gpu_raw": 1,
        "gpu_minute": 1,
        "gpu_10min": 1,
        "gpu_hour": 1,
        "host_raw": 1,
        "host_minute": 1,
        "host_10min": 1,  # rolled up from the minute before the cut, then pruned
        "host_hour": 0,
    }


@pytest.mark.django_db
def test_it_deletes_in_bounded_chunks():
    _host, (gpu, _) = make_host()
    gpu_rows(gpu, NOW - timedelta(days=5), 50)
    cutoffs = POLICY.cutoffs(NOW)

    with CaptureQueriesContext(connection) as queries:
        deleted = prune(cutoffs, chunk_rows=7)

    assert deleted["gpu_raw"] == 50
    assert not GpuSample.objects.exists()
    raw_deletes = [
        q["sql"] for q in queries if q["sql"].startswith("DELETE") and "gpusample" in q["sql"]
    ]
    assert len(raw_deletes) == 8  # 7 full chunks of 7, then 1 row and stop


@pytest.mark.django_db
def test_it_maintains_only_the_named_host():
    _mine, (my_gpu, _) = make_host("mine")
    _theirs, (their_gpu, _) = make_host("theirs")
    for gpu in (my_gpu, their_gpu):
        gpu_rows(gpu, NOW - timedelta(days=3), 60)
        gpu_rows(gpu, NOW - timedelta(minutes=10), 60)

    result = run_maintenance(NOW, host_name="mine", policy=POLICY)

    assert result.deleted["gpu_raw"] == 60
    assert GpuSample.objects.filter(gpu=their_gpu).count() == 120
    assert not GpuRollup.objects.filter(gpu=their_gpu).exists()
    # 60 s from hh:mm:30 touch two minutes, three days ago and ten minutes ago.
    assert GpuRollup.objects.filter(gpu=my_gpu, resolution=MINUTE).count() == 4
    assert run_maintenance(NOW, host_name="nobody", policy=POLICY).notes == [
        "no host named 'nobody': nothing to maintain"
    ]


@pytest.mark.django_db
def test_it_only_counts_in_a_dry_run():
    _host, (gpu, _) = make_host()
    gpu_rows(gpu, NOW - timedelta(days=3), 60)
    gpu_rows(gpu, NOW - timedelta(minutes=10), 120)

    result = run_maintenance(NOW, policy=POLICY, dry_run=True)

    assert result.deleted["gpu_raw"] == 60
    assert result.rolled_up["gpu_minute"] >= 3
    assert GpuSample.objects.count() == 180
    assert not GpuRollup.objects.exists()
    assert result.lines()[0].startswith("dry run:")


@pytest.mark.django_db
def test_the_prune_command_prints_what_it_rolled_up_and_deleted():
    _host, (gpu, _) = make_host()
    now = timezone.now()
    gpu_rows(gpu, floor_time(now - timedelta(days=3), MINUTE), 60, utilization=lambda i: 3)
    out = io.StringIO()

    call_command("prune", "--dry-run", stdout=out)
    assert "would be deleted: gpu raw 60" in out.getvalue()
    assert GpuSample.objects.count() == 60

    out = io.StringIO()
    call_command("prune", "--host", "rig", stdout=out)
    text = out.getvalue()
    assert "written: gpu minute 1, gpu 10min 1, gpu hour 1" in text
    assert "deleted: gpu raw 60" in text
    assert not GpuSample.objects.exists()
    with pytest.raises(CommandError, match="no such host"):
        call_command("prune", "--host", "elsewhere")
