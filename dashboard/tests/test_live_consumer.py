"""The live WebSocket through the real channel layer (Redis when the test command runs it):
a viewer gets the whole page at once, then only what changed, at the pace it chose; what a
client sends that is not a pace is ignored and counted; foreign origins are refused; a host
nobody reports under is told so, with close code 4404."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from dashboard import hub as hub_module
from dashboard.consumers import MAX_CLOSE_REASON, UNKNOWN_HOST, Counters
from dashboard.hub import get_hub
from dashboard.tests.live_helpers import captured, later, message
from hoofhearted.asgi import application

HOST = "live-test"
ORIGIN = [(b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_layer")]


def run(coroutine_function):
    """Run a scenario on one event loop; then stop the hub and close the layer's connections
    on that loop, so nothing of it outlives the loop (a pending Redis read would hang its
    closing)."""

    async def scenario():
        try:
            await coroutine_function()
        finally:
            await get_hub().stop()
            close = getattr(get_channel_layer(), "close_pools", None)
            if close is not None:
                await asyncio.wait_for(close(), 2.0)
            # consumers a scenario left connected, and anything they started
            leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                await asyncio.wait(leftovers, timeout=2.0)

    async_to_sync(scenario)()


async def connect(query: str = f"host={HOST}", headers=ORIGIN) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, f"/ws/live/?{query}", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def until_listening() -> None:
    for _ in range(100):
        if get_hub().listening:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the hub never joined the telemetry group")


async def publish(snapshot) -> None:
    from django.conf import settings

    await get_channel_layer().group_send(settings.TELEMETRY_GROUP, message(snapshot, HOST))


def ids(html: str) -> set[str]:
    import re

    return set(re.findall(r'<[a-z]+ id="([^"]+)" hx-swap-oob="true"', html))


def test_a_viewer_gets_the_whole_page_at_once_then_only_the_fragments_that_changed():
    async def scenario():
        viewer = await connect()
        await until_listening()
        first = captured("load", HOST)
        await publish(first)
        whole = await viewer.receive_from(timeout=5)
        assert 'id="live-body"' in whole
        assert "GPU 0 at 100 %: python3 (root)" in whole

        await publish(later(first, 1.0, temperature=71))
        changed = await viewer.receive_from(timeout=5)
        assert 'id="live-body"' not in changed
        assert "gpu-0-temp" in ids(changed) and "71 °C" in changed
        assert "data-status" in ids(changed)  # the sample's time moved
        # untouched figures and cards are not sent again
        assert not ids(changed) & {
            "gpu-0-util",
            "gpu-0-mem",
            "gpu-0-power",
            "gpu-0-head",
            "banner",
            "users",
        }
        # (sparklines may come too when the two ticks straddle one of their 5 s buckets)
        assert "smi-0-temp" in ids(changed)  # the nvidia-smi table's cell, not the table
        assert ids(changed) <= {
            "gpu-0-temp",
            "data-status",
            "smi-0-temp",
            "gpu-0-spark",
            "host-spark",
        }
        await viewer.disconnect()

    run(scenario)


def test_a_tick_is_rendered_once_for_every_viewer_in_the_process():
    async def scenario():
        viewers = [await connect() for _ in range(5)]
        await until_listening()
        rendered = get_hub().rendered
        await publish(captured("load", HOST))
        for viewer in viewers:
            assert 'id="live-body"' in await viewer.receive_from(timeout=5)
        assert get_hub().rendered - rendered == 1
        for viewer in viewers:
            await viewer.disconnect()

    run(scenario)


def test_each_viewer_gets_frames_at_its_own_pace():
    async def scenario():
        live, slow = await connect(), await connect()
        await until_listening()
        first = captured("load", HOST)
        await publish(first)
        await live.receive_from(timeout=5)
        await slow.receive_from(timeout=5)

        await slow.send_to(text_data=json.dumps({"pace": "paused", "HEADERS": {}}))
        await asyncio.sleep(0.2)
        for n in range(1, 4):
            await publish(later(first, n, temperature=70 + n))
            assert "°C" in await live.receive_from(timeout=5)
        assert await slow.receive_nothing(timeout=0.5)

        await slow.send_to(text_data=json.dumps({"pace": "live"}))  # resuming catches up at once
        caught_up = await slow.receive_from(timeout=5)
        assert "73 °C" in caught_up and 'id="live-body"' not in caught_up

        await slow.send_to(text_data=json.dumps({"pace": "5s"}))
        await asyncio.sleep(0.2)
        await publish(later(first, 5, temperature=80))
        assert "80 °C" in await live.receive_from(timeout=5)
        assert await slow.receive_nothing(timeout=0.5)  # its last frame was under 5 s ago
        await live.disconnect()
        await slow.disconnect()

    run(scenario)


def test_bad_client_messages_are_ignored_and_counted_and_the_socket_lives_on():
    async def scenario():
        viewer = await connect()
        await until_listening()
        ignored, oversized = Counters.ignored, Counters.oversized
        await viewer.send_to(text_data="not json at all")
        await viewer.send_to(text_data=json.dumps({"pace": "warp speed"}))
        await viewer.send_to(text_data=json.dumps(["pace", "live"]))
        await viewer.send_to(bytes_data=b"\xff\xfe\x00")
        await viewer.send_to(text_data="[" * 2000 + "]" * 2000)  # deeper than json can nest
        await viewer.send_to(text_data="x" * 100_000)
        await asyncio.sleep(0.2)
        assert Counters.ignored - ignored == 5
        assert Counters.oversized - oversized == 1
        await publish(captured("load", HOST))
        assert 'id="live-body"' in await viewer.receive_from(timeout=5)
        await viewer.disconnect()

    run(scenario)


def test_a_foreign_origin_is_refused():
    async def scenario():
        communicator = WebsocketCommunicator(
            application,
            f"/ws/live/?host={HOST}",
            headers=[(b"origin", b"https://evil.example"), (b"host", b"localhost:8000")],
        )
        connected, _ = await communicator.connect()
        assert not connected
        assert get_hub().viewer_count == 0

    run(scenario)


def test_a_message_that_cannot_be_read_is_dropped_and_the_hub_goes_on():
    async def scenario():
        viewer = await connect()
        await until_listening()
        from django.conf import settings

        await get_channel_layer().group_send(
            settings.TELEMETRY_GROUP, {"type": "telemetry.snapshot", "host": HOST, "snapshot": {}}
        )
        await publish(captured("load", HOST))
        assert 'id="live-body"' in await viewer.receive_from(timeout=5)
        assert get_hub().bad_messages == 1
        await viewer.disconnect()

    run(scenario)


def test_the_viewer_is_told_plainly_when_the_collector_stops():
    async def scenario():
        viewer = await connect()
        await until_listening()
        old = captured("load", HOST)
        await publish(later(old, -120))  # the last sample, two minutes old
        whole = await viewer.receive_from(timeout=5)
        assert "Collector not running: last sample 2 min ago" in whole
        assert 'data-stale="true"' in whole
        await viewer.disconnect()

    run(scenario)


def test_the_hub_leaves_the_group_when_nobody_watches(monkeypatch):
    monkeypatch.setattr(hub_module, "LINGER_S", 0.0)
    monkeypatch.setattr(hub_module, "STALE_CHECK_S", 0.05)

    async def scenario():
        viewer = await connect()
        await until_listening()
        await viewer.disconnect()
        for _ in range(100):
            if not get_hub().listening:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("still in the group with nobody watching")

    run(scenario)


def test_alerts_are_shown_as_they_open_and_close_with_the_rule_that_fired():
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from monitoring.records import AlertRecord

    hot = AlertRecord(
        key="threshold:1:GPU-997b6e6a",
        rule="threshold",
        metric="temperature",
        severity="critical",
        started_at=datetime.now(UTC),
        message="GPU 0 temperature 91 °C ≥ 85 °C",
        value=91.0,
    )

    async def scenario():
        viewer = await connect()
        await until_listening()
        first = captured("load", HOST)
        from django.conf import settings

        layer, group = get_channel_layer(), settings.TELEMETRY_GROUP
        await layer.group_send(group, message(first, HOST, alerts=[hot]))
        whole = await viewer.receive_from(timeout=5)
        assert "GPU 0 temperature 91 °C ≥ 85 °C" in whole
        assert "critical" in whole and "threshold · temperature" in whole
        ended = replace(hot, ended_at=hot.started_at + timedelta(seconds=7), message="back")
        await layer.group_send(group, message(later(first, 1.0), HOST, alerts=[ended]))
        changed = await viewer.receive_from(timeout=5)
        assert "alerts" in ids(changed)
        assert "cleared" in changed and "back" in changed
        assert f"until {local_time(ended.ended_at)}" in changed  # the worker's end time
        await viewer.disconnect()

    run(scenario)


def test_a_host_that_never_reported_is_told_so_with_4404_and_a_reason():
    async def scenario():
        communicator = WebsocketCommunicator(
            application, "/ws/live/?host=nobody-here", headers=ORIGIN
        )
        connected, _ = await communicator.connect()
        assert connected  # accepted, so the page can read why it is closed
        closed = await communicator.receive_output(timeout=5)
        assert closed == {
            "type": "websocket.close",
            "code": UNKNOWN_HOST,
            "reason": "No host named 'nobody-here' reports here",
        }
        assert get_hub().viewer_count == 0

    run(scenario)


def test_an_unknown_host_with_a_very_long_name_gets_a_reason_that_fits_a_close_frame():
    async def scenario():
        from urllib.parse import quote

        name = quote("ü" * 255)  # as the page's link encodes it
        communicator = WebsocketCommunicator(application, f"/ws/live/?host={name}", headers=ORIGIN)
        await communicator.connect()
        closed = await communicator.receive_output(timeout=5)
        assert closed["code"] == UNKNOWN_HOST
        assert closed["reason"].startswith("No host named 'üüü")
        assert closed["reason"].endswith("…' reports here")
        assert len(closed["reason"].encode("utf-8")) <= MAX_CLOSE_REASON

    run(scenario)


def test_a_host_that_reported_before_but_is_silent_is_not_unknown_it_is_stale():
    from asgiref.sync import sync_to_async

    from monitoring.models import Host
    from monitoring.storage.latest import write_latest

    old = later(captured("load", "gone-quiet"), -600)  # its last sample, ten minutes old

    @sync_to_async
    def reported_once():
        write_latest(Host.objects.create(name="gone-quiet").pk, old, {})

    async def scenario():
        await reported_once()
        viewer = await connect("host=gone-quiet")
        whole = await viewer.receive_from(timeout=5)
        assert "Collector not running: last sample 10 min ago" in whole
        await viewer.disconnect()

    run(scenario)


def test_this_machine_is_never_unknown_even_before_its_collector_reports(settings):
    settings.HOST_NAME = "just-installed"

    async def scenario():
        viewer = await connect("host=just-installed")
        assert await viewer.receive_nothing(timeout=0.3)  # open, waiting for a first sample
        await viewer.disconnect()

    run(scenario)


def local_time(moment) -> str:
    """A moment as the page's alert list writes it (H:i:s in the server's time zone)."""
    from django.utils import timezone

    return f"{timezone.localtime(moment):%H:%M:%S}"


def open_alert(started, key: str = "threshold:7:GPU-997b6e6a"):
    from monitoring.records import AlertRecord

    return AlertRecord(
        key=key,
        rule="threshold",
        metric="memory_used_mib",
        severity="warning",
        started_at=started,
        message="GPU 0 memory used 4.6 GiB ≥ 100 MiB for 5 s",
        value=4700.0,
    )


@database_sync_to_async
def stored_alert(record, ended=None):
    """The ``Alert`` row the worker writes for ``record`` (ended at ``ended``)."""
    from monitoring.models import Alert, Host

    return Alert.objects.update_or_create(
        host=Host.objects.get(name=HOST),
        key=record.key,
        started_at=record.started_at,
        defaults={
            "rule": record.rule,
            "metric": record.metric,
            "severity": record.severity,
            "message": record.message if ended is None else "memory used back to 0 B",
            "ended_at": ended,
        },
    )


@database_sync_to_async
def stored_snapshot(snapshot):
    from monitoring.models import Host
    from monitoring.storage.latest import write_latest

    write_latest(Host.objects.get(name=HOST).pk, snapshot, {})


async def frames_for(viewer, seconds: float) -> list[str]:
    """Every frame the viewer gets in the next ``seconds``."""
    frames = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        # receive_nothing waits without cancelling the consumer (a receive timing out would)
        if not await viewer.receive_nothing(timeout=0.05, interval=0.01):
            frames.append(await viewer.receive_from(timeout=1))
    return frames


def test_an_open_alert_stays_open_while_redis_is_down_and_clears_when_the_database_says(
    settings,
):
    from monitoring.tests import service_control

    settings.POLL_INTERVAL_MS = 250  # the page turns to the database after 0.5 s of silence
    first = captured("load", HOST)
    hot = open_alert(first.timestamp)

    async def scenario():
        await stored_alert(hot)
        viewer = await connect()
        await until_listening()
        await get_channel_layer().group_send(
            settings.TELEMETRY_GROUP, message(first, HOST, alerts=[hot])
        )
        whole = "".join(await frames_for(viewer, 1.0))
        assert hot.message in whole and "cleared" not in whole
        redis = service_control.redis_available()
        if redis:
            await asyncio.to_thread(service_control.stop_redis)
        try:
            # the live feed is silent; the worker goes on writing to the database
            await stored_snapshot(later(first, 3.0))
            during = await frames_for(viewer, 2.5)
            assert during, "the page was not updated from the database"
            assert not any("cleared" in frame for frame in during)
            ended = hot.started_at + timedelta(seconds=19)
            await stored_alert(hot, ended=ended)
            after = ""
            for tick in range(12):  # the worker goes on writing a snapshot every 0.25 s
                await stored_snapshot(later(first, 4.0 + tick / 4))
                after += "".join(await frames_for(viewer, 0.25))
            assert "cleared" in after and "memory used back to 0 B" in after
            assert f"until {local_time(ended)}" in after  # the database's end time
        finally:
            if redis:
                await asyncio.to_thread(service_control.start_redis)
        await viewer.disconnect()

    run(scenario)


def stored_latest(snapshot, host: str):
    """The host's collector wrote ``snapshot`` as its newest sample (and published it where
    this process cannot hear it: another process's in-memory channel layer)."""
    from asgiref.sync import sync_to_async

    from monitoring.models import Host
    from monitoring.storage.latest import write_latest

    @sync_to_async
    def write():
        write_latest(Host.objects.get_or_create(name=host)[0].pk, snapshot, {})

    return write()


async def until_received(viewer, text: str, timeout: float = 8.0) -> str:
    """The first frame sent to ``viewer`` that says ``text``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"no frame said {text!r}"
        frame = await viewer.receive_from(timeout=left)
        if text in frame:
            return frame


def test_a_host_whose_collector_publishes_elsewhere_is_followed_in_the_database_and_said_so(
    settings, monkeypatch
):
    """The QA case: this server's collector collects another host (embedded), the viewed
    host's collector runs in another process sharing the database."""
    from datetime import UTC, datetime

    from asgiref.sync import sync_to_async

    from dashboard.health import health_report

    monkeypatch.setattr(hub_module, "STALE_CHECK_S", 0.1)
    settings.STALE_AFTER_S = 10
    elsewhere = captured("load", "elsewhere")

    async def scenario():
        get_hub().embedded = True
        await stored_latest(later(elsewhere, -8), "elsewhere")  # 8 s old: fresh to health
        viewer = await connect("host=elsewhere")
        whole = await viewer.receive_from(timeout=5)
        health = await sync_to_async(health_report)(
            "elsewhere", settings.STALE_AFTER_S, datetime.now(UTC), ("samples",)
        )
        assert health.hosts[0]["stale"] is False
        assert 'data-stale="false"' in whole and "Collector not running" not in whole
        assert "from the database, not live" in whole

        await stored_latest(later(elsewhere, 0, temperature=71), "elsewhere")
        changed = await until_received(viewer, "71 °C")
        assert "gpu-0-temp" in ids(changed)
        await viewer.disconnect()

    run(scenario)


def test_an_open_alert_a_live_message_no_longer_carries_is_open_while_the_database_says_so():
    from django.conf import settings

    first = captured("load", HOST)
    hot = open_alert(first.timestamp)

    async def scenario():
        await stored_alert(hot)  # written by a worker that no longer says so (restarted)
        viewer = await connect()
        await until_listening()
        layer, group = get_channel_layer(), settings.TELEMETRY_GROUP
        await layer.group_send(group, message(first, HOST, alerts=[]))
        whole = "".join(await frames_for(viewer, 0.5))
        assert hot.message in whole and "warning" in whole and "cleared" not in whole
        for tick in range(1, 4):
            await layer.group_send(group, message(later(first, tick), HOST, alerts=[]))
        frames = await frames_for(viewer, 1.5)
        assert not any("cleared" in frame for frame in frames)
        ended = hot.started_at + timedelta(seconds=2)
        await stored_alert(hot, ended=ended)  # the worker's first write closes it
        await layer.group_send(group, message(later(first, 5), HOST, alerts=[]))
        after = "".join(await frames_for(viewer, 2.5))
        assert "cleared</span>" in after and f"until {local_time(ended)}" in after
        await viewer.disconnect()

    run(scenario)


def test_the_hosts_overview_dates_a_stale_host_as_its_status_does_as_time_goes_on(
    settings, monkeypatch
):
    import re

    from asgiref.sync import sync_to_async

    monkeypatch.setattr(hub_module, "STALE_CHECK_S", 0.1)
    settings.STALE_AFTER_S = 10
    quiet, neighbour = captured("load", "quiet"), captured("idle", "neighbour")

    def ages(frame: str) -> tuple[str | None, str | None]:
        status = re.search(r"last sample (\d+ s) ago", frame)
        card = re.search(r'href="/hosts/quiet/".*?</a>', frame, re.S)
        card_age = card and re.search(r"(\d+ s) ago", re.sub(r"<[^>]+>", "", card[0]))
        return status and status[1], card_age and card_age[1]

    async def scenario():
        await stored_latest(later(quiet, -11), "quiet")  # stale since a second
        await stored_latest(neighbour, "neighbour")
        await sync_to_async(get_hub().load_others)(["neighbour", "quiet"])  # as the page does
        viewer = await connect("host=quiet")
        whole = await viewer.receive_from(timeout=5)
        assert ages(whole)[0] is not None and ages(whole)[0] == ages(whole)[1]
        # three seconds on, the status and the hosts card still say the same age
        frame = await until_received(viewer, "last sample 14 s ago")
        assert ages(frame) == ("14 s", "14 s")
        await viewer.disconnect()

    run(scenario)
