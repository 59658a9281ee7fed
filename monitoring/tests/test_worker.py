"""The collect worker, one unit of work at a time: real replayed samples, the real store on the
test database, the real in-memory channel layer; then the whole worker as a real process
(SIGTERM) and the one-worker-per-host lock on SQLite and PostgreSQL. About 15 s."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from channels.layers import InMemoryChannelLayer
from django.conf import settings
from django.db import connection

from monitoring.models import Event, GpuSample, Host, HostSample, ProcessSession
from monitoring.records import AlertRecord, EventKind
from monitoring.storage.latest import latest_snapshots
from monitoring.storage.writer import SnapshotStore
from monitoring.telemetry.host import HostSampler
from monitoring.telemetry.nvml_capture import CapturedNvml, load_capture, multi_gpu
from monitoring.telemetry.nvml_source import NvmlSource
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.schema import STATUS_NO_GPU, DriverInfo
from monitoring.telemetry.select import Opened
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import (
    GROUP,
    ROOT,
    another_board_dir,
    collect_env,
    receive,
    replay_sampler,
    sqlite_count,
    start_collect,
    subscribe,
    wait_for,
    wait_until_sampling,
)
from monitoring.worker.lock import LockHeld, WorkerLock, lock_key
from monitoring.worker.loop import CollectWorker, WorkerConfig
from monitoring.worker.publish import SnapshotPublisher
from monitoring.worker.tiers import Tiers

HOST = "worker-test"
UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"


def config(**overrides) -> WorkerConfig:
    return WorkerConfig(host_name=overrides.pop("host_name", HOST), **overrides)


def nvml_sampler(nvml: CapturedNvml) -> Sampler:
    """A sampler over the real NVML source answering from ``nvml`` (which tests can break)."""
    return Sampler(
        NvmlSource(nvml),
        host_info=replay_sampler().host_info,
        host_sampler=HostSampler(),
        no_source=DriverInfo("nvml", STATUS_NO_GPU),
    )


class Evaluator:
    """An evaluator with the interface the worker uses; records what it was asked."""

    def __init__(self, rules) -> None:
        self.rules = rules
        self.active: list[AlertRecord] = []
        self.seen = 0

    def update_rules(self, rules) -> None:
        self.rules = rules

    def evaluate(self, snapshot, now) -> list[AlertRecord]:
        self.seen += 1
        if self.seen != 1:
            return []
        record = AlertRecord(
            key=f"threshold:test:{snapshot.gpus[0].uuid}",
            rule="threshold",
            metric="temperature",
            severity="warning",
            started_at=now,
            message=f"GPU 0 at {snapshot.gpus[0].temperature} °C (rules {self.rules})",
            value=float(snapshot.gpus[0].temperature),
            gpu_uuid=snapshot.gpus[0].uuid,
        )
        self.active = [record]
        return [record]


@pytest.mark.django_db
def test_the_real_collaborators_offer_what_the_worker_relies_on():
    from monitoring.alerting.evaluator import AlertEvaluator
    from monitoring.alerting.rules import RuleSet
    from monitoring.worker import collaborators

    store = SnapshotStore(HOST)
    publisher = SnapshotPublisher(HOST, group=GROUP, layer=InMemoryChannelLayer())
    try:
        assert isinstance(replay_sampler(hostname=HOST), collaborators.SnapshotSampler)
        assert isinstance(store, collaborators.Store)
        assert isinstance(store.flush(), collaborators.WriteResult)
        assert isinstance(publisher, collaborators.Publisher)
        assert isinstance(WorkerLock(HOST), collaborators.HostLock)
        assert isinstance(AlertEvaluator(RuleSet()), collaborators.Evaluator)
    finally:
        publisher.close()


@pytest.mark.django_db
def test_the_log_says_when_an_alert_opens_escalates_and_clears_not_each_new_peak(caplog):
    from datetime import timedelta

    from monitoring.alerting.evaluator import AlertEvaluator
    from monitoring.alerting.rules import RuleSet, ThresholdRule

    rule = ThresholdRule(
        id=1, name="hot", metric="temperature", scope="all_gpus", host_name=None,
        gpu_uuid=None, warning=60.0, critical=80.0, duration_s=0.0, hysteresis=0.0,
    )  # fmt: skip
    worker = CollectWorker(replay_sampler(hostname=HOST), SnapshotStore(HOST), config())
    worker.evaluator = AlertEvaluator(RuleSet(thresholds=[rule]), clear_after_s=0.0)
    snapshot = worker.sampler.sample()
    # the H100's 69 °C, rising a degree a minute (a new peak re-sent every 30 s), then 85 °C,
    # then 40 °C
    temperatures = [69 + n for n in range(5)] + [85, 40]
    with caplog.at_level(logging.WARNING, logger="monitoring.worker.loop"):
        for minute, temperature in enumerate(temperatures):
            snapshot.timestamp += timedelta(minutes=1) if minute else timedelta(0)
            snapshot.gpus[0].temperature = temperature
            worker.evaluate(snapshot)
    said = [r.getMessage().split(":")[0] for r in caplog.records if "alert" in r.getMessage()]
    assert said == ["alert open (warning)", "alert now critical", "alert cleared"]


@pytest.mark.django_db
def test_a_tick_stores_the_snapshot_and_publishes_it_to_the_group():
    layer = InMemoryChannelLayer()
    channel = subscribe(layer)
    publisher = SnapshotPublisher(HOST, group=GROUP, layer=layer)
    worker = CollectWorker(
        replay_sampler(hostname=HOST), SnapshotStore(HOST), config(), publisher=publisher
    )
    try:
        snapshot = worker.tick(Tiers(processes=True, slow=True))
        publisher.wait(2)
        message = receive(layer, channel)
    finally:
        publisher.close()
    assert message["host"] == HOST
    assert message["snapshot"]["gpus"][0]["uuid"] == UUID
    assert message["snapshot"]["timestamp"] == snapshot.timestamp.isoformat().replace("+00:00", "Z")
    assert worker.store.pending == 1

    result = worker.flush()

    assert (result.error, result.written_snapshots) == (None, 1)
    assert HostSample.objects.filter(host__name=HOST, time=snapshot.timestamp).count() == 1
    row = GpuSample.objects.get(gpu__uuid=UUID)
    assert (row.utilization, row.temperature) == (100, 69)


@pytest.mark.django_db
def test_ticks_between_flushes_are_written_in_one_batch():
    worker = CollectWorker(replay_sampler(hostname=HOST), SnapshotStore(HOST), config())
    for n in range(5):
        worker.tick(worker.schedule.tiers(n))
    result = worker.flush()
    assert (result.written_snapshots, result.host_rows, result.gpu_rows) == (5, 5, 5)
    assert worker.ticks == 5 and worker.failed_ticks == 0


@pytest.mark.django_db
def test_each_flush_keeps_the_newest_snapshot_of_the_host_with_the_workers_counters():
    worker = CollectWorker(replay_sampler(hostname=HOST), SnapshotStore(HOST), config())
    for n in range(3):
        worker.tick(worker.schedule.tiers(n))
    worker.flush()
    worker.tick(worker.schedule.tiers(3))
    worker.flush()
    (latest,) = latest_snapshots(HOST)
    assert latest.time == worker.last_snapshot.timestamp
    assert latest.data["gpus"][0]["uuid"] == UUID
    assert latest.data["gpus"][0]["utilization"] == 100
    assert latest.worker["ticks"] == 4
    assert latest.worker["bufferDepth"] == 1  # the fourth snapshot was queued at that flush
    assert latest.worker["bufferCapacity"] == worker.store_capacity


@pytest.mark.django_db
def test_the_final_flush_writes_the_latest_figures_of_the_open_process_sessions():
    store = SnapshotStore(HOST, session_refresh_s=3600)
    worker = CollectWorker(replay_sampler(hostname=HOST), store, config())
    worker.tick(worker.schedule.tiers(0))
    worker.flush()  # new sessions: written at once
    for n in range(1, 5):
        worker.tick(worker.schedule.tiers(n))  # the process list is read again at 2 and 4
    worker.flush()  # their figures moved: rewritten only at the refresh (an hour here)...
    assert set(ProcessSession.objects.values_list("samples", flat=True)) == {1}
    worker._final_flush()  # ...or when the worker stops
    rows = ProcessSession.objects.all()
    assert len(rows) == 2 and {(r.samples, r.open) for r in rows} == {(3, True)}
    assert {r.last_seen for r in rows} == {s.last_seen for s in store.open_sessions}


@pytest.mark.django_db
def test_a_lost_gpu_is_an_event_in_the_database_and_sampling_goes_on():
    nvml = CapturedNvml(multi_gpu(load_capture(H100, "load"), 2))
    worker = CollectWorker(nvml_sampler(nvml), SnapshotStore(HOST), config())
    worker.tick()
    nvml.fail(1)
    lost = worker.tick()
    worker.tick()
    worker.flush()
    assert [g.state for g in lost.gpus] == ["ok", "lost"]
    event = Event.objects.get(kind=EventKind.GPU_LOST)
    assert event.host.name == HOST
    assert event.gpu.uuid == lost.gpus[1].uuid
    assert "GpuIsLost" in event.message
    # the GPU that still answers keeps its samples
    assert GpuSample.objects.filter(gpu__uuid=lost.gpus[0].uuid).count() == 3
    assert GpuSample.objects.filter(gpu__uuid=lost.gpus[1].uuid).count() == 1


@pytest.mark.django_db
def test_an_exception_in_a_tick_is_logged_and_the_next_tick_runs(caplog):
    sampler = replay_sampler(hostname=HOST)
    worker = CollectWorker(sampler, SnapshotStore(HOST), config())
    host_sampler, sampler.host_sampler = sampler.host_sampler, None  # sample() now raises
    assert worker.tick() is None
    sampler.host_sampler = host_sampler
    assert worker.tick() is not None
    assert (worker.ticks, worker.failed_ticks) == (2, 1)
    assert "tick failed; sampling goes on" in caplog.text


@pytest.mark.django_db
def test_a_full_buffer_drops_the_oldest_and_records_how_many_once_written():
    store = SnapshotStore(HOST, buffer_size=10)
    worker = CollectWorker(replay_sampler(hostname=HOST), store, config())
    assert worker.store_capacity == store.capacity == 10  # what the outage warnings count with
    ticked = [worker.tick(Tiers(processes=False, slow=False)) for _ in range(14)]
    worker.flush()
    worker.flush()  # the samples_dropped event, queued by the first flush
    kept = list(HostSample.objects.filter(host__name=HOST).order_by("time"))
    assert [row.time for row in kept] == [s.timestamp for s in ticked[4:]]  # newest kept
    event = Event.objects.get(kind=EventKind.SAMPLES_DROPPED)
    assert event.data["count"] == 4
    assert event.message.startswith("4 snapshots were dropped")


def gpu_lost_worker():
    """A worker on two replayed H100s with one rule in the database, "GPU lost", wired as
    `collect` wires it (real rules loader and evaluator), publishing to an in-memory layer:
    (worker, its NVML stand-in, the layer, a channel subscribed to the group)."""
    from monitoring.models import Threshold
    from monitoring.worker.setup import alerting_hooks

    Threshold.objects.all().delete()
    Threshold.objects.create(
        name="GPU lost", metric="gpu_lost", scope="all_gpus", duration_s=0, hysteresis=0
    )
    layer = InMemoryChannelLayer()
    channel = subscribe(layer)
    publisher = SnapshotPublisher(HOST, group=GROUP, layer=layer)
    nvml = CapturedNvml(multi_gpu(load_capture(H100, "load"), 2))
    rules_loader, evaluator_factory = alerting_hooks(HOST)
    worker = CollectWorker(
        nvml_sampler(nvml),
        SnapshotStore(HOST),
        config(),
        publisher=publisher,
        rules_loader=rules_loader,
        evaluator_factory=evaluator_factory,
    )
    return worker, nvml, layer, channel


@pytest.mark.django_db
def test_a_lost_gpu_opens_an_alert_that_is_stored_and_published_with_the_snapshot():
    """The real rules from the database and the real evaluator, as `collect` wires them."""
    from monitoring.models import Alert

    worker, nvml, layer, channel = gpu_lost_worker()
    publisher = worker.publisher
    try:
        assert worker.refresh_rules()
        worker.tick()
        publisher.wait(2)
        assert receive(layer, channel)["alerts"] == []
        nvml.fail(1)
        lost = worker.tick()
        publisher.wait(2)
        message = receive(layer, channel)
    finally:
        publisher.close()
    (alert,) = message["alerts"]
    assert (alert["metric"], alert["severity"]) == ("gpu_lost", "critical")
    assert alert["gpuUuid"] == lost.gpus[1].uuid
    assert [e["kind"] for e in message["events"]] == ["gpu_lost"]
    worker.flush()
    row = Alert.objects.get()
    assert (row.host.name, row.gpu.uuid, row.severity) == (HOST, lost.gpus[1].uuid, "critical")
    assert row.ended_at is None


@pytest.mark.django_db
def test_the_message_of_the_tick_an_alert_clears_on_carries_it_ended_as_it_is_stored():
    """The page shows an alert cleared when the worker says so, at the end time it writes."""
    from monitoring.models import Alert, Threshold
    from monitoring.telemetry import serialize

    worker, nvml, layer, channel = gpu_lost_worker()
    publisher = worker.publisher
    try:
        assert worker.refresh_rules()
        nvml.fail(1)
        worker.tick()
        publisher.wait(2)
        (opened,) = receive(layer, channel)["alerts"]
        Threshold.objects.all().delete()  # in admin: its open alert is cleared
        assert worker.refresh_rules()
        back = worker.tick()
        publisher.wait(2)
        (closed,) = receive(layer, channel)["alerts"]
        worker.tick()
        publisher.wait(2)
        assert receive(layer, channel)["alerts"] == []  # said once, on the tick it cleared
    finally:
        publisher.close()
    assert (closed["key"], closed["startedAt"]) == (opened["key"], opened["startedAt"])
    assert closed["endedAt"] == serialize.to_data(back.timestamp)
    worker.flush()
    row = Alert.objects.get()
    assert serialize.to_data(row.ended_at) == closed["endedAt"]


@pytest.mark.django_db
def test_an_alert_a_killed_worker_left_open_is_closed_and_opens_again_from_live_data():
    """The real rules and evaluator: the condition still holds, so the next worker's
    evaluator opens it again as a new occurrence (same key, its own row)."""
    from monitoring.models import Alert, Threshold
    from monitoring.storage.alert_rows import STALE_ALERT_REASON
    from monitoring.worker.setup import alerting_hooks

    Threshold.objects.all().delete()
    Threshold.objects.create(
        name="Hot", metric="temperature", scope="all_gpus", warning=60, duration_s=0, hysteresis=0
    )  # the replayed H100 under load is at 69 °C

    def start_worker() -> CollectWorker:
        rules_loader, evaluator_factory = alerting_hooks(HOST)
        worker = CollectWorker(
            replay_sampler(hostname=HOST),
            SnapshotStore(HOST),
            config(),
            rules_loader=rules_loader,
            evaluator_factory=evaluator_factory,
        )
        assert worker.refresh_rules()
        return worker

    killed = start_worker()
    last_seen = [killed.tick().timestamp for _ in range(2)][-1]
    assert killed.flush().error is None  # then kill -9: nothing clears the alert
    (left_open,) = Alert.objects.filter(ended_at__isnull=True)

    restarted = start_worker()
    now = restarted.tick().timestamp
    assert restarted.flush().error is None

    old, new = Alert.objects.order_by("started_at")
    assert old.pk == left_open.pk
    assert old.ended_at == last_seen
    assert STALE_ALERT_REASON in old.message
    assert (new.key, new.started_at, new.ended_at) == (old.key, now, None)
    assert (new.metric, new.gpu.uuid) == ("temperature", UUID)


@pytest.mark.django_db
def test_a_rules_reload_that_fails_keeps_the_rules_in_force():
    versions = iter(["rules v1"])

    def load():
        return next(versions)  # the second call raises, as a database error would

    worker = CollectWorker(
        replay_sampler(hostname=HOST),
        store=None,
        config=config(),
        rules_loader=load,
        evaluator_factory=Evaluator,
    )
    assert worker.refresh_rules()
    worker.apply_new_rules()
    assert worker.refresh_rules() is False
    worker.apply_new_rules()
    assert worker.evaluator.rules == "rules v1"


@pytest.mark.django_db
def test_maintenance_runs_for_this_host():
    from monitoring.worker.setup import maintenance_hook

    worker = CollectWorker(
        replay_sampler(hostname=HOST),
        SnapshotStore(HOST),
        config(),
        maintenance=maintenance_hook(HOST),
    )
    worker.tick()
    worker.flush()
    result = worker.maintain()
    assert result is not None and result.dry_run is False
    assert Host.objects.filter(name=HOST).exists()


@pytest.mark.django_db
def test_a_driver_reload_reopens_the_source_and_a_new_gpu_is_recorded():
    """The source breaks; after the backoff the worker reopens it and finds two GPUs."""
    now = [1000.0]
    nvml = CapturedNvml(load_capture(H100, "load"))
    two = CapturedNvml(multi_gpu(load_capture(H100, "load"), 2))
    worker = CollectWorker(
        nvml_sampler(nvml),
        SnapshotStore(HOST),
        config(),
        reopen_source=lambda: Opened(NvmlSource(two), DriverInfo("nvml", "ok")),
        monotonic=lambda: now[0],
    )
    worker.tick()
    nvml.fail(0)  # every call fails, as after a driver unload
    worker.tick()  # first sight of trouble: the source gets its own retries first
    now[0] += 5
    first_source = worker.sampler.gpu_source
    worker.tick()
    assert worker.sampler.gpu_source is first_source
    now[0] += 10
    worker.tick()  # backoff over: reopened
    assert worker.sampler.gpu_source is not first_source
    after = worker.tick()
    worker.flush()
    assert len(after.gpus) == 2
    kinds = list(Event.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == [EventKind.GPU_LOST, EventKind.GPU_FOUND, EventKind.GPU_ADDED]


@pytest.mark.django_db
def test_a_periodic_rescan_finds_a_hot_plugged_gpu_and_keeps_a_source_that_works():
    now = [1000.0]
    opened = [
        Opened(None, DriverInfo("nvml", "error", message="NVML could not start")),
        Opened(NvmlSource(CapturedNvml(multi_gpu(load_capture(H100, "load"), 2))), None),
    ]
    worker = CollectWorker(
        nvml_sampler(CapturedNvml(load_capture(H100, "load"))),
        SnapshotStore(HOST),
        config(source_rescan_s=60),
        reopen_source=lambda: opened.pop(0),
        monotonic=lambda: now[0],
    )
    worker.tick()
    now[0] += 61
    worker.tick()  # rescan: nothing opened, the working source stays
    assert len(worker.tick().gpus) == 1
    now[0] += 61
    worker.tick()  # rescan: two GPUs now
    assert len(worker.tick().gpus) == 2
    worker.flush()
    assert list(Event.objects.values_list("kind", flat=True)) == [EventKind.GPU_ADDED]


# --- the whole worker ---------------------------------------------------------------------


def test_sigterm_flushes_every_sample_and_exits_0_on_sqlite(tmp_path):
    db = tmp_path / "collect.sqlite3"
    env = collect_env(
        DB="sqlite",
        DB_NAME=str(db),
        HOOFHEARTED_HOST_NAME="sigterm-box",
        HOOFHEARTED_FLUSH_INTERVAL_MS="60000",  # nothing written before the stop
    )
    worker = start_collect(env, "--interval-ms", "250")
    try:
        started = wait_until_sampling(worker)
        time.sleep(3)
        assert sqlite_count(db, "SELECT COUNT(*) FROM monitoring_hostsample") == 0
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        stderr = started + stderr
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    ticks = int(stderr.split("stopping (SIGTERM) after ")[1].split(" ticks")[0])
    assert ticks >= 8
    assert sqlite_count(db, "SELECT COUNT(*) FROM monitoring_hostsample") == ticks
    assert sqlite_count(db, "SELECT COUNT(*) FROM monitoring_gpusample") == ticks
    kinds = sqlite_count(
        db,
        "SELECT group_concat(kind, ',') FROM (SELECT kind FROM monitoring_event ORDER BY id)",
    )
    assert kinds == "worker_started,worker_stopped"
    assert "buffer of 3600 snapshots covers 15 min of database outage" in stderr
    assert "below 500 ms" in stderr
    assert "nothing queued is lost" in stderr


@pytest.mark.django_db(transaction=True)
def test_sigterm_flushes_every_sample_and_exits_0_on_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (run with DB=postgres, as scripts/test does)")
    env = {
        **os.environ,
        **collect_env(
            DB_NAME=connection.settings_dict["NAME"],
            HOOFHEARTED_HOST_NAME="sigterm-pg",
            HOOFHEARTED_FLUSH_INTERVAL_MS="60000",
        ),
    }
    worker = start_collect(env)
    try:
        started = wait_until_sampling(worker)
        time.sleep(4)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        stderr = started + stderr
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    ticks = int(stderr.split("stopping (SIGTERM) after ")[1].split(" ticks")[0])
    assert ticks >= 3
    assert HostSample.objects.filter(host__name="sigterm-pg").count() == ticks
    kinds = list(
        Event.objects.filter(host__name="sigterm-pg").order_by("id").values_list("kind", flat=True)
    )
    assert kinds == [EventKind.WORKER_STARTED, EventKind.WORKER_STOPPED]


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_cannot_write_what_it_sampled_by_its_stop_exits_1_saying_so():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (run with DB=postgres, as scripts/test does)")
    env = {
        **os.environ,
        **collect_env(
            DB_NAME="hoofhearted_no_such_database",
            HOOFHEARTED_HOST_NAME="nowhere-pg",
            HOOFHEARTED_WORKER_STOP_TIMEOUT_S="1",
        ),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collect", "--replay", str(H100), "--count", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "stopping with 2 snapshots and" in result.stderr
    assert "they are lost" in result.stderr


def test_a_second_worker_for_the_same_host_is_refused_on_sqlite(tmp_path):
    db = tmp_path / "collect.sqlite3"
    env = collect_env(DB="sqlite", DB_NAME=str(db), HOOFHEARTED_HOST_NAME="twice-box")
    first = start_collect(env)
    try:
        wait_for(lambda: sqlite_count(db, "SELECT COUNT(*) FROM monitoring_event") >= 1)
        second = subprocess.run(
            [sys.executable, "manage.py", "collect", "--replay", str(H100)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        other = start_collect(  # another name, on a machine of its own GPU
            {**env, "HOOFHEARTED_HOST_NAME": "another-box"},
            *("--replay", str(another_board_dir(tmp_path)), "--count", "2"),
        )
        other_out = other.communicate(timeout=60)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert second.returncode == 1
    assert (
        f"another collect worker is already running for host 'twice-box' (pid {first.pid} on "
        in second.stderr
    )
    assert "Traceback" not in second.stderr
    assert other.returncode == 0, other_out[1]  # a different host name runs fine beside it
    assert first.returncode == 0


@pytest.mark.django_db
def test_the_lock_refuses_a_second_holder_and_is_free_after_release():
    first = WorkerLock("lock-box")
    first.acquire()
    try:
        with pytest.raises(LockHeld) as refused:
            WorkerLock("lock-box").acquire()
        assert f"host 'lock-box' (pid {os.getpid()} on " in str(refused.value)
        other = WorkerLock("other-box")
        other.acquire()  # another name: no conflict
        other.release()
    finally:
        first.release()
    assert not first.local.path.exists()  # no lock file left behind
    again = WorkerLock("lock-box")
    again.acquire()
    assert again.local.path.read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    again.release()


@pytest.mark.django_db
def test_on_postgres_the_advisory_lock_refuses_a_worker_from_another_machine():
    """The local lock file cannot see another machine: the database lock must."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (run with DB=postgres, as scripts/test does)")
    from monitoring.worker.lock import PgAdvisoryLock

    holder = PgAdvisoryLock("shared-name", settings.DATABASES["default"])
    holder.try_acquire()
    try:
        elsewhere = WorkerLock("shared-name")  # its own local lock file is free
        with pytest.raises(LockHeld) as refused:
            elsewhere.acquire()
        assert f"(pid {os.getpid()} on " in str(refused.value)
        assert elsewhere.local._fd is None  # the local lock was given back
    finally:
        holder.release()
    assert holder.alive() is False


def test_the_lock_key_is_a_stable_signed_64_bit_number():
    """Every worker, in every process, on every machine must compute the same key."""
    assert lock_key("gpu-box") == 5443762936487088989
    assert lock_key("gpu-box") != lock_key("gpu-box-2")
    assert all(-(2**63) <= lock_key(f"host-{n}") < 2**63 for n in range(1000))


def test_the_config_comes_from_settings_with_overrides():
    cfg = WorkerConfig.from_settings("h", interval_ms=500)
    assert (cfg.host_name, cfg.interval_ms) == ("h", 500)
    assert cfg.flush_interval_s == settings.FLUSH_INTERVAL_MS / 1000
    assert cfg.process_interval_ms == settings.PROCESS_INTERVAL_MS
