"""The live page and its polling fallback, as a browser first gets them: from what the worker
stored (the process has heard nothing live yet), with query counts pinned."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dashboard.hub import reset_hub
from dashboard.tests.live_helpers import HOSTILE, captured, hostile_capture, later
from monitoring.storage.writer import SnapshotStore
from monitoring.telemetry.schema import STATUS_NO_GPU, DriverInfo
from monitoring.telemetry.serialize import to_data
from monitoring.tests.helpers import another_board_dir

HOST = "page-test"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_hub():
    reset_hub()
    yield
    reset_hub()


@pytest.fixture
def client(client):
    client.defaults["HTTP_HOST"] = "localhost"
    return client


def stored(*snapshots, host: str = HOST) -> None:
    store = SnapshotStore(host)
    for snapshot in snapshots:
        store.add(snapshot)
    result = store.flush()
    assert result.error is None, result.error


def test_the_page_shows_the_stored_latest_snapshot_and_answers_why(
    client, django_assert_num_queries
):
    now = captured("load", HOST)
    stored(*(later(now, -seconds) for seconds in range(30, -1, -5)))
    # host names, the latest snapshot, five minutes of GPU and host samples, recent alerts
    with django_assert_num_queries(5):
        response = client.get(f"/hosts/{HOST}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "GPU 0 at 100 %: python3 (root), 1.1 GiB (+1 more process); slowed by power cap" in page
    assert "NVIDIA H100 80GB HBM3" in page
    assert 'id="gpu-0-util"' in page and "4.6 GiB" in page
    assert 'ws-connect="/ws/live/?host=page-test"' in page
    assert 'data-stale="false"' in page
    assert 'aria-label="GPU 0 utilization over the last 5 minutes' in page


def test_figures_the_collector_stopped_sending_are_said_to_be_stale(client):
    stored(later(captured("load", HOST), -150))
    page = client.get(f"/hosts/{HOST}/").content.decode()
    assert "Collector not running: last sample 2 min ago" in page
    assert 'data-stale="true"' in page


def test_a_host_nothing_was_sampled_for_yet_says_it_waits(client, settings):
    settings.HOST_NAME = "fresh-box"
    page = client.get("/").content.decode()
    assert "Waiting for the collector" in page
    assert "fresh-box" in page


def test_a_machine_without_a_gpu_says_so_and_points_to_the_demo(client):
    snapshot = captured("idle", HOST)
    snapshot.gpus = []
    snapshot.driver = DriverInfo("none", STATUS_NO_GPU, message="No NVIDIA GPU found")
    stored(snapshot)
    page = client.get(f"/hosts/{HOST}/").content.decode()
    assert f"No NVIDIA GPU found on {HOST}: showing the host only" in page
    assert "./scripts/run --demo" in page
    assert 'id="host-figures"' in page


def test_an_unknown_host_is_a_404_page(client):
    response = client.get("/hosts/nobody-here/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "No host named &#x27;nobody-here&#x27; reports to this Hoof Hearted." in page
    assert "Back to the live page" in page
    assert client.get("/live/fragments?host=" + "x" * 300).status_code == 404


def test_a_host_named_by_query_on_the_front_page_is_redirected_to_its_page(client):
    stored(captured("load", HOST))
    response = client.get(f"/?host={HOST}")
    assert response.status_code == 302
    assert response["Location"] == f"/hosts/{HOST}/"


def test_an_unknown_host_named_by_query_is_the_same_404_page_as_its_address(client):
    response = client.get("/?host=nobody-here")
    assert response.status_code == 404
    assert response.content == client.get("/hosts/nobody-here/").content


def test_the_polling_fallback_sends_the_live_area_and_304_while_it_is_unchanged(client):
    stored(captured("load", HOST))
    response = client.get(f"/live/fragments?host={HOST}")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="live-body" hx-swap-oob="true"')
    again = client.get(f"/live/fragments?host={HOST}", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_a_hostile_process_name_and_command_render_as_text(client, tmp_path):
    snapshot = captured("load", HOST, directory=hostile_capture(tmp_path / "hostile"))
    stored(snapshot)
    page = client.get(f"/hosts/{HOST}/").content.decode()
    assert HOSTILE not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "s3cret" not in page  # the command line was redacted before it was stored


def test_the_default_page_is_this_machine_or_the_first_host_reporting(client, settings):
    settings.HOST_NAME = "not-reporting"
    stored(captured("load", HOST))
    assert f'data-host="{HOST}"' in client.get("/").content.decode()


def test_several_hosts_get_an_overview_and_a_host_picker(
    client, django_assert_num_queries, tmp_path
):
    stored(captured("load", "alpha"), host="alpha")
    beta = captured("idle", "beta", directory=another_board_dir(tmp_path, "idle"))  # own GPU
    stored(later(beta, -timedelta(minutes=5).total_seconds()), host="beta")
    # host names, every host's latest snapshot, alpha's five minutes of samples and alerts
    with django_assert_num_queries(5):
        page = client.get("/hosts/alpha/").content.decode()
    assert 'id="host-picker"' in page
    assert 'aria-labelledby="hosts-title"' in page
    assert "1 of 1 GPU busy" in page
    assert "stale" in page  # beta's last sample is five minutes old


def test_the_page_and_the_polling_fallback_are_sent_compressed(client):
    stored(captured("load", HOST))
    for url in (f"/hosts/{HOST}/", f"/live/fragments?host={HOST}"):
        response = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
        assert response.status_code == 200
        assert response["Content-Encoding"] == "gzip"
        assert len(response.content) < 12_000  # the uncompressed live area is ~30 KB
    polled = client.get(f"/live/fragments?host={HOST}", HTTP_ACCEPT_ENCODING="gzip")
    again = client.get(
        f"/live/fragments?host={HOST}",
        HTTP_ACCEPT_ENCODING="gzip",
        HTTP_IF_NONE_MATCH=polled["ETag"],
    )
    assert polled["ETag"].startswith("W/") and again.status_code == 304


def test_a_host_deleted_in_admin_leaves_the_picker_and_overview_and_its_page_is_a_404(
    client, tmp_path
):
    from monitoring.models import Host

    stored(captured("load", "alpha"), host="alpha")
    beta = captured("idle", "beta", directory=another_board_dir(tmp_path, "idle"))  # own GPU
    stored(later(beta, -300), host="beta")
    assert "/hosts/beta/" in client.get("/hosts/alpha/").content.decode()  # heard of it

    Host.objects.get(name="beta").delete()  # as the admin's delete does

    page = client.get("/hosts/alpha/").content.decode()
    assert "beta" not in page  # neither in the host picker nor in the overview
    response = client.get("/hosts/beta/")
    assert response.status_code == 404
    assert (
        "No host named &#x27;beta&#x27; reports to this Hoof Hearted." in response.content.decode()
    )
    assert client.get("/live/fragments?host=beta").status_code == 404


def test_a_host_deleted_through_another_server_process_is_forgotten_at_the_next_page(
    client, tmp_path
):
    from django.db.models.signals import post_delete

    from dashboard.apps import _host_deleted
    from monitoring.models import Host

    stored(captured("load", "alpha"), host="alpha")
    beta = captured("idle", "beta", directory=another_board_dir(tmp_path, "idle"))  # own GPU
    stored(later(beta, -300), host="beta")
    assert client.get("/hosts/beta/").status_code == 200  # this process now knows beta
    post_delete.disconnect(sender=Host, dispatch_uid="dashboard-host-deleted")
    try:
        Host.objects.get(name="beta").delete()  # this process is not told
    finally:
        post_delete.connect(_host_deleted, sender=Host, dispatch_uid="dashboard-host-deleted")
    assert "beta" not in client.get("/hosts/alpha/").content.decode()
    assert client.get("/hosts/beta/").status_code == 404


def test_the_polling_fallback_shows_alerts_as_the_database_has_them(client, settings):
    import time
    from datetime import UTC, datetime

    from django.utils import timezone

    from dashboard.hub import get_hub
    from dashboard.tests.live_helpers import message
    from monitoring.models import Alert, Host
    from monitoring.records import AlertRecord

    settings.POLL_INTERVAL_MS = 250
    now = captured("load", HOST)
    stored(now)
    started = datetime.now(UTC).replace(microsecond=0)
    hot = AlertRecord(
        key="threshold:3:GPU-0",
        rule="threshold",
        metric="memory_used_mib",
        severity="warning",
        started_at=started,
        message="GPU 0 memory used 4.6 GiB ≥ 100 MiB for 5 s",
    )
    row = Alert.objects.create(
        host=Host.objects.get(name=HOST),
        key=hot.key,
        rule=hot.rule,
        metric=hot.metric,
        severity=hot.severity,
        started_at=started,
        message=hot.message,
    )
    get_hub().submit(message(later(now, 1), HOST, alerts=[hot]))  # heard live, then silence
    assert "cleared" not in client.get(f"/live/fragments?host={HOST}").content.decode()
    time.sleep(1.1)  # the live feed went quiet: the database says it is still open
    body = client.get(f"/live/fragments?host={HOST}").content.decode()
    assert hot.message in body and "cleared" not in body
    row.ended_at = started + timedelta(seconds=19)
    row.message = "memory used back to 0 B"
    row.save()
    time.sleep(1.1)
    body = client.get(f"/live/fragments?host={HOST}").content.decode()
    assert "cleared" in body and "memory used back to 0 B" in body
    assert f"until {timezone.localtime(row.ended_at):%H:%M:%S}" in body


@pytest.mark.parametrize("age_s, stale", [(8, False), (12, True)])
def test_the_page_calls_a_host_stale_exactly_when_the_health_check_does(
    client, settings, age_s, stale
):
    from datetime import UTC, datetime

    from dashboard.health import health_report

    settings.STALE_AFTER_S = 10
    stored(later(captured("load", HOST), -age_s))
    page = client.get(f"/hosts/{HOST}/").content.decode()
    health = health_report(HOST, settings.STALE_AFTER_S, datetime.now(UTC), ("samples",))
    assert health.hosts[0]["stale"] is stale
    assert f'data-stale="{str(stale).lower()}"' in page
    assert ("Collector not running" in page) is stale


def quiet_for_long(host: str) -> None:
    """This process heard ``host`` last long ago (its collector now publishes elsewhere)."""
    from dashboard.hub import get_hub

    get_hub().hosts[host].received -= 3600


def test_a_page_of_a_host_heard_long_ago_shows_the_databases_newer_sample_and_says_so(
    client, django_assert_num_queries
):
    from dashboard.hub import get_hub

    now = captured("load", HOST)
    old = later(now, -600, temperature=55)
    get_hub().submit({"host": HOST, "snapshot": to_data(old), "alerts": []})  # heard live, then
    quiet_for_long(HOST)
    stored(now)
    # host names, the latest snapshot, five minutes of GPU and host samples, recent alerts
    with django_assert_num_queries(5):
        page = client.get(f"/hosts/{HOST}/").content.decode()
    assert "Collector not running" not in page and 'data-stale="false"' in page
    assert "from the database, not live" in page
    assert "55 °C" not in page


def test_the_polling_fallback_follows_the_database_for_a_host_heard_nothing_live_from(client):
    now = captured("load", HOST)
    stored(later(now, -30))
    first = client.get(f"/live/fragments?host={HOST}")
    assert "Collector not running" in first.content.decode()
    quiet_for_long(HOST)
    stored(now)
    again = client.get(f"/live/fragments?host={HOST}", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 200
    body = again.content.decode()
    assert "Collector not running" not in body and "from the database, not live" in body
