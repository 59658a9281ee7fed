"""Stop and start the real Redis that ``scripts/services.sh`` started, for fault tests.

(PostgreSQL has its own helper, :mod:`monitoring.tests.pg_control`.) Redis is started again
on the same port, without persistence, with the pid file services.sh stops it by, so the
test command's cleanup still finds it.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest


def redis_available() -> bool:
    return bool(os.environ.get("REDIS_URL") and os.environ.get("TEST_REDIS_PORT"))


def skip_unless_redis() -> None:
    if not redis_available():
        pytest.skip("needs the Redis of scripts/services.sh (REDIS_URL, TEST_REDIS_PORT)")


def _port() -> str:
    return os.environ["TEST_REDIS_PORT"]


def _services_dir() -> Path:
    """Where services.sh keeps its pid and log files (the parent of PG_DATA), else /tmp."""
    data = os.environ.get("PG_DATA")
    return Path(data).parent if data else Path("/tmp")


def redis_ping() -> bool:
    result = subprocess.run(
        ["redis-cli", "-p", _port(), "ping"], capture_output=True, text=True, timeout=10
    )
    return result.stdout.strip() == "PONG"


def stop_redis() -> None:
    subprocess.run(
        ["redis-cli", "-p", _port(), "shutdown", "nosave"], capture_output=True, timeout=10
    )
    deadline = time.monotonic() + 10
    while redis_ping():
        if time.monotonic() > deadline:
            raise RuntimeError("Redis did not stop")
        time.sleep(0.1)


def start_redis() -> None:
    if redis_ping():
        return
    run_dir = _services_dir()
    subprocess.run(
        [
            "redis-server",
            "--port",
            _port(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(run_dir / "redis.pid"),
            "--logfile",
            str(run_dir / "redis.log"),
            "--dir",
            str(run_dir),
        ],
        check=True,
        capture_output=True,
        timeout=10,
    )
    deadline = time.monotonic() + 10
    while not redis_ping():
        if time.monotonic() > deadline:
            raise RuntimeError("Redis did not start again")
        time.sleep(0.1)
