"""The operator endpoints on real data: a real worker's latest snapshot of the H100 capture,
the test database (SQLite, and PostgreSQL with Redis under the test command), real channel
layers. Health says what is wrong and answers 503; every bad parameter is a 400 naming it;
each endpoint costs a pinned number of queries."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
from django.test import override_settings

from dashboard.tests.conftest import HOSTILE_NAME, collect, hostile_capture
from monitoring.models import LatestSnapshot
from monitoring.storage.latest import latest_snapshots
from monitoring.tests import pg_control
from monitoring.tests.helpers import another_board_dir, rename
from monitoring.tests.service_control import skip_unless_redis

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def age(host: str, seconds: float) -> None:
    """Make the host's newest sample ``seconds`` old, as a worker that stopped would leave it."""
    row = LatestSnapshot.objects.get(host__name=host)
    row.time -= timedelta(seconds=seconds)
    row.save()


# --- /api/health -----------------------------------------------------------------------------


def test_health_is_200_with_the_database_the_channel_layer_and_a_fresh_host(client, h100_host):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["version"] == "0.1.0"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channelLayer"]["ok"] is True
    (host,) = body["hosts"]
    assert host["host"] == "h100" and host["stale"] is False
    assert 0 <= host["ageSeconds"] < 10
    assert host["worker"]["ticks"] == 2
    assert response["Cache-Control"].startswith("max-age=0")


def test_a_host_whose_worker_stopped_makes_health_503_naming_it(client, h100_host, tmp_path):
    collect("rig-b", another_board_dir(tmp_path))
    age("h100", 120)
    response = client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["reasons"] == [
        "host 'h100': newest sample is 120 s old (stale after 10 s): is its worker "
        "(manage.py collect) running and writing?"
    ]
    assert [(h["host"], h["stale"]) for h in body["hosts"]] == [("h100", True), ("rig-b", False)]
    assert response["Retry-After"] == "10"
    # one host asked alone, or a longer threshold, is healthy again
    assert client.get("/api/health", {"host": "rig-b"}).status_code == 200
    assert client.get("/api/health", {"stale": "300"}).status_code == 200


def test_a_probe_of_the_web_server_alone_leaves_samples_out(client, h100_host):
    age("h100", 120)
    response = client.get("/api/health", {"checks": "database,channel-layer"})
    assert response.status_code == 200
    assert response.json()["hosts"][0]["stale"] is True  # said, not counted
    response = client.get("/api/health", {"checks": "channel-layer"})
    assert response.status_code == 200 and "database" not in response.json()["checks"]


@pytest.mark.django_db
def test_before_any_worker_wrote_health_says_to_start_one(client):
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["no sample yet: start the worker (manage.py collect)"]
    response = client.get("/api/health", {"host": "nope"})
    assert response.json()["reasons"] == ["no sample of host 'nope' yet"]


def test_an_unreachable_channel_layer_makes_health_503_saying_live_updates_stop(client, h100_host):
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        response = client.get("/api/health")
    assert response.status_code == 503
    (reason,) = response.json()["reasons"]
    assert reason.startswith("the channel layer cannot be reached (")
    assert reason.endswith("): live updates are not delivered")
    assert response.json()["checks"]["database"]["ok"] is True


@pytest.mark.redis
def test_health_reaches_the_real_redis_channel_layer(client, h100_host, settings):
    skip_unless_redis()
    check = client.get("/api/health").json()["checks"]["channelLayer"]
    assert check["ok"] is True and check["backend"] == "RedisChannelLayer"


@pytest.mark.django_db(transaction=True)
def test_a_database_without_its_tables_makes_health_503_saying_to_migrate(client):
    collect("h100")
    table = LatestSnapshot._meta.db_table
    rename(table, f"{table}_away")
    try:
        response = client.get("/api/health")
    finally:
        rename(f"{table}_away", table)
    assert response.status_code == 503
    assert "manage.py migrate" in response.json()["checks"]["database"]["error"]
    assert client.get("/api/health").status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_outage_makes_health_503_and_it_recovers(client):
    pg_control.skip_unless_available()
    collect("h100")
    with pg_control.outage():
        response = client.get("/api/health")
    assert response.status_code == 503
    assert "the database cannot be reached" in response.json()["reasons"][0]
    assert client.get("/api/health").status_code == 200


# --- /api/config -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_config_gives_the_settings_the_page_runs_on_without_a_query(
    client, settings, django_assert_num_queries
):
    settings.POLL_INTERVAL_MS = 500
    with django_assert_num_queries(0):
        body = client.get("/api/config").json()
    assert body["pollIntervalMs"] == 500
    assert body["processIntervalMs"] == settings.PROCESS_INTERVAL_MS
    assert body["history"]["maxPoints"] == 5000
    assert body["staleAfterS"] == settings.STALE_AFTER_S
    assert body["paces"] == {"live": 0.0, "2s": 2.0, "5s": 5.0, "paused": None}
    utilization = next(m for m in body["metrics"]["gpu"] if m["key"] == "utilization")
    assert utilization == {
        "key": "utilization",
        "label": "GPU utilization",
        "unit": "%",
        "history": True,
        "formerly": [],
    }
    ram = next(m for m in body["metrics"]["host"] if m["key"] == "ram_percent")
    assert (ram["unit"], ram["formerly"]) == ("%", ["memory_usage"])


# --- /api/snapshot ---------------------------------------------------------------------------


def test_snapshot_gives_every_hosts_latest_snapshot_in_the_documented_schema(
    client, h100_host, tmp_path
):
    collect("rig-b", another_board_dir(tmp_path))
    body = client.get("/api/snapshot").json()
    assert [s["host"]["hostname"] for s in body["snapshots"]] == ["h100", "rig-b"]
    (gpu,) = body["snapshots"][0]["gpus"]
    assert (gpu["uuid"], gpu["utilization"], gpu["memoryUsed"], gpu["temperature"]) == (
        UUID,
        100,
        4734,
        69,
    )
    assert body["snapshots"][0]["driverVersion"] == "580.159.04"


def test_snapshot_of_one_host_is_that_snapshot_as_collect_prints_it(client, h100_host):
    response = client.get("/api/snapshot", {"host": "h100"})
    assert response.status_code == 200
    (row,) = latest_snapshots("h100")
    assert response.json() == json.loads(json.dumps(row.data))
    assert response.json()["timestamp"] == h100_host.last_snapshot.timestamp.isoformat().replace(
        "+00:00", "Z"
    )


def test_snapshot_of_an_unknown_host_is_a_404_naming_it(client, h100_host):
    response = client.get("/api/snapshot", {"host": "nope"})
    assert response.status_code == 404
    assert response.json() == {"error": "no snapshot of host 'nope' yet", "parameter": "host"}


# --- every endpoint: bad parameters, methods, query counts -----------------------------------


@pytest.mark.parametrize(
    ("url", "params", "parameter", "message"),
    [
        ("/api/health", {"host": "a\x00b"}, "host", "host='a\\x00b' has control characters"),
        ("/api/health", {"host": "h" * 256}, "host", "host= is longer than 255 characters"),
        ("/api/health", {"stale": "soon"}, "stale", "stale='soon' is not a number"),
        ("/api/health", {"stale": "0"}, "stale", "stale=0 must be between 1 and 86400"),
        ("/api/health", {"stale": "nan"}, "stale", "stale=nan must be between 1 and 86400"),
        ("/api/health", {"stale": "1e999"}, "stale", "stale=1e999 must be between 1 and 86400"),
        ("/api/snapshot", {"host": "x\ny"}, "host", "host='x\\ny' has control characters"),
        (
            "/api/health",
            {"checks": "database,disk"},
            "checks",
            "checks='database,disk': each must be one of database, channel-layer, samples",
        ),
        (
            "/api/health",
            {"checks": ","},
            "checks",
            "checks=',': each must be one of database, channel-layer, samples",
        ),
    ],
)
@pytest.mark.django_db
def test_a_bad_parameter_is_a_400_naming_it(client, url, params, parameter, message):
    response = client.get(url, params)
    assert response.status_code == 400
    assert response.json() == {"error": message, "parameter": parameter}


@pytest.mark.parametrize(
    ("url", "queries"),
    [("/api/health", 1), ("/api/snapshot", 1), ("/metrics", 2)],  # /metrics: + open alerts
)
def test_each_endpoint_reads_every_host_in_one_query(
    client, h100_host, django_assert_num_queries, url, queries, tmp_path
):
    collect("rig-b", another_board_dir(tmp_path / "rig-b"))
    collect("rig-c", another_board_dir(tmp_path / "rig-c", board=2))
    with django_assert_num_queries(queries):
        assert client.get(url).status_code in (200, 503)


@pytest.mark.django_db
def test_a_hostile_process_comes_out_of_the_snapshot_api_as_inert_json(client, tmp_path):
    collect("h100", hostile_capture(tmp_path))
    response = client.get("/api/snapshot", {"host": "h100"})
    assert response["Content-Type"] == "application/json"
    assert response["X-Content-Type-Options"] == "nosniff"
    (process, _) = response.json()["gpus"][0]["processes"]
    assert process["name"] == HOSTILE_NAME
    assert "hunter2" not in response.content.decode()  # redacted before storage
    assert "--password=" in process["command"]
