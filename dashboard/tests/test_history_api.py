"""``GET /api/history`` through Django's test client: JSON, CSV, defaults, and every bad
parameter answered with a 400 naming it (a table of bad values, then hypothesis)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dashboard.api import DEFAULT_POINTS, parse_history_query
from monitoring.storage.history import HistoryError
from monitoring.storage.retention import run_maintenance
from monitoring.tests.helpers import make_host

URL = "/api/history"
# Every test here reads the database (the parse test does not mind): the SQLite pass too.
pytestmark = pytest.mark.django_db


def test_it_returns_the_series_as_json(client, rig):
    response = client.get(URL, {"host": "rig", "gpu": "0", "metric": "utilization", "points": 20})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "host", "gpu", "gpu_uuid", "metric", "unit", "resolution", "from", "to", "points"
    }  # fmt: skip
    assert (body["host"], body["gpu"], body["metric"], body["unit"]) == (
        "rig",
        0,
        "utilization",
        "%",
    )
    assert body["resolution"] == "raw"
    assert body["from"].endswith("Z") and body["to"].endswith("Z")
    to = datetime.fromisoformat(body["to"])
    assert to - datetime.fromisoformat(body["from"]) == timedelta(hours=1)  # default range
    assert abs(to - timezone.now()) < timedelta(seconds=30)
    points = body["points"]
    assert 1 <= len(points) <= 20
    assert set(points[0]) == {"t", "min", "avg", "max"}
    assert min(p["min"] for p in points) == 0 and max(p["max"] for p in points) == 99
    assert all(p["min"] <= p["avg"] <= p["max"] for p in points)
    times = [p["t"] for p in points]
    assert times == sorted(times)


def test_it_reads_iso_and_relative_times_and_the_host_metrics(client, rig):
    now = timezone.now().astimezone(UTC)
    iso = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

    by_iso = client.get(URL, {"host": "rig", "metric": "cpu_percent", "from": iso, "to": "now"})
    run_maintenance()
    relative = client.get(URL, {"metric": "cpu_percent", "from": "-7d", "to": "-1s"})

    assert by_iso.status_code == relative.status_code == 200
    assert by_iso.json()["gpu"] is None
    assert by_iso.json()["from"] == iso
    assert {p["avg"] for p in by_iso.json()["points"]} == {25.0}
    assert relative.json()["resolution"] == "10min"  # a week: from 10-minute roll-ups
    assert {p["avg"] for p in relative.json()["points"]} == {25.0}


@pytest.mark.parametrize(
    ("params", "rolled_up", "queries"),
    [
        # host, GPU, how many raw rows (bounded), newest roll-up buckets, the series
        ({"host": "rig", "gpu": "0", "metric": "utilization"}, False, 5),
        ({"host": "rig", "gpu": "1", "metric": "temperature", "format": "csv"}, False, 5),
        ({"host": "rig", "metric": "cpu_percent"}, False, 4),  # no GPU to find
        # a week from roll-ups: no raw count
        ({"host": "rig", "gpu": "0", "metric": "utilization", "from": "-7d"}, True, 4),
        ({"metric": "cpu_percent", "from": "-30d"}, True, 3),  # the only host: found with it
    ],
    ids=["gpu", "gpu-csv", "host", "gpu-week", "host-month"],
)
def test_a_history_request_makes_a_fixed_number_of_queries(
    client, rig, django_assert_num_queries, params, rolled_up, queries
):
    if rolled_up:
        run_maintenance()
    with django_assert_num_queries(queries):
        response = client.get(URL, params)
        body = b"".join(response.streaming_content) if response.streaming else response.content
    assert response.status_code == 200 and body


def test_it_returns_csv_with_format_csv(client, rig):
    gpu = rig[1][1]
    response = client.get(
        URL, {"host": "rig", "gpu": gpu.uuid, "metric": "utilization", "format": "csv"}
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "rig-gpu1-utilization.csv" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["time", "min", "avg", "max"]
    assert len(rows) > 2
    assert all(row[0].endswith("Z") and row[1:] == ["50.0", "50.0", "50.0"] for row in rows[1:])


def test_an_old_metric_name_is_answered_under_its_new_one_and_says_so(client, rig):
    now = timezone.now()
    span = {"host": "rig", "from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat()}
    old = client.get(URL, {**span, "metric": "memory_usage"})
    new = client.get(URL, {**span, "metric": "ram_percent"})

    assert old.status_code == new.status_code == 200
    assert (old.json()["metric"], old.json()["renamed_from"]) == ("ram_percent", "memory_usage")
    assert old.json()["points"] == new.json()["points"] != []
    assert "renamed_from" not in new.json()


def test_a_csv_link_with_an_old_metric_name_still_downloads(client, rig):
    response = client.get(
        URL, {"host": "rig", "gpu": "0", "metric": "memory_used", "format": "csv"}
    )

    assert response.status_code == 200
    assert "rig-gpu0-memory_used_mib.csv" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert len(rows) > 2 and all(row[1:] == ["4734.0"] * 3 for row in rows[1:])  # MiB, the H100's


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"host": "nowhere", "gpu": "0", "metric": "utilization"}, "host"),
        ({"host": "rig", "gpu": "5", "metric": "utilization"}, "gpu"),
        ({"host": "rig", "gpu": "GPU-none", "metric": "utilization"}, "gpu"),
        ({"host": "rig", "gpu": "99999999999999999999", "metric": "utilization"}, "gpu"),
        ({"host": "rig", "gpu": "0", "metric": "watts"}, "metric"),
        ({"host": "rig", "gpu": "0"}, "metric"),
        ({"host": "rig", "metric": "utilization"}, "metric"),  # a GPU metric needs gpu=
        ({"host": "rig", "gpu": "0", "metric": "cpu_percent"}, "metric"),
        ({"host": "rig", "gpu": "0", "metric": "memory_percent"}, "metric"),  # not stored
        ({"metric": "cpu_percent", "from": "yesterday"}, "from"),
        ({"metric": "cpu_percent", "from": "2026-13-01T00:00:00Z"}, "from"),
        ({"metric": "cpu_percent", "to": "-5x"}, "to"),
        ({"metric": "cpu_percent", "from": "-999999999w"}, "from"),
        ({"metric": "cpu_percent", "to": "0001-01-01T00:00:00Z"}, "to"),
        ({"metric": "cpu_percent", "from": "9999-12-31T23:59:59-05:00"}, "from"),
        ({"metric": "cpu_percent", "from": "-1h", "to": "-2h"}, "from"),
        ({"metric": "cpu_percent", "from": "-1h", "to": "-1h"}, "from"),
        ({"metric": "cpu_percent", "points": "many"}, "points"),
        ({"metric": "cpu_percent", "points": "1.5"}, "points"),
        ({"metric": "cpu_percent", "points": "0"}, "points"),
        ({"metric": "cpu_percent", "points": "5001"}, "points"),
        ({"metric": "cpu_percent", "points": "-3"}, "points"),
        ({"metric": "cpu_percent", "format": "xml"}, "format"),
        ({"host": "rig\x00", "metric": "cpu_percent"}, "host"),
    ],
)
def test_it_answers_a_bad_parameter_with_a_400_naming_it(client, rig, params, parameter):
    response = client.get(URL, params)

    assert response.status_code == 400
    body = response.json()
    assert body["parameter"] == parameter
    assert f"{parameter}=" in body["error"]


def test_a_relative_time_too_far_back_says_so(client, rig):
    response = client.get(URL, {"metric": "cpu_percent", "from": "-3000000d"})

    assert response.status_code == 400
    assert response.json()["error"] == "from='-3000000d' is before the year 1"


def test_it_needs_a_host_when_several_report(client, rig):
    make_host("second")
    response = client.get(URL, {"metric": "cpu_percent"})
    assert response.status_code == 400
    assert response.json()["parameter"] == "host"


_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)


def _mostly(good: list[str]) -> st.SearchStrategy[str]:
    """Good values three times in four, so that bad ones meet good ones further in."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), _TEXT)


_VALUES = {
    "host": _mostly(["rig", "rig "]),
    "gpu": _mostly(["0", "1", " 1", "-1", "1e3"]),
    "metric": _mostly(["utilization", "temperature", "fan_speed", "cpu_percent", "load_1"]),
    "from": _mostly(["-1h", "-20m", "-90d", "-3000w", "2026-01-01", "2026-01-01T00:00:00+05:00"]),
    "to": _mostly(["now", "-1s", "-5m", "0001-01-01", "9999-12-31T23:59:59Z"]),
    "points": st.one_of(st.integers(1, 5000).map(str), st.integers().map(str), _TEXT),
    "format": _mostly(["json", "csv", "CSV"]),
}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.fixed_dictionaries(
        {"metric": _VALUES["metric"]}, optional={k: v for k, v in _VALUES.items() if k != "metric"}
    )
)
def test_it_never_answers_any_query_string_with_a_500(client, rig, params):
    response = client.get(URL, params)
    event(f"status {response.status_code}")

    assert response.status_code in (200, 400), (params, response.content[:300])
    if response.status_code == 400:
        body = response.json()
        assert body["parameter"] in _VALUES
        assert body["error"]


def test_parse_history_query_fills_in_the_defaults_without_a_database():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    query = parse_history_query({"metric": "cpu_percent"}, now)

    assert (query.host, query.gpu, query.format) == (None, None, "json")
    assert (query.start, query.end, query.points) == (now - timedelta(hours=1), now, DEFAULT_POINTS)
    week = parse_history_query({"metric": "temperature", "gpu": "3", "from": "-1w"}, now)
    assert week.start == now - timedelta(days=7) and week.gpu == "3"
    with pytest.raises(HistoryError):
        parse_history_query({"metric": "cpu_percent", "from": "2026-03-01T13:00:00+01:00"}, now)
