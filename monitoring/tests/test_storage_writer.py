"""Batched writes of real replayed snapshots, on SQLite and PostgreSQL; a real outage on
PostgreSQL (the fault test stops and starts the server: a few seconds)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitoring.models import Alert, Event, Gpu, GpuSample, Host, HostSample, ProcessSession
from monitoring.records import AlertRecord, EventKind, EventRecord
from monitoring.storage.alert_rows import STALE_ALERT_REASON
from monitoring.storage.writer import SnapshotStore
from monitoring.tests import pg_control
from monitoring.tests.helpers import HOST, T0, multi_gpu_dir, replay_sampler, ticks

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"

pytestmark = pytest.mark.django_db


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def store_with(snapshots, **kwargs) -> SnapshotStore:
    store = SnapshotStore(HOST, **kwargs)
    for snapshot in snapshots:
        store.add(snapshot)
    return store


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (run with DB=postgres, as scripts/test does)")


def test_it_writes_a_batch_with_the_captured_values():
    snapshots = ticks(replay_sampler("load"), 3)
    store = store_with(snapshots)
    assert store.pending == 3

    result = store.flush()

    assert (result.error, result.written_snapshots, result.pending, result.dropped) == (
        None,
        3,
        0,
        0,
    )
    assert (result.gpu_rows, result.host_rows) == (3, 3)
    rows = list(GpuSample.objects.filter(gpu__uuid=UUID).order_by("time"))
    assert [r.time for r in rows] == [T0, T0 + seconds(1), T0 + seconds(2)]
    first = rows[0]
    assert (first.utilization, first.temperature, first.memory_used_mib) == (100, 69, 4734)
    assert first.memory_utilization == 33
    assert first.power_w == pytest.approx(696.797)
    assert first.sm_clock == 1350
    assert first.fan_speed is None  # a passively cooled board: missing, not 0
    hosts = list(HostSample.objects.filter(host__name=HOST).order_by("time"))
    assert [h.cpu_percent for h in hosts] == [s.system.cpu_usage for s in snapshots]
    assert hosts[0].ram_percent == pytest.approx(snapshots[0].system.memory_usage)
    assert hosts[2].load_1 == pytest.approx(snapshots[2].system.load_average[0])

    host = Host.objects.get(name=HOST)
    info = snapshots[-1].host
    assert (host.os, host.kernel, host.cores) == (info.os, info.kernel, info.cores)
    assert (host.driver_version, host.cuda_version, host.gpu_source) == (
        "580.159.04",
        "13.0",
        "replay",
    )
    assert host.last_seen == T0 + seconds(2)
    gpu = Gpu.objects.get(uuid=UUID)
    assert (gpu.host_id, gpu.index, gpu.name, gpu.pci_bus_id) == (
        host.pk,
        0,
        "NVIDIA H100 80GB HBM3",
        "00000000:00:06.0",
    )
    assert (gpu.memory_total_mib, gpu.power_limit_w, gpu.state) == (81559, 700.0, "ok")
    assert gpu.last_seen == T0 + seconds(2)


def test_it_does_nothing_when_nothing_is_queued(django_assert_num_queries):
    store = SnapshotStore(HOST)
    with django_assert_num_queries(0):
        result = store.flush()
    assert (result.written_snapshots, result.error) == (0, None)


def test_it_keeps_gpus_by_uuid_when_their_index_changes(tmp_path):
    sampler = replay_sampler("load", directory=multi_gpu_dir(tmp_path, 2))
    before = ticks(sampler, 2)
    store = store_with(before)
    store.flush()
    uuids = [g.uuid for g in before[0].gpus]
    assert dict(Gpu.objects.values_list("uuid", "index")) == {uuids[0]: 0, uuids[1]: 1}

    def reorder(snapshots, order):
        for snapshot in snapshots:
            by_uuid = {g.uuid: g for g in snapshot.gpus}
            snapshot.gpus = [by_uuid[uuid] for uuid in order]
            for index, gpu in enumerate(snapshot.gpus):
                gpu.index = index
        return snapshots

    # the same worker sees them reordered (a driver reload), then a new worker after a reboot
    for snapshot in reorder(ticks(sampler, 2, start=T0 + seconds(60)), uuids[::-1]):
        store.add(snapshot)
    assert store.flush().error is None
    assert dict(Gpu.objects.values_list("uuid", "index")) == {uuids[0]: 1, uuids[1]: 0}
    restarted = store_with(reorder(ticks(sampler, 2, start=T0 + seconds(120)), uuids))
    assert restarted.flush().error is None

    assert Gpu.objects.count() == 2
    assert dict(Gpu.objects.values_list("uuid", "index")) == {uuids[0]: 0, uuids[1]: 1}
    for uuid in uuids:
        assert GpuSample.objects.filter(gpu__uuid=uuid).count() == 6
        assert GpuSample.objects.filter(gpu__uuid=uuid, time=T0 + seconds(60)).count() == 1


def test_it_does_not_select_gpus_again_in_steady_state():
    snapshots = ticks(replay_sampler("load"), 6)
    store = store_with(snapshots[:3])
    store.flush()
    for snapshot in snapshots[3:]:
        store.add(snapshot)
    with CaptureQueriesContext(connection) as queries:
        assert store.flush().error is None
    sql = [q["sql"] for q in queries.captured_queries]
    assert not [s for s in sql if s.startswith("SELECT") and '"monitoring_gpu"' in s], sql
    assert not [s for s in sql if s.startswith("SELECT") and '"monitoring_host"' in s], sql
    assert len(sql) <= 10, sql
    assert GpuSample.objects.count() == 6


def test_it_records_a_lost_gpu_without_inventing_samples():
    sampler = replay_sampler("load")
    store = store_with(ticks(sampler, 2))
    store.flush()
    sampler.gpu_source._nvml[0].fail(0)
    store.add(sampler.sample(now=T0 + seconds(2)))
    assert store.flush().error is None
    gpu = Gpu.objects.get(uuid=UUID)
    assert gpu.state == Gpu.STATE_LOST
    assert (gpu.name, gpu.memory_total_mib) == ("NVIDIA H100 80GB HBM3", 81559)  # kept
    assert gpu.last_seen == T0 + seconds(2)
    assert GpuSample.objects.count() == 2
    assert HostSample.objects.count() == 3  # the host goes on
    store.add(replay_sampler("load").sample(now=T0 + seconds(30)))  # found again
    store.flush()
    assert Gpu.objects.get(uuid=UUID).state == Gpu.STATE_OK


def test_it_keys_a_gpu_without_uuid_by_host_and_bus_id_and_says_so(caplog):
    # (real outputs without a UUID: test_gpus_without_uuid; this one keeps the H100's bus id)
    snapshots = ticks(replay_sampler("load"), 2)
    for snapshot in snapshots:
        snapshot.gpus[0].uuid = None
    store = store_with(snapshots)
    with caplog.at_level("INFO"):
        result = store.flush()
    assert (result.error, result.gpu_rows, result.host_rows) == (None, 2, 2)
    (gpu,) = Gpu.objects.all()
    assert gpu.uuid == f"{HOST}/pci:{snapshots[0].gpus[0].pci_bus_id}"
    assert ProcessSession.objects.filter(gpu=gpu).count() == 2
    assert f"reports no UUID: its history is kept under {gpu.uuid}" in caplog.text


def test_it_drops_the_oldest_snapshots_when_the_buffer_overflows():
    snapshots = ticks(replay_sampler("load"), 15)
    store = store_with(snapshots, buffer_size=10)
    assert (store.pending, store.dropped_total) == (10, 5)
    result = store.flush()
    assert (result.written_snapshots, result.dropped) == (10, 5)
    times = list(HostSample.objects.order_by("time").values_list("time", flat=True))
    assert times == [s.timestamp for s in snapshots[5:]]
    assert store.flush().dropped == 0  # reported once


def test_it_writes_a_backlog_in_order_in_chunks():
    snapshots = ticks(replay_sampler("load"), 25)
    store = store_with(snapshots)
    results = [store.flush(max_snapshots=10) for _ in range(3)]
    assert [(r.written_snapshots, r.pending) for r in results] == [(10, 15), (10, 5), (5, 0)]
    times = list(GpuSample.objects.order_by("id").values_list("time", flat=True))
    assert times == [s.timestamp for s in snapshots]


def test_it_writes_events_with_their_host_and_gpu():
    store = store_with(ticks(replay_sampler("load"), 1))
    store.add_event(EventRecord(T0, EventKind.WORKER_STARTED, "collect started", data={"pid": 12}))
    store.add_event(
        EventRecord(
            T0,
            EventKind.GPU_ADDED,
            "GPU 0 appeared",
            gpu_uuid=UUID,
            data={"at": T0, "x": float("nan")},
        )
    )
    store.add_event(EventRecord(T0, EventKind.GPU_LOST, "unknown GPU", gpu_uuid="GPU-nope"))
    assert store.pending_records == 3
    result = store.flush()
    assert (result.error, result.events) == (None, 3)
    events = {e.kind: e for e in Event.objects.select_related("host", "gpu")}
    assert events[EventKind.WORKER_STARTED].host.name == HOST
    assert events[EventKind.WORKER_STARTED].data == {"pid": 12}
    assert events[EventKind.GPU_ADDED].gpu.uuid == UUID
    assert events[EventKind.GPU_ADDED].data["at"] == "2026-01-05T03:00:00+00:00"
    assert events[EventKind.GPU_ADDED].data["x"] is None  # NaN: not JSON
    assert events[EventKind.GPU_LOST].gpu is None
    assert events[EventKind.GPU_LOST].data["gpu_uuid"] == "GPU-nope"


def test_it_writes_events_before_any_snapshot_and_marks_removed_gpus_gone():
    store = store_with(ticks(replay_sampler("load"), 1))
    store.flush()
    restarted = SnapshotStore(HOST)
    restarted.add_event(EventRecord(T0 + seconds(5), EventKind.GPU_REMOVED, "gone", gpu_uuid=UUID))
    assert restarted.flush().error is None
    assert Gpu.objects.get(uuid=UUID).state == Gpu.STATE_GONE
    assert Event.objects.get(kind=EventKind.GPU_REMOVED).gpu.uuid == UUID


def _alert(**changes) -> AlertRecord:
    fields = {
        "key": "threshold:temperature:" + UUID,
        "rule": "threshold",
        "metric": "temperature",
        "severity": "warning",
        "started_at": T0,
        "message": "GPU 0 at 76 °C",
        "value": 76.0,
        "peak_value": 76.0,
        "gpu_uuid": UUID,
    }
    return AlertRecord(**{**fields, **changes})


def test_it_updates_the_same_alert_row_as_the_alert_changes():
    store = store_with(ticks(replay_sampler("load"), 1))
    store.add_alert(_alert())
    store.flush()
    store.add_alert(_alert(severity="critical", value=86.0, peak_value=86.0))
    store.add_alert(_alert(severity="critical", value=87.0, peak_value=87.0))  # coalesced
    assert store.pending_records == 1
    store.flush()
    alert = Alert.objects.get()
    assert (alert.severity, alert.value, alert.peak_value, alert.active) == (
        "critical",
        87.0,
        87.0,
        True,
    )
    assert (alert.gpu.uuid, alert.host.name, alert.key) == (UUID, HOST, _alert().key)

    restarted = SnapshotStore(HOST)  # a worker restart while the alert is open
    restarted.add_alert(_alert(severity="warning", value=74.0, ended_at=T0 + seconds(90)))
    restarted.flush()
    alert = Alert.objects.get()
    assert alert.ended_at == T0 + seconds(90)
    assert not alert.active

    restarted.add_alert(_alert(started_at=T0 + seconds(600)))  # the same key, a new occurrence
    restarted.flush()
    assert Alert.objects.count() == 2
    assert Alert.objects.filter(ended_at__isnull=True).get().started_at == T0 + seconds(600)


def test_alerts_a_killed_worker_left_open_are_closed_at_its_last_sample_on_first_write(caplog):
    killed = store_with(ticks(replay_sampler("load"), 3))  # samples up to T0 + 2 s
    killed.add_alert(_alert())
    killed.add_alert(_alert(key="threshold:2:host", gpu_uuid=None, started_at=T0 + seconds(1)))
    assert killed.flush().error is None
    assert Alert.objects.filter(ended_at__isnull=True).count() == 2
    # killed -9: nothing cleared them. The next worker's first write closes them …
    restarted = store_with(ticks(replay_sampler("load"), 2, start=T0 + seconds(600)))
    restarted.add_alert(_alert(started_at=T0 + seconds(601)))  # … before what holds opens anew
    assert restarted.flush().error is None

    old = Alert.objects.filter(started_at__lt=T0 + seconds(600)).order_by("started_at")
    assert [a.ended_at for a in old] == [T0 + seconds(2)] * 2
    assert all(a.message.endswith(f"({STALE_ALERT_REASON}; last sample 2026-01-05 03:00:02 UTC)")
               for a in old)  # fmt: skip
    assert old[0].message.startswith("GPU 0 at 76 °C")
    again = Alert.objects.get(ended_at__isnull=True)  # the same key, its own row
    assert (again.key, again.started_at) == (_alert().key, T0 + seconds(601))
    assert "closed 2 alert(s) of storage-test left open by the previous worker" in caplog.text
    # later writes leave the alerts of this worker alone
    restarted.add(ticks(replay_sampler("load"), 1, start=T0 + seconds(700))[0])
    assert restarted.flush().error is None
    assert Alert.objects.get(ended_at__isnull=True).pk == again.pk


def test_a_stale_alert_with_no_sample_known_is_closed_now_and_never_before_it_started():
    from django.utils import timezone

    host = Host.objects.create(name=HOST)
    Alert.objects.create(host=host, key="threshold:1:host", severity="warning", started_at=T0,
                         message="load high")  # fmt: skip
    future = timezone.now() + seconds(3600)  # a clock that was ahead
    Alert.objects.create(host=host, key="threshold:2:host", severity="warning",
                         started_at=future, message="later")  # fmt: skip
    before = timezone.now()
    store = SnapshotStore(HOST)
    store.add_event(EventRecord(T0, EventKind.WORKER_STARTED, "started"))  # no samples at all
    assert store.flush().error is None
    first, second = Alert.objects.order_by("started_at")
    assert before <= first.ended_at <= timezone.now()
    assert first.message == f"load high ({STALE_ALERT_REASON}; no sample known)"
    assert second.ended_at == future


def test_a_first_write_that_fails_closes_nothing_and_the_next_one_does(monkeypatch):
    killed = store_with(ticks(replay_sampler("load"), 3))
    killed.add_alert(_alert())
    assert killed.flush().error is None
    restarted = store_with(ticks(replay_sampler("load"), 1, start=T0 + seconds(600)))

    def broken(*args):
        raise ValueError("rejected")

    monkeypatch.setattr(restarted._registry, "gpu_ids", broken)  # after the alerts were closed
    assert restarted.flush().error is not None
    assert Alert.objects.get().ended_at is None  # rolled back with the batch
    monkeypatch.undo()
    assert restarted.flush().error is None
    assert Alert.objects.get().ended_at == T0 + seconds(2)


def test_it_keeps_an_alert_whose_threshold_was_deleted():
    store = store_with(ticks(replay_sampler("load"), 1))
    store.add_alert(_alert(threshold_id=987654))
    assert store.flush().error is None
    assert Alert.objects.get().threshold is None


def test_it_drops_a_batch_the_database_keeps_rejecting_and_goes_on():
    snapshots = ticks(replay_sampler("load"), 3, process_every=1)
    for proc in snapshots[0].gpus[0].processes:
        proc.pid = -1  # no such pid: the session row violates its CHECK constraint
    store = store_with(snapshots)
    errors = [store.flush().error for _ in range(3)]
    assert all(errors), errors  # never raised
    assert store.last_error
    assert store.pending == 2  # the oldest was given up on after the third failure
    assert store.dropped_total == 1
    result = store.flush()
    assert (result.error, result.written_snapshots) == (None, 2)
    assert store.last_error is None
    assert HostSample.objects.count() == 2


@pytest.mark.postgres
def test_it_writes_samples_with_copy_on_postgresql():
    postgres_only()
    snapshots = ticks(replay_sampler("load"), 4)
    store = store_with(snapshots[:2])
    store.flush()  # host, GPU and sessions created
    for snapshot in snapshots[2:]:
        store.add(snapshot)
    with CaptureQueriesContext(connection) as copied:
        assert store.flush().error is None
    inserts = [q["sql"] for q in copied.captured_queries if q["sql"].startswith("INSERT")]
    assert not [s for s in inserts if "sample" in s], inserts  # COPY is no INSERT
    assert GpuSample.objects.count() == 4
    assert HostSample.objects.count() == 4
    assert list(GpuSample.objects.values_list("temperature", flat=True).distinct()) == [69]

    bulk = SnapshotStore(HOST, use_copy=False)
    bulk.add(replay_sampler("load").sample(now=T0 + seconds(10)))
    with CaptureQueriesContext(connection) as inserted:
        assert bulk.flush().error is None
    assert any(
        q["sql"].startswith('INSERT INTO "monitoring_gpusample"') for q in inserted.captured_queries
    )
    assert GpuSample.objects.count() == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_keeps_everything_through_a_real_postgresql_outage():
    """Stops the real server for a few flushes, then starts it again (takes a few seconds).
    The failed flushes were to refresh the open sessions (10 s since): still done after."""
    postgres_only()
    pg_control.skip_unless_available()
    sampler = replay_sampler("load")
    snapshots = ticks(sampler, 16)
    store = store_with(snapshots[:4])
    assert store.flush().written_snapshots == 4

    with pg_control.outage():
        for snapshot in snapshots[4:14]:  # up to T13: a session refresh due
            store.add(snapshot)
        store.add_event(EventRecord(T0 + seconds(5), EventKind.SOURCE_ERROR, "during the outage"))
        store.add_alert(_alert(started_at=T0 + seconds(6)))
        failures = [store.flush() for _ in range(3)]
        assert all(f.error and f.written_snapshots == 0 for f in failures), failures
        assert failures[-1].pending == 10
        assert store.last_error
        store.add(snapshots[14])  # sampling goes on meanwhile

    store.add(snapshots[15])
    result = store.flush(max_snapshots=5)
    assert (result.error, result.written_snapshots, result.pending) == (None, 5, 10 + 2 - 5)
    result = store.flush()
    assert (result.error, result.written_snapshots, result.pending) == (None, 7, 0)
    assert store.last_error is None and store.dropped_total == 0

    times = list(GpuSample.objects.order_by("time").values_list("time", flat=True))
    assert times == [s.timestamp for s in snapshots]  # every sample, exactly once
    assert HostSample.objects.count() == 16
    assert Gpu.objects.count() == 1 and Host.objects.count() == 1
    assert Event.objects.filter(kind=EventKind.SOURCE_ERROR).count() == 1
    assert Alert.objects.count() == 1
    assert ProcessSession.objects.count() == 2
    # T0, T2, ..., T14, each once, refreshed by the last flush (T15: 12 s after the last)
    assert set(ProcessSession.objects.values_list("samples", flat=True)) == {8}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_reconnects_at_once_after_a_server_restart_between_flushes():
    """The server restarts while the worker waits: its open connection is dead, yet the next
    flush succeeds (the health check between batches replaces it). Takes a second or two."""
    postgres_only()
    pg_control.skip_unless_available()
    snapshots = ticks(replay_sampler("load"), 4)
    store = store_with(snapshots[:2])
    assert store.flush().error is None
    with pg_control.outage():
        pass
    for snapshot in snapshots[2:]:
        store.add(snapshot)
    result = store.flush()
    assert (result.error, result.written_snapshots) == (None, 2)
    assert GpuSample.objects.count() == 4


def test_it_refreshes_last_seen_at_most_every_ten_seconds():
    sampler = replay_sampler("load")
    store = store_with(ticks(sampler, 2))
    store.flush()
    assert Gpu.objects.get().last_seen == T0 + seconds(1)
    store.add(sampler.sample(now=T0 + seconds(5)))
    with CaptureQueriesContext(connection) as queries:
        store.flush()
    touched = [q["sql"] for q in queries.captured_queries if "last_seen" in q["sql"]]
    assert not [sql for sql in touched if '"monitoring_gpu"' in sql or '"monitoring_host"' in sql]
    assert Gpu.objects.get().last_seen == T0 + seconds(1)
    store.add(sampler.sample(now=T0 + seconds(11)))
    store.flush()
    assert Gpu.objects.get().last_seen == T0 + seconds(11)
    assert Host.objects.get().last_seen == T0 + seconds(11)


def test_it_writes_both_occurrences_of_an_alert_that_cleared_and_opened_between_flushes():
    store = store_with(ticks(replay_sampler("load"), 1))
    store.add_alert(_alert())
    store.flush()
    store.add_alert(_alert(ended_at=T0 + seconds(40)))
    store.add_alert(_alert(started_at=T0 + seconds(50)))
    store.add_alert(_alert(started_at=T0 + seconds(50), severity="critical"))
    assert store.pending_records == 2
    assert store.flush().error is None
    rows = list(Alert.objects.order_by("started_at").values_list("ended_at", "severity"))
    assert rows == [(T0 + seconds(40), "warning"), (None, "critical")]
