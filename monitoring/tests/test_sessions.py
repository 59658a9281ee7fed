"""GPU process sessions from the real H100 load capture: tracking, closing, storing, asking."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitoring.models import ProcessSession
from monitoring.storage.sessions import ProcessSessionTracker, Session, container_label
from monitoring.storage.writer import SnapshotStore
from monitoring.telemetry.schema import Container
from monitoring.tests.storage_helpers import HOST, T0, replay_sampler, ticks

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"
TORCH = "import torch"


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def load_then_idle(load_ticks: int, idle_ticks: int):
    """The two captured processes for ``load_ticks`` seconds, then none."""
    load = ticks(replay_sampler("load"), load_ticks)
    idle = ticks(replay_sampler("idle"), idle_ticks, start=T0 + seconds(load_ticks))
    return load + idle


def by_pid(sessions) -> dict[int, Session]:
    return {s.pid: s for s in sessions}


# -- the tracker (no database) ------------------------------------------------------------------


def test_it_turns_the_two_load_processes_into_two_sessions():
    tracker = ProcessSessionTracker(grace_s=5)
    for snapshot in ticks(replay_sampler("load"), 10):
        tracker.observe(snapshot)
    sessions = by_pid(tracker.open_sessions)
    assert set(sessions) == {447, 448}
    torch, other = sessions[448], sessions[447]
    assert torch.user == other.user == "root"
    assert torch.name == "python3"
    assert TORCH in torch.command
    assert other.command == "python3 -"
    assert torch.peak_memory_mib == 3590
    assert torch.mean_memory_mib == 3590.0
    assert other.peak_memory_mib == 1130
    assert other.mean_sm_utilization == 100.0
    assert torch.mean_sm_utilization is None  # never reported for it: not faked as 0
    assert torch.first_seen == T0
    assert torch.gpu_uuid == UUID


def test_it_counts_only_real_readings_of_the_process_list():
    tracker = ProcessSessionTracker(grace_s=5)
    for snapshot in ticks(replay_sampler("load"), 10, process_every=2):
        tracker.observe(snapshot)
    session = by_pid(tracker.open_sessions)[448]
    # ticks 0, 2, 4, 6, 8 read the list; the others repeat it
    assert session.samples == 5
    assert session.last_seen == T0 + seconds(8)


def test_it_closes_a_session_after_the_grace_period_at_its_last_sighting():
    tracker = ProcessSessionTracker(grace_s=5)
    snapshots = load_then_idle(4, 6)  # last sighting at T0+2 (the tick-3 list is a repeat)
    for snapshot in snapshots[:8]:  # up to T0+7: 5 s after the last sighting, not more
        tracker.observe(snapshot)
    assert len(tracker.open_sessions) == 2
    tracker.observe(snapshots[8])  # T0+8
    assert tracker.open_sessions == []
    closed = tracker.changed()
    assert len(closed) == 2
    assert all(not s.open and s.last_seen == T0 + seconds(2) for s in closed)
    tracker.written()
    assert tracker.changed() == []


def test_it_closes_the_sessions_of_a_lost_gpu_at_once():
    sampler = replay_sampler("load")
    tracker = ProcessSessionTracker(grace_s=5)
    for snapshot in ticks(sampler, 3):
        tracker.observe(snapshot)
    sampler.gpu_source._nvml[0].fail(0)
    lost = sampler.sample(now=T0 + seconds(3))
    assert lost.gpus[0].state == "lost"
    tracker.observe(lost)
    assert tracker.open_sessions == []
    assert {s.last_seen for s in tracker.changed()} == {T0 + seconds(2)}


def test_it_returns_to_a_checkpoint_when_a_write_fails():
    tracker = ProcessSessionTracker(grace_s=5)
    snapshots = ticks(replay_sampler("load"), 6)
    for snapshot in snapshots[:2]:
        tracker.observe(snapshot)
    tracker.written()
    saved = tracker.checkpoint()
    for snapshot in snapshots[2:]:
        tracker.observe(snapshot)
    assert by_pid(tracker.open_sessions)[448].samples == 3
    tracker.rollback(saved)
    assert by_pid(tracker.open_sessions)[448].samples == 1
    assert tracker.changed() == []
    for snapshot in snapshots[2:]:  # the same batch again: counted once
        tracker.observe(snapshot)
    assert by_pid(tracker.open_sessions)[448].samples == 3


def _resumed(pid: int, last_seen, process_start=None) -> Session:
    return Session(
        gpu_uuid=UUID,
        pid=pid,
        process_start=process_start,
        first_seen=T0 - seconds(3600),
        last_seen=last_seen,
        samples=100,
        memory_total=100 * 3590.0,
        memory_samples=100,
        peak_memory_mib=3590,
        db_id=41,
    )


def test_it_continues_a_resumed_session_seen_again_within_the_grace_period():
    tracker = ProcessSessionTracker(grace_s=5)
    earlier = _resumed(448, T0 - seconds(3))
    tracker.resume([earlier])
    tracker.observe(ticks(replay_sampler("load"), 1)[0])
    sessions = by_pid(tracker.open_sessions)
    assert sessions[448] is earlier
    assert earlier.samples == 101
    assert earlier.first_seen == T0 - seconds(3600)
    assert not earlier.resumed


def test_it_closes_resumed_sessions_missing_from_the_first_process_list():
    tracker = ProcessSessionTracker(grace_s=5)
    gone = _resumed(999, T0 - seconds(2))
    tracker.resume([gone])
    tracker.observe(ticks(replay_sampler("load"), 1)[0])
    assert 999 not in by_pid(tracker.open_sessions)
    assert not gone.open
    assert gone.last_seen == T0 - seconds(2)


def test_it_continues_a_process_with_the_same_start_time_however_long_the_gap():
    started = T0 - seconds(7200)
    tracker = ProcessSessionTracker(grace_s=5)
    earlier = _resumed(448, T0 - seconds(600), process_start=started)
    tracker.resume([earlier])
    snapshot = ticks(replay_sampler("load"), 1)[0]
    for proc in snapshot.gpus[0].processes:
        proc.start_time = started
    tracker.observe(snapshot)
    assert by_pid(tracker.open_sessions)[448] is earlier
    assert earlier.last_seen == T0


def test_it_starts_a_new_session_for_a_pid_without_start_time_seen_long_after():
    tracker = ProcessSessionTracker(grace_s=5)
    earlier = _resumed(448, T0 - seconds(600))
    tracker.resume([earlier])
    tracker.observe(ticks(replay_sampler("load"), 1)[0])
    assert not earlier.open
    now = by_pid(tracker.open_sessions)[448]
    assert now is not earlier
    assert now.first_seen == T0


@pytest.mark.parametrize(
    ("container", "label"),
    [
        (None, ""),
        (Container(runtime="docker", id="1a2b3c4d5e6f" + "0" * 52), "docker 1a2b3c4d5e6f"),
        (
            Container(runtime="kubernetes", id="abc", pod_uid="pod-uid-1"),
            "kubernetes pod pod-uid-1",
        ),
        (Container(runtime="systemd", name="ollama.service"), "systemd ollama.service"),
        (Container(runtime="lxc", name="builder"), "lxc builder"),
    ],
)
def test_it_names_the_container_in_one_line(container, label):
    assert container_label(container) == label


# -- stored through the writer ------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_who_used_gpu_0_at_a_time_in_one_query(django_assert_num_queries):
    store = SnapshotStore(HOST, session_grace_s=5)
    snapshots = load_then_idle(20, 10)
    for snapshot in snapshots[:12]:
        store.add(snapshot)
    assert store.flush().error is None
    for snapshot in snapshots[12:]:
        store.add(snapshot)
    assert store.flush().error is None

    t = T0 + seconds(10)
    with django_assert_num_queries(1):
        rows = list(
            ProcessSession.objects.filter(
                gpu__host__name=HOST, gpu__index=0, first_seen__lte=t, last_seen__gte=t
            ).select_related("gpu")
        )
    assert {(r.pid, r.user) for r in rows} == {(447, "root"), (448, "root")}
    torch = next(r for r in rows if r.pid == 448)
    assert torch.duration == seconds(18)  # first reading T0, last T0+18
    assert torch.samples == 10
    assert torch.peak_memory_mib == 3590
    assert torch.mean_memory_mib == pytest.approx(3590.0)
    assert torch.mean_sm_utilization is None
    assert TORCH in torch.command
    assert not torch.open
    assert torch.gpu.uuid == UUID
    assert not ProcessSession.objects.filter(
        first_seen__lte=T0 + seconds(25), last_seen__gte=T0 + seconds(25)
    ).exists()


@pytest.mark.django_db
def test_it_updates_the_same_open_session_rows_on_each_flush():
    store = SnapshotStore(HOST, session_grace_s=5)
    snapshots = ticks(replay_sampler("load"), 8)
    for snapshot in snapshots[:4]:
        store.add(snapshot)
    store.flush()
    first = dict(ProcessSession.objects.values_list("pid", "samples"))
    assert first == {447: 2, 448: 2}
    for snapshot in snapshots[4:]:
        store.add(snapshot)
    assert store.flush().sessions == 2
    assert ProcessSession.objects.count() == 2
    assert dict(ProcessSession.objects.values_list("pid", "samples")) == {447: 4, 448: 4}
    assert set(ProcessSession.objects.values_list("open", flat=True)) == {True}
    assert ProcessSession.objects.get(pid=448).last_seen == T0 + seconds(6)


@pytest.mark.django_db
def test_it_continues_open_sessions_after_a_quick_worker_restart():
    before = SnapshotStore(HOST, session_grace_s=5)
    for snapshot in ticks(replay_sampler("load"), 4):  # sightings at T0, T0+2
        before.add(snapshot)
    before.flush()
    after = SnapshotStore(HOST, session_grace_s=5)  # a new worker process
    for snapshot in ticks(replay_sampler("load"), 4, start=T0 + seconds(6)):
        after.add(snapshot)
    assert after.flush().error is None
    assert ProcessSession.objects.count() == 2
    torch = ProcessSession.objects.get(pid=448)
    assert (torch.first_seen, torch.last_seen, torch.samples) == (T0, T0 + seconds(8), 4)
    assert torch.open


@pytest.mark.django_db
def test_it_closes_open_sessions_at_their_last_sighting_after_a_long_worker_stop():
    before = SnapshotStore(HOST, session_grace_s=5)
    for snapshot in ticks(replay_sampler("load"), 4):
        before.add(snapshot)
    before.flush()
    after = SnapshotStore(HOST, session_grace_s=5)
    for snapshot in ticks(replay_sampler("idle"), 2, start=T0 + seconds(3600)):
        after.add(snapshot)
    assert after.flush().error is None
    rows = ProcessSession.objects.all()
    assert len(rows) == 2
    assert {(r.open, r.last_seen) for r in rows} == {(False, T0 + seconds(2))}
