"""The live publisher: real channel layers (in-memory, and Redis when the test command runs it),
and a Redis that refuses or never answers must cost the sampling thread nothing."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer

from monitoring.records import AlertRecord, EventRecord
from monitoring.telemetry.nvml_capture import load_capture, multi_gpu
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import GROUP, read, receive, subscribe
from monitoring.worker.publish import (
    LARGE_MESSAGE_BYTES,
    MESSAGE_TYPE,
    SnapshotPublisher,
    build_message,
    group_members,
    message_size,
)


def alert() -> AlertRecord:
    return AlertRecord(
        key="threshold:1:GPU-x",
        rule="threshold",
        metric="temperature",
        severity="warning",
        started_at=datetime(2026, 1, 5, 3, 0, tzinfo=UTC),
        message="GPU 0 temperature 80 °C ≥ 75 °C",
        value=80.0,
    )


def test_the_message_carries_the_snapshot_alerts_and_events_as_plain_data():
    snap = read(load_capture(H100, "load"))
    event = EventRecord(time=snap.timestamp, kind="gpu_lost", message="GPU 0 lost", gpu_uuid="u")
    message = build_message("gpu-box", snap, [alert()], [event])
    assert message["type"] == MESSAGE_TYPE == "telemetry.snapshot"
    assert message["host"] == "gpu-box"
    assert message["snapshot"]["gpus"][0]["uuid"] == "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"
    assert message["snapshot"]["timestamp"].endswith("Z")
    assert message["alerts"][0]["severity"] == "warning"
    assert message["alerts"][0]["startedAt"] == "2026-01-05T03:00:00Z"
    assert message["events"][0]["gpuUuid"] == "u"


def test_an_eight_gpu_snapshot_fits_a_channel_layer_message_easily():
    snap = read(multi_gpu(load_capture(H100, "load"), 8))
    size = message_size(build_message("gpu-box", snap))
    assert 8 * 1000 < size < LARGE_MESSAGE_BYTES // 4, size


def test_it_sends_each_snapshot_to_the_group_of_the_in_memory_layer():
    layer = InMemoryChannelLayer()
    channel = subscribe(layer)
    publisher = SnapshotPublisher("gpu-box", group=GROUP, layer=layer)
    try:
        snap = read(load_capture(H100, "load"))
        assert publisher.publish(snap, alerts=[alert()])
        publisher.wait(2)
        message = receive(layer, channel)
    finally:
        publisher.close()
    assert message["type"] == "telemetry.snapshot"
    assert message["host"] == "gpu-box"
    assert message["snapshot"]["gpus"][0]["utilization"] == 100
    assert message["alerts"][0]["key"] == "threshold:1:GPU-x"
    assert publisher.sent == 1 and publisher.dropped == 0


@pytest.mark.redis
def test_it_sends_through_the_real_redis(monkeypatch):
    from channels_redis.core import RedisChannelLayer

    url = redis_url()
    monkeypatch.setattr("monitoring.worker.publish.AUDIENCE_CHECK_S", 0.0)  # ask at every publish
    layer = RedisChannelLayer(hosts=[url])
    async_to_sync(layer.flush)()
    publisher = SnapshotPublisher("redis-box", group=GROUP, layer=RedisChannelLayer(hosts=[url]))
    snap = read(load_capture(H100, "load"))
    try:
        publisher.publish(snap)
        publisher.wait(2)
        assert publisher.audience == 0  # asked Redis: nobody in the group
        channel = subscribe(layer)
        publisher.publish(snap)
        publisher.wait(2)
        assert publisher.audience == 1
        publisher.publish(snap)
        publisher.wait(2)
        message = receive(layer, channel)
    finally:
        publisher.close()
        async_to_sync(layer.flush)()
    assert message["host"] == "redis-box"
    assert message["snapshot"]["driver"]["driverVersion"] == "580.159.04"


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("needs REDIS_URL (the Redis of scripts/services.sh)")
    return url


def test_the_in_memory_layer_counts_the_channels_in_a_group():
    layer = InMemoryChannelLayer()
    count = async_to_sync(group_members)
    assert count(layer, GROUP) == 0
    first, second = subscribe(layer), subscribe(layer)
    assert count(layer, GROUP) == 2
    async_to_sync(layer.group_discard)(GROUP, first)
    assert count(layer, GROUP) == 1
    assert count(layer, "another-group") == 0
    assert second


@pytest.mark.redis
def test_channels_redis_counts_one_member_per_web_process_with_viewers():
    from channels_redis.core import RedisChannelLayer

    url = redis_url()
    worker_side, web_one, web_two = (RedisChannelLayer(hosts=[url]) for _ in range(3))
    count = async_to_sync(group_members)
    try:
        assert count(worker_side, GROUP) == 0
        one = subscribe(web_one)
        subscribe(web_two)
        assert count(worker_side, GROUP) == 2
        async_to_sync(web_one.group_discard)(GROUP, one)
        assert count(worker_side, GROUP) == 1
    finally:
        async_to_sync(worker_side.flush)()


@pytest.mark.redis
def test_a_layer_that_cannot_count_says_unknown_rather_than_nobody():
    """The Redis pub/sub layer only knows its own process's groups; a channels-redis whose
    insides changed cannot be read: both give None ("unknown": the publisher sends), never
    a wrong 0 that would stop live updates."""
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    class ChangedRedisLayer(RedisChannelLayer):
        _group_key = None

    url = redis_url()
    count = async_to_sync(group_members)
    pubsub = RedisPubSubChannelLayer(hosts=[url])
    assert count(pubsub, GROUP) is None
    assert count(ChangedRedisLayer(hosts=[url]), GROUP) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_is_built_or_sent_while_nobody_listens_and_a_new_listener_gets_updates(
    monkeypatch,
):
    monkeypatch.setattr("monitoring.worker.publish.AUDIENCE_CHECK_S", 0.2)
    layer = InMemoryChannelLayer()
    publisher = SnapshotPublisher("gpu-box", group=GROUP, layer=layer)
    snap = read(load_capture(H100, "load"))
    try:
        publisher.publish(snap)  # audience unknown: sent (to nobody) and counted
        publisher.wait(2)
        assert publisher.audience == 0
        for _ in range(5):
            assert publisher.publish(snap) is False
            publisher.wait(2)
        assert publisher.skipped >= 5
        channel = subscribe(layer)
        time.sleep(0.25)
        publisher.publish(snap)  # the check finds the listener; this one is skipped still
        publisher.wait(2)
        assert publisher.audience == 1
        assert publisher.publish(snap)
        publisher.wait(2)
        assert receive(layer, channel)["host"] == "gpu-box"
    finally:
        publisher.close()


def test_while_someone_listens_it_asks_again_only_after_the_longer_recheck(monkeypatch):
    monkeypatch.setattr("monitoring.worker.publish.AUDIENCE_CHECK_S", 0.0)
    monkeypatch.setattr("monitoring.worker.publish.AUDIENCE_RECHECK_S", 0.3)
    layer = InMemoryChannelLayer()
    channel = subscribe(layer)
    publisher = SnapshotPublisher("gpu-box", group=GROUP, layer=layer)
    snap = read(load_capture(H100, "load"))
    try:
        for _ in range(2):  # asks (at once again: the first answer was not known yet)
            publisher.publish(snap)
            publisher.wait(2)
        assert publisher.audience == 1
        async_to_sync(layer.group_discard)(GROUP, channel)
        for _ in range(3):  # not asked again yet: still sent, to nobody
            assert publisher.publish(snap)
            publisher.wait(2)
        time.sleep(0.35)
        publisher.publish(snap)  # asks again: the listener left
        publisher.wait(2)
        assert publisher.audience == 0
        assert publisher.publish(snap) is False
    finally:
        publisher.close()


def test_a_refused_redis_drops_messages_without_slowing_the_caller_and_logs_once(caplog):
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[f"redis://127.0.0.1:{free_port()}/0"])
    publisher = SnapshotPublisher("gpu-box", group=GROUP, layer=layer, timeout=0.3)
    snap = read(load_capture(H100, "load"))
    caplog.set_level(logging.WARNING, logger="monitoring.worker.publish")
    try:
        worst = 0.0
        for _ in range(5):
            started = time.perf_counter()
            publisher.publish(snap)
            worst = max(worst, time.perf_counter() - started)
            publisher.wait(2)
    finally:
        publisher.close()
    assert worst < 0.05
    assert publisher.sent == 0 and publisher.dropped == 5
    assert publisher.healthy is False
    warnings = [r for r in caplog.records if "cannot publish live updates" in r.getMessage()]
    assert len(warnings) == 1


def test_a_redis_that_never_answers_is_abandoned_after_the_timeout_and_recovers():
    """A listening socket that never replies: the send hangs like a wedged Redis would."""
    from channels_redis.core import RedisChannelLayer

    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(16)
    port = black_hole.getsockname()[1]
    publisher = SnapshotPublisher(
        "gpu-box",
        group=GROUP,
        layer=RedisChannelLayer(hosts=[f"redis://127.0.0.1:{port}/0"]),
        timeout=0.3,
    )
    snap = read(load_capture(H100, "load"))
    try:
        started = time.perf_counter()
        assert publisher.publish(snap)
        assert time.perf_counter() - started < 0.05  # handed over, not sent, on this thread
        assert publisher.publish(snap) is False  # one in flight: the next is dropped at once
        publisher.wait(3)
        waited = time.perf_counter() - started
        assert 0.25 < waited < 2.0
        assert publisher.dropped == 2 and publisher.last_error == "timed out"
        # the channel layer comes back (here: an in-memory one), live updates flow again
        layer = InMemoryChannelLayer()
        channel = subscribe(layer)
        publisher.layer = layer
        publisher.publish(snap)
        publisher.wait(2)
        assert receive(layer, channel)["host"] == "gpu-box"
        assert publisher.healthy
    finally:
        publisher.close()
        black_hole.close()
