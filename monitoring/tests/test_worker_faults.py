"""The issue's fault test, for real: "stop PostgreSQL for 60 s and Redis for 30 s while the
worker runs on the replay source; afterwards every sample of the outage is in the database
and the worker never exited."

The worker is a real ``manage.py collect --replay`` process writing to the test database of
the real PostgreSQL and publishing to the real Redis that ``scripts/test`` starts; the servers
are really stopped (``pg_ctl stop -m fast``, ``redis-cli shutdown``) and started again.
Takes about 100 s (the other tests about 20 s each: a database down at start, and one
dropped and recreated under the worker). Skipped unless DB=postgres and the test
Redis are there.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection

from monitoring.models import Event, GpuSample, HostSample
from monitoring.records import EventKind
from monitoring.tests import pg_control, service_control
from monitoring.tests.helpers import ROOT, collect_env, start_collect, wait_until_sampling

HOST = "fault-box"
PG_OUTAGE_S = 60
REDIS_OUTAGE_S = 30
REDIS_STOPS_AFTER_S = 10  # into the PostgreSQL outage: both are down together for 30 s

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def live_message(timeout: float = 10.0) -> dict:
    """Join the live group on the real Redis and wait for the worker's next message."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[os.environ["REDIS_URL"]])

    async def one() -> dict:
        channel = await layer.new_channel()
        await layer.group_add(settings.TELEMETRY_GROUP, channel)
        try:
            while True:
                message = await asyncio.wait_for(layer.receive(channel), timeout)
                if message.get("host") == HOST:
                    return message
        finally:
            await layer.group_discard(settings.TELEMETRY_GROUP, channel)
            await layer.close_pools()

    return async_to_sync(one)()


def test_every_sample_of_a_postgres_and_redis_outage_is_stored_and_the_worker_lives_on():
    pg_control.skip_unless_available()
    service_control.skip_unless_redis()
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    env = {
        **os.environ,
        **collect_env(
            DB_NAME=connection.settings_dict["NAME"],
            HOOFHEARTED_HOST_NAME=HOST,
            POLL_INTERVAL_MS="1000",
        ),
    }
    worker = start_collect(env)
    try:
        started_log = wait_until_sampling(worker)
        assert live_message()["snapshot"]["gpus"][0]["utilization"] == 100
        time.sleep(3)

        pg_down = datetime.now(UTC)
        pg_control.stop("fast")
        time.sleep(REDIS_STOPS_AFTER_S)
        service_control.stop_redis()
        time.sleep(REDIS_OUTAGE_S)
        service_control.start_redis()
        assert worker.poll() is None, "the worker exited during the outage"
        # live updates flow again while PostgreSQL is still down
        assert live_message()["host"] == HOST
        time.sleep(max(0.0, PG_OUTAGE_S - (datetime.now(UTC) - pg_down).total_seconds()))
        pg_control.start()
        pg_up = datetime.now(UTC)

        connection.close()  # the test's own connection died with the server
        deadline = time.monotonic() + 30
        while not HostSample.objects.filter(host__name=HOST, time__gt=pg_up).exists():
            assert time.monotonic() < deadline, "the backlog was not written after the outage"
            time.sleep(1)
        assert worker.poll() is None, "the worker exited after the outage"
    finally:
        pg_control.start()
        service_control.start_redis()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            _, stderr = worker.communicate(timeout=60)
        except Exception:
            worker.kill()
            raise
    stderr = started_log + stderr
    assert worker.returncode == 0, stderr

    connection.close()
    times = list(
        HostSample.objects.filter(host__name=HOST).order_by("time").values_list("time", flat=True)
    )
    ticks = int(stderr.split("stopping (SIGTERM) after ")[1].split(" ticks")[0])
    assert len(times) == ticks  # every tick of the run, once
    assert GpuSample.objects.filter(gpu__host__name=HOST).count() == ticks
    assert times[0] < pg_down - timedelta(seconds=2) and times[-1] > pg_up
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 2.0, f"a gap of {max(gaps):.1f} s in the samples"
    during = [t for t in times if pg_down <= t <= pg_up]
    outage_s = (pg_up - pg_down).total_seconds()
    assert len(during) >= outage_s - 2, (len(during), outage_s)

    kinds = list(Event.objects.filter(host__name=HOST).values_list("kind", flat=True))
    assert sorted(kinds) == [EventKind.WORKER_STARTED, EventKind.WORKER_STOPPED]  # nothing dropped
    # each outage was logged once when it began and once when it ended
    assert stderr.count("database unavailable (") == 1
    assert stderr.count("database back: the buffered samples are written") == 1
    assert stderr.count("cannot publish live updates") == 1
    assert stderr.count("live updates are flowing again") == 1
    assert "database lock for host 'fault-box' held again" in stderr
    assert "tick failed" not in stderr and "Traceback" not in stderr


def test_a_worker_started_while_postgres_is_down_buffers_then_writes_and_takes_the_lock():
    """About 20 s: the database is stopped before the worker starts, started 8 s later."""
    pg_control.skip_unless_available()
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    host = "late-db-box"
    env = {
        **os.environ,
        **collect_env(DB_NAME=connection.settings_dict["NAME"], HOOFHEARTED_HOST_NAME=host),
    }
    env.pop("REDIS_URL", None)
    connection.close()
    pg_control.stop("fast")
    try:
        worker = start_collect(env)
        started_log = wait_until_sampling(worker)
        time.sleep(8)
        assert worker.poll() is None
    finally:
        pg_control.start()
    try:
        connection.close()
        deadline = time.monotonic() + 30
        while not HostSample.objects.filter(host__name=host).exists():
            assert time.monotonic() < deadline, "nothing written after the database came back"
            time.sleep(1)
        second = start_collect({**env, "HOOFHEARTED_HOST_NAME": host})
        _, refused = second.communicate(timeout=60)
        assert second.returncode == 1
        assert f"already running for host '{host}'" in refused
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    stderr = started_log + stderr
    assert worker.returncode == 0, stderr
    assert "database unreachable at start" in stderr
    assert f"database lock for host '{host}' held again" in stderr
    ticks = int(stderr.split("stopping (SIGTERM) after ")[1].split(" ticks")[0])
    assert HostSample.objects.filter(host__name=host).count() == ticks


def test_a_database_dropped_under_the_worker_and_recreated_is_filled_once_migrated():
    """About 30 s: the worker's database is dropped, created again empty, then migrated. The
    worker buffers throughout, says once what to do, and writes everything after the drop."""
    pg_control.skip_unless_available()
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    host, name = "dropped-db-box", f"hh_dropped_{os.getpid()}"
    env = {**os.environ, **collect_env(DB_NAME=name, HOOFHEARTED_HOST_NAME=host)}
    env.pop("REDIS_URL", None)

    def admin_sql(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    def migrate() -> None:
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

    def sessions() -> int:
        with psycopg.connect(
            host=env["DB_HOST"], port=env["DB_PORT"], user=env["DB_USER"], dbname=name
        ) as conn:
            return conn.execute("SELECT count(*) FROM monitoring_processsession").fetchone()[0]

    def samples() -> list[datetime]:
        with psycopg.connect(
            host=env["DB_HOST"], port=env["DB_PORT"], user=env["DB_USER"], dbname=name
        ) as conn:
            rows = conn.execute(
                "SELECT s.time FROM monitoring_hostsample s JOIN monitoring_host h "
                "ON h.id = s.host_id WHERE h.name = %s ORDER BY s.time",
                [host],
            ).fetchall()
        return [row[0] for row in rows]

    admin_sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin_sql(f'CREATE DATABASE "{name}"')
    migrate()
    worker = start_collect(env)
    try:
        started_log = wait_until_sampling(worker)
        time.sleep(3)
        dropped = datetime.now(UTC)
        admin_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        time.sleep(4)
        admin_sql(f'CREATE DATABASE "{name}"')  # empty: no tables yet
        time.sleep(5)
        assert worker.poll() is None, "the worker exited without its database"
        migrate()
        migrated = datetime.now(UTC)
        deadline = time.monotonic() + 30
        while not any(t > migrated for t in samples()):
            assert time.monotonic() < deadline, "nothing written after migrate"
            time.sleep(1)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
        stderr = started_log + stderr
    try:
        assert worker.returncode == 0, stderr
        times = samples()
        # what was written before the drop went with it; everything since is there, once
        assert times[0] <= dropped + timedelta(seconds=3), (times[0], dropped)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert max(gaps) <= 2.0, f"a gap of {max(gaps):.1f} s in the samples"
        assert len(times) == len(set(times))
        assert sessions() == 2  # the replayed load's two processes, written anew
        assert stderr.count("run `python manage.py migrate`") == 1, stderr
        assert "Traceback" not in stderr and "dropped the oldest" not in stderr, stderr
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
