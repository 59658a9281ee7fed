"""A GPU row belongs to the host that reports it. A second worker on the same machine under
another name (a systemd worker plus a manual or Docker one, or HOOFHEARTED_HOST_NAME unset)
sees the same GPU UUID: it must not move the row, and with it the first host's samples and
process sessions, but stop before writing anything and say what to do. A GPU whose host has
been silent longer than STALE_AFTER_S (moved to this machine, host renamed) still moves.
Real H100 capture, real store, SQLite and PostgreSQL; the worker as a real process."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from django.conf import settings

from monitoring.models import Gpu, GpuSample, Host, ProcessSession
from monitoring.storage.writer import SnapshotStore
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import (
    T0,
    collect,
    collect_env,
    replay_sampler,
    sqlite_count,
    start_collect,
    ticks,
    wait_for,
    wait_until_sampling,
)

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"


def write(host: str, seconds: int, *, count: int = 8, store: SnapshotStore | None = None):
    """``count`` replayed ticks of the H100 under load for ``host`` from T0 + ``seconds``,
    flushed by the real store (given, or a new one); returns (store, flush result)."""
    store = store or SnapshotStore(host)
    for snapshot in ticks(
        replay_sampler("load", hostname=host), count, start=T0 + timedelta(seconds=seconds)
    ):
        store.add(snapshot)
    return store, store.flush()


def open_sessions(host: str) -> list[tuple[int, int]]:
    return sorted(
        ProcessSession.objects.filter(gpu__host__name=host, open=True).values_list("pid", "id")
    )


@pytest.mark.django_db
def test_a_second_name_on_the_same_machine_does_not_take_the_gpu_of_a_running_host(client):
    first, _ = write("qa2-gpu", 0)
    sessions = open_sessions("qa2-gpu")
    samples = GpuSample.objects.filter(gpu__host__name="qa2-gpu").count()
    assert sessions and samples == 8

    _, refused = write("QA2-GPU", 5, count=3)  # 5 s later: qa2-gpu is still running

    assert refused.written_snapshots == 0
    assert refused.refused == refused.error
    assert UUID in refused.refused
    assert "host 'qa2-gpu'" in refused.refused
    assert "HOOFHEARTED_HOST_NAME=qa2-gpu" in refused.refused
    assert "\n" not in refused.refused
    assert Gpu.objects.get(uuid=UUID).host.name == "qa2-gpu"
    assert not Host.objects.filter(name="QA2-GPU").exists()  # nothing of it was written
    assert open_sessions("qa2-gpu") == sessions  # neither closed nor duplicated

    _, result = write("qa2-gpu", 8, store=first)  # the first worker goes on as before
    assert result.error is None
    assert GpuSample.objects.filter(gpu__host__name="qa2-gpu").count() == 16
    assert open_sessions("qa2-gpu") == sessions
    assert client.get("/history/", {"host": "qa2-gpu", "gpu": "0"}).status_code == 200
    api = client.get("/api/history", {"host": "qa2-gpu", "gpu": "0", "metric": "utilization"})
    assert api.status_code == 200, api.content


@pytest.mark.django_db
def test_a_gpu_whose_host_has_been_silent_longer_than_stale_after_moves_saying_so(caplog):
    write("old-name", 0)
    later = 8 + settings.STALE_AFTER_S + 1  # old-name's last sample was at 7 s

    with caplog.at_level("WARNING"):
        _, result = write("new-name", later, count=3)

    assert result.error is None
    assert Gpu.objects.get(uuid=UUID).host.name == "new-name"
    assert f"GPU {UUID} moves from host 'old-name' (silent since " in caplog.text
    assert GpuSample.objects.filter(gpu__host__name="new-name").count() == 11  # history moves


@pytest.mark.django_db
def test_a_host_silent_just_under_stale_after_still_keeps_its_gpu():
    write("old-name", 0)
    _, result = write("new-name", 7 + settings.STALE_AFTER_S - 1, count=1)
    assert result.refused is not None
    assert Gpu.objects.get(uuid=UUID).host.name == "old-name"


def test_the_second_worker_stops_with_exit_2_and_the_first_keeps_its_gpu_on_sqlite(tmp_path):
    db = tmp_path / "collect.sqlite3"
    env = collect_env(DB="sqlite", DB_NAME=str(db), HOOFHEARTED_FLUSH_INTERVAL_MS="500")
    first = start_collect({**env, "HOOFHEARTED_HOST_NAME": "qa2-gpu"})
    try:
        wait_until_sampling(first)
        wait_for(lambda: sqlite_count(db, "SELECT COUNT(*) FROM monitoring_gpu") == 1)
        second = collect("--replay", str(H100), "--host-name", "QA2-GPU", "--count", "3", env=env)
        before = sqlite_count(db, "SELECT COUNT(*) FROM monitoring_gpusample")
        wait_for(lambda: sqlite_count(db, "SELECT COUNT(*) FROM monitoring_gpusample") > before)
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=30)
    assert second.returncode == 2, second.stderr
    errors = [line for line in second.stderr.splitlines() if UUID in line]
    assert len(errors) == 1
    assert "host 'qa2-gpu'" in errors[0] and "HOOFHEARTED_HOST_NAME=qa2-gpu" in errors[0]
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, first_err
    owner = "SELECT h.name FROM monitoring_gpu g JOIN monitoring_host h ON h.id = g.host_id"
    assert sqlite_count(db, owner) == "qa2-gpu"
    assert sqlite_count(db, "SELECT COUNT(*) FROM monitoring_host") == 1
    ticks_run = int(first_err.split("stopping (SIGTERM) after ")[1].split(" ticks")[0])
    assert sqlite_count(db, "SELECT COUNT(*) FROM monitoring_gpusample") == ticks_run
