"""The history query: resolution by range, stitching fresh sources on, downsampling in SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.models import Gpu, GpuRollup, Host, HostRollup
from monitoring.storage.history import (
    BY_HOUR,
    BY_MINUTE,
    BY_TEN_MINUTES,
    RAW,
    HistoryError,
    Segment,
    check_metric,
    choose_resolution,
    history_series,
    plan_segments,
)
from monitoring.storage.retention import run_maintenance
from monitoring.storage.rollup import HOUR, MINUTE
from monitoring.tests.helpers import POLICY, expected, gpu_rows, host_rows, make_host

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def never(limit: int) -> int:
    raise AssertionError("raw rows counted for a range raw cannot serve")


# --- pure ------------------------------------------------------------------------------------


def test_it_picks_raw_for_a_recent_range_with_few_enough_raw_rows():
    assert choose_resolution(NOW - timedelta(hours=1), NOW, 500, NOW, POLICY, lambda n: 3600) == RAW


def test_it_picks_minutes_when_raw_would_be_too_many_rows_or_is_gone():
    many = choose_resolution(NOW - timedelta(hours=2), NOW, 500, NOW, POLICY, lambda n: n)
    assert many == BY_MINUTE
    old = choose_resolution(NOW - timedelta(days=3), NOW, 500, NOW, POLICY, never)
    assert old == BY_MINUTE  # 432 10-minute buckets cannot fill 500 points


@pytest.mark.parametrize(
    ("span", "points", "resolution"),
    [
        # 24 h: 1440 minutes fill every point, no need for 86,400 raw rows.
        (timedelta(hours=24), 500, BY_MINUTE),
        # 3.5 days: 504 10-minute buckets fill 500 points (5,040 minutes would be read) ...
        (timedelta(days=3.5), 500, BY_TEN_MINUTES),
        (timedelta(days=3.5), 600, BY_MINUTE),  # ... but not 600.
        # 7 and 20 days: 1,008 and 2,880 10-minute rows, not 10,080 and 28,800 minutes (issue
        # 4); hours (168, 480) would leave points empty.
        (timedelta(days=7), 500, BY_TEN_MINUTES),
        (timedelta(days=20), 500, BY_TEN_MINUTES),
        # 30 days: 720 hours fill 500 points ...
        (timedelta(days=30), 500, BY_HOUR),
        (timedelta(days=30), 1000, BY_TEN_MINUTES),  # ... but not 1000 ...
        (timedelta(days=30), 5000, BY_MINUTE),  # ... and 4,320 10-minute rows not 5000.
        (timedelta(days=89), 5000, BY_TEN_MINUTES),  # kept as long as minutes
    ],
)
def test_it_picks_the_coarsest_resolution_that_still_gives_every_point_a_row(
    span, points, resolution
):
    assert choose_resolution(NOW - span, NOW, points, NOW, POLICY, never) == resolution


def test_it_picks_hours_past_minute_retention():
    start = NOW - timedelta(days=91)
    assert choose_resolution(start, NOW, 5000, NOW, POLICY, never) == BY_HOUR


def test_it_stitches_finer_sources_after_the_last_rolled_up_bucket():
    start, end = NOW - timedelta(days=200), NOW
    hour_end, minute_end = NOW - timedelta(minutes=60), NOW - timedelta(minutes=5)
    ten_end = NOW - timedelta(minutes=10)
    rolled = {BY_MINUTE: minute_end, BY_TEN_MINUTES: ten_end, BY_HOUR: hour_end}
    assert plan_segments(BY_HOUR, start, end, rolled) == [
        Segment(BY_HOUR, start, hour_end),
        Segment(BY_TEN_MINUTES, hour_end, ten_end),
        Segment(BY_MINUTE, ten_end, minute_end),
        Segment(RAW, minute_end, end),
    ]
    assert plan_segments(BY_TEN_MINUTES, start, end, rolled) == [
        Segment(BY_TEN_MINUTES, start, ten_end),
        Segment(BY_MINUTE, ten_end, minute_end),
        Segment(RAW, minute_end, end),
    ]
    # No 10-minute buckets yet (just upgraded): the hours, then minutes.
    assert plan_segments(BY_HOUR, start, end, {**rolled, BY_TEN_MINUTES: None}) == [
        Segment(BY_HOUR, start, hour_end),
        Segment(BY_MINUTE, hour_end, minute_end),
        Segment(RAW, minute_end, end),
    ]
    assert plan_segments(BY_MINUTE, start, end, rolled) == [
        Segment(BY_MINUTE, start, minute_end),
        Segment(RAW, minute_end, end),
    ]
    # Nothing rolled up yet: raw serves all; a range ending before the last bucket: one source.
    assert plan_segments(BY_MINUTE, start, end, {BY_MINUTE: None, BY_HOUR: None}) == [
        Segment(RAW, start, end)
    ]
    early = NOW - timedelta(days=100)
    assert plan_segments(BY_HOUR, start, early, rolled) == [Segment(BY_HOUR, start, early)]


def test_it_accepts_stored_metrics_of_the_right_scope_only():
    check_metric("temperature", for_gpu=True)
    check_metric("cpu_percent", for_gpu=False)
    with pytest.raises(HistoryError, match="is a GPU metric: give gpu="):
        check_metric("temperature", for_gpu=False)
    with pytest.raises(HistoryError, match="is a host metric"):
        check_metric("cpu_percent", for_gpu=True)
    with pytest.raises(HistoryError, match="not a stored GPU metric") as error:
        check_metric("memory_percent", for_gpu=True)  # derived, not stored
    assert error.value.param == "metric"


# --- on the database -------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_downsamples_raw_rows_into_at_most_the_points_asked_for():
    _host, (gpu, _) = make_host()
    start = NOW - timedelta(minutes=10)
    rows = gpu_rows(gpu, start, 120, step_s=5, temperature=lambda i: 40 + i % 17)

    series = history_series("rig", 0, "temperature", start, NOW, 20, now=NOW)

    assert series.resolution == RAW  # 120 rows, at most 8 a point
    assert (series.host, series.gpu, series.unit) == ("rig", 0, "°C")
    assert len(series.points) == 20
    for n, point in enumerate(series.points):
        t = start + timedelta(seconds=30 * n)
        assert point.t == t
        inside = [r.temperature for r in rows if t <= r.time < t + timedelta(seconds=30)]
        low, mean, high = expected(inside)
        assert (point.min, point.max) == (low, high)
        assert point.avg == pytest.approx(mean)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("points", "resolution"),
    # Over two hours 7200 raw rows are too many for any of these. 24 points: 12 10-minute
    # buckets too few, from minutes; 4 points: two hours too few, from 10 minutes.
    [(24, BY_MINUTE), (4, BY_TEN_MINUTES), (2, BY_HOUR)],
)
def test_rollups_give_the_same_answer_as_raw(points, resolution):
    _host, (gpu, _) = make_host()
    rows = gpu_rows(gpu, T, 7200, utilization=lambda i: (i * 13) % 100)  # 10:00-12:00
    run_maintenance(NOW, policy=POLICY)

    series = history_series("rig", "0", "utilization", T, NOW, points, now=NOW)

    assert (series.resolution, len(series.points)) == (resolution, points)
    width = (NOW - T) / points
    for n, point in enumerate(series.points):
        t = T + n * width
        low, mean, high = expected([r.utilization for r in rows if t <= r.time < t + width])
        assert (point.t, point.min, point.max) == (t, low, high)
        assert point.avg == pytest.approx(mean)


@pytest.mark.django_db
def test_a_range_ending_now_includes_samples_not_rolled_up_yet():
    _host, (gpu, _) = make_host()
    gpu_rows(gpu, T, 7000, utilization=lambda i: 10)  # rolled up to 11:56
    run_maintenance(T + timedelta(seconds=7000), policy=POLICY)
    gpu_rows(gpu, T + timedelta(seconds=7000), 200, utilization=lambda i: 90)  # not yet

    series = history_series("rig", 0, "utilization", T, NOW, 24, now=NOW)

    assert series.resolution == BY_MINUTE
    assert [p.max for p in series.points[:-1]] == [10] * 23
    last = series.points[-1]  # 11:55-12:00: 1 minute rolled up, 4 of raw rows
    assert (last.min, last.max) == (10, 90)
    assert last.avg == pytest.approx((60 * 10 + 40 * 10 + 200 * 90) / 300)


@pytest.mark.django_db
def test_it_reads_hours_for_a_long_range_and_minutes_then_raw_for_the_end():
    _host, (gpu, _) = make_host()
    start = NOW - timedelta(days=120)
    GpuRollup.objects.bulk_create(
        GpuRollup(
            gpu=gpu,
            resolution=HOUR,
            bucket=start + timedelta(hours=h),
            samples=3600,
            temperature_min=30,
            temperature_avg=40 + h % 2,
            temperature_max=50,
        )
        for h in range(120 * 24 - 2)  # up to 10:00
    )
    GpuRollup.objects.bulk_create(
        GpuRollup(
            gpu=gpu,
            resolution=MINUTE,
            bucket=T + timedelta(minutes=m),
            samples=60,
            temperature_min=60,
            temperature_avg=61,
            temperature_max=62,
        )
        for m in range(110)  # 10:00-11:50
    )
    gpu_rows(gpu, T + timedelta(minutes=110), 600, temperature=lambda i: 80)

    series = history_series("rig", 0, "temperature", start, NOW, 120, now=NOW)

    assert series.resolution == BY_HOUR
    assert len(series.points) == 120
    assert series.points[0].t == start
    assert series.points[0].avg == pytest.approx(40.5)
    assert (series.points[0].min, series.points[0].max) == (30, 50)
    last = series.points[-1]  # the last day: 22 hours, 110 minutes, 10 minutes of raw
    assert (last.min, last.max) == (30, 80)
    assert last.avg == pytest.approx((11 * 3600 * 81 + 6600 * 61 + 600 * 80) / (22 * 3600 + 7200))


@pytest.mark.django_db
def test_it_finds_a_gpu_by_uuid_or_by_the_index_it_has_now():
    host, (gpu, _) = make_host()
    gone = Gpu.objects.create(host=host, uuid="GPU-old", index=0, state=Gpu.STATE_GONE)
    gpu_rows(gpu, NOW - timedelta(minutes=1), 60, utilization=lambda i: 7)
    gpu_rows(gone, NOW - timedelta(minutes=1), 60, utilization=lambda i: 99)
    start = NOW - timedelta(minutes=1)

    by_index = history_series("rig", 0, "utilization", start, NOW, 1, now=NOW)
    by_uuid = history_series("rig", "GPU-old", "utilization", start, NOW, 1, now=NOW)

    assert (by_index.gpu_uuid, by_index.points[0].max) == (gpu.uuid, 7)
    assert (by_uuid.gpu_uuid, by_uuid.points[0].max) == ("GPU-old", 99)


@pytest.mark.django_db
def test_it_serves_host_metrics_and_defaults_to_the_only_host():
    host, _ = make_host()
    host_rows(host, NOW - timedelta(hours=3), 3 * 60, step_s=60, cpu_percent=lambda i: i % 10)
    run_maintenance(NOW, policy=POLICY)
    HostRollup.objects.all().delete()  # so raw must answer

    series = history_series(None, None, "cpu_percent", NOW - timedelta(hours=3), NOW, 6, now=NOW)

    assert (series.host, series.gpu, series.unit, series.resolution) == ("rig", None, "%", RAW)
    assert [p.max for p in series.points] == [9] * 6
    assert [p.avg for p in series.points] == pytest.approx([4.5] * 6)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("host", "gpu", "metric", "param", "message"),
    [
        ("nowhere", 0, "utilization", "host", "no such host"),
        ("rig", 7, "utilization", "gpu", "no such GPU"),
        ("rig", "GPU-nope", "utilization", "gpu", "no such GPU"),
        ("rig", 0, "nonsense", "metric", "not a stored GPU metric"),
        (None, 0, "utilization", "host", "required when several hosts"),
    ],
)
def test_it_names_the_parameter_it_cannot_answer(host, gpu, metric, param, message):
    make_host("rig")
    make_host("other")
    with pytest.raises(HistoryError, match=message) as error:
        history_series(host, gpu, metric, NOW - timedelta(hours=1), NOW, 10, now=NOW)
    assert error.value.param == param


@pytest.mark.django_db
def test_it_says_when_no_host_has_reported():
    with pytest.raises(HistoryError, match="no host has reported") as error:
        history_series(None, None, "cpu_percent", NOW - timedelta(hours=1), NOW, 10, now=NOW)
    assert error.value.param == "host"
    assert not Host.objects.exists()
