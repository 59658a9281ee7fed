"""A database that came back without our tables (recreated empty, restored from an old dump,
``migrate`` not run): every batch fails the same way, so the writer keeps everything queued
and says what to do, instead of dropping the oldest snapshots as if they were bad records."""

from __future__ import annotations

import logging

import pytest

from monitoring.models import GpuSample, HostSample
from monitoring.storage.writer import POISON_STRIKES, SnapshotStore
from monitoring.tests.helpers import HOST, rename, replay_sampler, ticks

pytestmark = pytest.mark.django_db

TABLE = GpuSample._meta.db_table


def test_a_missing_table_keeps_every_snapshot_and_says_to_migrate(caplog):
    snapshots = ticks(replay_sampler("load"), 6)
    store = SnapshotStore(HOST)
    for snapshot in snapshots[:2]:
        store.add(snapshot)
    assert store.flush().written_snapshots == 2

    rename(TABLE, f"{TABLE}_away")  # what a database recreated without migrate looks like
    for snapshot in snapshots[2:]:
        store.add(snapshot)
    with caplog.at_level(logging.DEBUG, logger="monitoring"):
        failures = [store.flush() for _ in range(POISON_STRIKES + 2)]
    assert all(f.error and f.written_snapshots == 0 for f in failures), failures
    assert store.pending == 4 and store.dropped_total == 0  # nothing given up on
    assert "manage.py migrate" in store.last_error
    said = [r for r in caplog.records if "manage.py migrate" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR  # once, not every flush

    rename(f"{TABLE}_away", TABLE)
    result = store.flush()
    assert (result.error, result.written_snapshots, result.pending) == (None, 4, 0)
    assert GpuSample.objects.count() == 6 and HostSample.objects.count() == 6
