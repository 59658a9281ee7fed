"""A replayed process has no start time (NVML gives none, the capture holds none): the worker
says when the monitor first saw it instead, the live message carries it, the page says
"seen since", never "for", and history's session starts at the same moment; a restarted
worker keeps the earlier time from the session it resumes. On the real H100 replay."""

from __future__ import annotations

import pytest
from channels.layers import InMemoryChannelLayer
from django.utils import timezone

from dashboard.present import view
from monitoring.models import ProcessSession
from monitoring.storage.writer import SnapshotStore
from monitoring.telemetry.serialize import snapshot_from_data
from monitoring.tests.helpers import GROUP, receive, replay_sampler, subscribe
from monitoring.worker.loop import CollectWorker, WorkerConfig
from monitoring.worker.publish import SnapshotPublisher
from monitoring.worker.tiers import Tiers

HOST = "first-seen-test"
EVERY_TIER = Tiers(processes=True, slow=True)


def worker(publisher=None) -> CollectWorker:
    return CollectWorker(
        replay_sampler("load", hostname=HOST),
        SnapshotStore(HOST),
        WorkerConfig(host_name=HOST),
        publisher=publisher,
    )


@pytest.mark.django_db
def test_a_replayed_process_is_said_to_be_seen_since_the_monitor_first_saw_it():
    layer = InMemoryChannelLayer()
    channel = subscribe(layer)
    publisher = SnapshotPublisher(HOST, group=GROUP, layer=layer)
    collect = worker(publisher)
    try:
        # each tick's message sent before the next, as a second apart (a tick that finds a
        # send still in flight drops its message)
        first = collect.tick(EVERY_TIER)
        publisher.wait(2)
        second = collect.tick(Tiers(processes=False, slow=False))
        publisher.wait(2)
        third = collect.tick(EVERY_TIER)
        publisher.wait(2)
        for _ in range(2):
            receive(layer, channel)
        message = receive(layer, channel)
    finally:
        publisher.close()
    assert [proc.pid for proc in third.gpus[0].processes] == [448, 447]
    for proc in third.gpus[0].processes:
        assert proc.start_time is None  # the capture holds none: nothing is made up
        assert proc.first_seen == first.timestamp < second.timestamp < third.timestamp

    live = snapshot_from_data(message["snapshot"])  # what a server process hears
    assert [proc.first_seen for proc in live.gpus[0].processes] == [first.timestamp] * 2
    page = view(live, HOST)
    since = f"{first.timestamp.astimezone(timezone.get_default_timezone()):%H:%M}"
    (line,) = page.banner
    assert line.text.startswith("GPU 0 at 100 %: python3 (root), 1.1 GiB")
    assert f", seen since {since} (+1 more process)" in line.text and ", for " not in line.text
    for row in page.gpus[0].processes:
        assert row.running_for == f"seen since {since}"
        assert row.since.startswith("first seen by the monitor at ")
        assert row.since.endswith("; the driver gives no start time")

    collect.flush()
    sessions = ProcessSession.objects.filter(gpu__host__name=HOST)
    assert {s.first_seen for s in sessions} == {first.timestamp}  # history says the same


@pytest.mark.django_db
def test_a_restarted_worker_keeps_the_first_sighting_of_the_session_it_resumes():
    before = worker()
    first = before.tick(EVERY_TIER)
    before.tick(EVERY_TIER)
    before.flush()

    after = worker()  # a new worker of the same host: the process still runs
    restarted = after.tick(EVERY_TIER)
    assert restarted.gpus[0].processes[0].first_seen == restarted.timestamp  # not known yet
    after.flush()  # resumes the open session of the worker before
    later = after.tick(EVERY_TIER)
    assert [proc.first_seen for proc in later.gpus[0].processes] == [first.timestamp] * 2
    assert ProcessSession.objects.filter(gpu__host__name=HOST).count() == 2


@pytest.mark.django_db
def test_a_process_listed_again_after_a_gap_longer_than_the_grace_is_seen_anew():
    # (without a start time, the same pid after a gap may be another process: as sessions do)
    from datetime import timedelta

    collect = worker()
    first = collect.tick(EVERY_TIER)
    gap = collect.first_seen.grace + timedelta(seconds=1)
    back = collect.sampler.sample(processes=True, slow=True, now=first.timestamp + gap)
    collect.first_seen.stamp(back)
    assert back.gpus[0].processes[0].first_seen == back.timestamp
    steady = collect.sampler.sample(processes=True, slow=True, now=back.timestamp + gap / 4)
    collect.first_seen.stamp(steady)
    assert steady.gpus[0].processes[0].first_seen == back.timestamp
