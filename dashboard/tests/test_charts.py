"""The history page's pure parts: the window its query string asks for, and chart geometry
(gaps, scales, ticks, session lanes). No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboard import charts
from dashboard.history_page import parse_window
from monitoring.storage.history import HistoryError, Point

NOW = datetime(2026, 11, 30, 14, 7, 30, tzinfo=UTC)
T0 = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def points(*offsets_s: float, value: float = 50.0) -> list[Point]:
    return [Point(T0 + timedelta(seconds=s), value, value, value) for s in offsets_s]


# -- the window ---------------------------------------------------------------------------------


def test_a_preset_range_ends_now():
    window = parse_window({"range": "24h"}, NOW)

    assert (window.start, window.end, window.live) == (NOW - timedelta(hours=24), NOW, True)


def test_no_range_is_the_last_hour_and_from_alone_is_a_custom_range_to_now():
    assert parse_window({}, NOW).start == NOW - timedelta(hours=1)
    window = parse_window({"from": "2026-11-30T03:00"}, NOW)
    assert (window.range, window.start, window.end) == ("custom", T0, NOW)


def test_a_moment_before_a_preset_centres_the_same_span_on_it():
    window = parse_window({"range": "1h", "at": "2026-11-30T03:00"}, NOW)

    assert (window.start, window.end) == (T0 - timedelta(minutes=30), T0 + timedelta(minutes=30))
    assert window.moved and not window.live and window.at == T0


def test_a_moment_inside_the_preset_keeps_it_ending_now():
    window = parse_window({"range": "24h", "at": "2026-11-30T03:00"}, NOW)

    assert window.live and window.end == NOW and window.at == T0


def test_times_read_offsets_relative_times_and_now():
    window = parse_window({"from": "2026-11-30T05:00+02:00", "to": "-1h"}, NOW)

    assert (window.start, window.end) == (T0, NOW - timedelta(hours=1))


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"range": "1w"}, "range"),
        ({"range": "custom"}, "from"),
        ({"from": "soon"}, "from"),
        ({"from": "2026-11-30T03:00", "to": "2026-11-30T03:00"}, "from"),
        ({"from": "2026-11-30T03:00", "to": "2026-11-30T03:00:59"}, "to"),
        ({"from": "2020-01-01T00:00"}, "from"),
        ({"at": "never"}, "at"),
        ({"at": "0001-01-01T00:10"}, "at"),
    ],
)
def test_a_bad_window_names_its_parameter(params, param):
    with pytest.raises(HistoryError) as error:
        parse_window(params, NOW)

    assert error.value.param == param


# -- gaps -------------------------------------------------------------------------------------


def test_a_run_of_points_breaks_where_the_data_stops():
    found = points(0, 7.2, 14.4, 120, 127.2)

    runs = charts.runs(found, width_s=7.2, spacing_s=1)

    assert [len(run) for run in runs] == [3, 2]


def test_sparse_roll_ups_are_one_run_and_a_missing_value_breaks_it():
    minutes = points(0, 60, 120, 180)
    assert len(charts.runs(minutes, width_s=7.2, spacing_s=60)) == 1
    holed = [*minutes[:2], Point(T0 + timedelta(seconds=120), None, None, None), minutes[3]]
    assert [len(run) for run in charts.runs(holed, width_s=7.2, spacing_s=60)] == [2, 1]


def test_a_line_draws_one_subpath_per_run_and_a_dot_for_a_lone_point():
    axis = charts.TimeAxis(T0, T0 + timedelta(minutes=10))

    line = charts.draw_line("u", "u", "chart-violet", points(0, 7.2, 300), axis, 100, 7.2, 1)

    assert len(line.paths) == 1 and len(line.dots) == 1
    assert line.bands == []  # min = max: the band would be the line
    assert (line.low, line.mean, line.high, line.latest) == (50, 50, 50, 50)


def test_a_gap_says_its_dates_when_the_window_spans_a_day():
    # a 24 h window with data only in its first and last minutes
    axis = charts.TimeAxis(T0, T0 + timedelta(days=1))
    found = points(0, 60, 86340)

    words = charts.gaps_text(found, axis, width_s=60, spacing_s=60, local=lambda t: t)

    start, end = T0 + timedelta(seconds=120), T0 + timedelta(seconds=86340)
    assert words == f"no data {start.day} {start:%b %H:%M} to {end.day} {end:%b %H:%M}"


def test_a_gap_within_one_day_says_only_the_times():
    axis = charts.TimeAxis(T0, T0 + timedelta(seconds=3060))
    found = points(0, 60, 3000, 3060)

    words = charts.gaps_text(found, axis, width_s=60, spacing_s=60, local=lambda t: t)

    start, end = T0 + timedelta(seconds=120), T0 + timedelta(seconds=3000)
    assert words == f"no data {start:%H:%M} to {end:%H:%M}"


# -- scales and ticks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "high", "unit"),
    [
        ("B/s", 500, "B/s"),
        ("B/s", 3 * 1024**2, "MiB/s"),
        ("MiB", 800, "MiB"),
        ("MiB", 81559, "GiB"),
    ],
)
def test_bytes_are_shown_in_the_unit_their_size_needs(kind, high, unit):
    assert charts.scale_for(kind, high).unit == unit


@pytest.mark.parametrize("high", [0.0, 0.3, 1.0, 4.59, 7.0, 69.0, 697.0, 81559.0, 3e9])
def test_value_ticks_start_at_zero_and_never_repeat_a_label(high):
    scale = charts.scale_for("", high)
    top, step = charts.nice_top(max(high, 1.0))

    ticks = charts.value_ticks(top, step, scale)

    labels = [tick.label for tick in ticks]
    assert float(labels[0]) == 0 and len(set(labels)) == len(labels)
    assert top >= high and 2 <= len(ticks) <= 7
    assert ticks[0].pos == 100.0 and ticks[-1].pos == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("span", "first_label"),
    [
        (timedelta(hours=1), "03:10"),
        (timedelta(hours=24), "06:00"),
        (timedelta(hours=30), "30 Nov 06:00"),
        (timedelta(days=30), "3 Dec"),  # weekly, on Thursdays as the Unix epoch
    ],
)
def test_time_ticks_fall_on_round_times_with_labels_for_the_span(span, first_label):
    axis = charts.TimeAxis(T0 + timedelta(minutes=2), T0 + timedelta(minutes=2) + span)

    ticks = axis.ticks(utc)

    assert ticks[0].label == first_label
    assert 3 <= len(ticks) <= charts.MAX_TICKS
    assert all(0 <= tick.pos <= 100 for tick in ticks)


# -- session lanes ------------------------------------------------------------------------------


def test_overlapping_sessions_get_their_own_lane_and_later_ones_reuse_a_free_one():
    spans = [(0, 20), (10, 20), (25, 5), (31, 10)]

    assert charts.lanes(spans) == [0, 1, 0, 0]


def test_sessions_beyond_the_last_lane_are_not_drawn():
    assert charts.lanes([(0, 50)] * 4, max_lanes=3) == [0, 1, 2, None]
