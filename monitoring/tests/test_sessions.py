"""GPU process sessions from the real H100 load capture: tracking, closing, storing, asking."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError

from monitoring.models import GpuSample, HostSample, ProcessSession
from monitoring.storage import writer
from monitoring.storage.sessions import ProcessSessionTracker, Session, container_label
from monitoring.storage.writer import SnapshotStore
from monitoring.telemetry.schema import Container
from monitoring.tests.helpers import HOST, T0, replay_sampler, ticks

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
    assert tracker.take(T0 + seconds(8)) == closed
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
    tracker.take(T0 + seconds(1), everything=True)
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


def stored_as_rows(sessions: list[Session]) -> list[Session]:
    """What the writer does with taken sessions: new ones get a row id."""
    for n, session in enumerate(sessions, start=1):
        session.db_id = session.db_id or n
    return sessions


def test_it_hands_over_open_sessions_only_when_a_refresh_is_due():
    tracker = ProcessSessionTracker(grace_s=5, refresh_s=10)
    snapshots = ticks(replay_sampler("load"), 14)
    for snapshot in snapshots[:4]:
        tracker.observe(snapshot)
    assert len(stored_as_rows(tracker.take(T0 + seconds(3)))) == 2  # new, and a refresh due
    for snapshot in snapshots[4:8]:
        tracker.observe(snapshot)
    assert tracker.take(T0 + seconds(7)) == []  # 4 s since the last refresh
    assert len(tracker.changed()) == 2  # still news, for the next refresh
    for snapshot in snapshots[8:]:
        tracker.observe(snapshot)
    taken = by_pid(tracker.take(T0 + seconds(13)))  # 10 s: due
    assert (taken[448].samples, taken[448].last_seen) == (7, T0 + seconds(12))
    assert tracker.changed() == []


def test_it_hands_over_all_open_sessions_when_told_and_a_failed_write_takes_nothing():
    tracker = ProcessSessionTracker(grace_s=5, refresh_s=10)
    snapshots = ticks(replay_sampler("load"), 6)
    for snapshot in snapshots[:2]:
        tracker.observe(snapshot)
    stored_as_rows(tracker.take(T0 + seconds(1)))
    for snapshot in snapshots[2:]:
        tracker.observe(snapshot)
    saved = tracker.checkpoint()
    assert len(tracker.take(T0 + seconds(5), everything=True)) == 2
    tracker.rollback(saved)  # the write failed
    assert tracker.take(T0 + seconds(5)) == []  # not due yet...
    assert len(tracker.take(T0 + seconds(5), everything=True)) == 2  # ...but not lost


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


def stored(**filters) -> dict[int, tuple]:
    """pid -> (samples, last_seen, open) of the stored sessions."""
    rows = ProcessSession.objects.filter(**filters)
    return {r.pid: (r.samples, r.last_seen, r.open) for r in rows}


def flush_ticks(store: SnapshotStore, snapshots) -> int:
    """Queue ``snapshots``, flush once; the number of session rows written."""
    for snapshot in snapshots:
        store.add(snapshot)
    result = store.flush()
    assert result.error is None
    return result.sessions


@pytest.mark.django_db
def test_it_updates_the_same_open_session_rows_every_refresh_interval():
    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=10)
    snapshots = ticks(replay_sampler("load"), 14)
    assert flush_ticks(store, snapshots[:4]) == 2  # T0..T3: new, written at once
    first = {447: (2, T0 + seconds(2), True), 448: (2, T0 + seconds(2), True)}
    assert stored() == first
    assert flush_ticks(store, snapshots[4:8]) == 0  # T4..T7: 4 s since: not rewritten
    assert stored() == first
    assert flush_ticks(store, snapshots[8:]) == 2  # T8..T13: 10 s since: rewritten
    assert ProcessSession.objects.count() == 2
    assert stored() == {447: (7, T0 + seconds(12), True), 448: (7, T0 + seconds(12), True)}
    mean = ProcessSession.objects.get(pid=447).mean_sm_utilization
    assert mean == pytest.approx(100.0)


@pytest.mark.django_db
def test_it_writes_open_sessions_anew_when_their_rows_are_gone(caplog):
    # the database was emptied (or dropped and migrated again) under a running worker
    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=10)
    snapshots = ticks(replay_sampler("load"), 14)
    assert flush_ticks(store, snapshots[:4]) == 2
    ProcessSession.objects.all().delete()
    assert flush_ticks(store, snapshots[4:]) == 2  # the refresh at T13 finds no rows
    assert stored() == {447: (7, T0 + seconds(12), True), 448: (7, T0 + seconds(12), True)}
    assert set(ProcessSession.objects.values_list("first_seen", flat=True)) == {T0}
    assert "had lost their rows" in caplog.text


@pytest.mark.django_db
def test_it_writes_a_new_session_at_once_between_refreshes():
    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=10)
    assert flush_ticks(store, ticks(replay_sampler("idle"), 4)) == 0  # a refresh at T3
    started = T0 + seconds(4)
    assert flush_ticks(store, ticks(replay_sampler("load"), 4, start=started)) == 2
    assert stored() == {447: (2, T0 + seconds(6), True), 448: (2, T0 + seconds(6), True)}
    assert set(ProcessSession.objects.values_list("first_seen", flat=True)) == {started}


@pytest.mark.django_db
def test_it_writes_an_ended_session_at_once_between_refreshes():
    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=10)
    snapshots = load_then_idle(4, 8)
    assert flush_ticks(store, snapshots[:4]) == 2  # refreshed at T3
    assert flush_ticks(store, snapshots[4:]) == 2  # up to T11: ended, 8 s after the refresh
    assert stored() == {447: (2, T0 + seconds(2), False), 448: (2, T0 + seconds(2), False)}
    t = T0 + seconds(5)
    assert not ProcessSession.objects.filter(first_seen__lte=t, last_seen__gte=t).exists()


@pytest.mark.django_db
def test_it_writes_every_open_session_when_the_worker_stops():
    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=3600)
    snapshots = ticks(replay_sampler("load"), 8)
    flush_ticks(store, snapshots[:4])
    assert flush_ticks(store, snapshots[4:7]) == 0
    store.stopping()
    result = store.flush()  # nothing queued but the sessions' news
    assert (result.error, result.written_snapshots, result.sessions) == (None, 0, 2)
    assert stored() == {447: (4, T0 + seconds(6), True), 448: (4, T0 + seconds(6), True)}
    assert flush_ticks(store, snapshots[7:]) == 0  # T7 repeats T6's list: no news
    assert store.flush().sessions == 0  # and nothing left to write


def fail_the_next_session_update(monkeypatch) -> None:
    """The connection dies as the flush rewrites the open sessions (then the database is back)."""
    real_update = writer.update_sessions

    def connection_lost(*args, **kwargs):
        monkeypatch.setattr(writer, "update_sessions", real_update)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(writer, "update_sessions", connection_lost)


@pytest.mark.django_db
def test_a_failed_flush_keeps_the_refresh_it_was_to_write(monkeypatch):
    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=10)
    snapshots = ticks(replay_sampler("load"), 14)
    flush_ticks(store, snapshots[:4])
    for snapshot in snapshots[4:]:  # up to T13: a refresh is due
        store.add(snapshot)
    fail_the_next_session_update(monkeypatch)
    failed = store.flush()
    assert failed.error and failed.pending == 10
    assert stored() == {447: (2, T0 + seconds(2), True), 448: (2, T0 + seconds(2), True)}
    result = store.flush()  # the same batch again: the refresh is still due, counted once
    assert (result.error, result.written_snapshots, result.sessions) == (None, 10, 2)
    assert stored() == {447: (7, T0 + seconds(12), True), 448: (7, T0 + seconds(12), True)}


@pytest.mark.django_db
def test_a_failed_flush_at_stop_keeps_the_news_of_earlier_flushes(monkeypatch):
    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=10)
    snapshots = ticks(replay_sampler("load"), 8)
    flush_ticks(store, snapshots[:4])
    assert flush_ticks(store, snapshots[4:]) == 0  # news, not due: kept for later
    store.stopping()
    fail_the_next_session_update(monkeypatch)
    assert store.flush().error  # no snapshot in it: only the sessions' news, lost if not kept
    result = store.flush()
    assert (result.error, result.sessions) == (None, 2)
    assert stored() == {447: (4, T0 + seconds(6), True), 448: (4, T0 + seconds(6), True)}


def catch_up(snapshots, refresh_s: float) -> tuple[list[tuple], list[tuple]]:
    """Sessions after writing ``snapshots`` as a backlog (7 a flush, as after an outage), then
    after the stop; the rows are removed after, for the next run to start afresh."""

    def rows():
        return sorted(
            ProcessSession.objects.values_list(
                "pid",
                "first_seen",
                "last_seen",
                "open",
                "samples",
                "peak_memory_mib",
                "mean_memory_mib",
                "mean_sm_utilization",
            )
        )

    store = SnapshotStore(HOST, session_grace_s=5, session_refresh_s=refresh_s)
    for snapshot in snapshots:
        store.add(snapshot)
    while store.pending:
        assert store.flush(max_snapshots=7).error is None
    caught_up = rows()
    store.stopping()
    assert store.flush().error is None
    stopped = rows()
    for model in (ProcessSession, GpuSample, HostSample):
        model.objects.all().delete()
    return caught_up, stopped


@pytest.mark.django_db
def test_a_backlog_gives_the_same_sessions_whatever_the_refresh_interval():
    snapshots = [
        *load_then_idle(30, 10),  # two sessions, ended at T0+28
        *ticks(replay_sampler("load"), 21, start=T0 + seconds(40)),  # two more, still open
    ]
    every_flush, every_flush_stopped = catch_up(snapshots, refresh_s=0)
    every_10s, every_10s_stopped = catch_up(snapshots, refresh_s=10)
    assert len(every_flush) == 4
    assert every_10s_stopped == every_10s == every_flush == every_flush_stopped


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
