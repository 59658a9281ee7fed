"""Stop and start the real PostgreSQL server that ``scripts/services.sh`` started, for fault
tests (a database outage is only real if the server is really gone).

Uses what services.sh exports: ``PG_BIN``, ``PG_DATA`` and ``PG_SERVICES_USER`` (the user the
server runs as when the tests run as root). The server is started again with the options it
was started with, read from ``$PG_DATA/postmaster.opts`` (which PostgreSQL writes at start
and keeps after a stop), so port, socket directory and tuning stay the same as services.sh
chose. Use as ``with pg_control.outage(): ...`` so the server always comes back.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TIMEOUT_S = 60


def available() -> bool:
    """True when the tests run on PostgreSQL with a server this process may stop."""
    return (
        os.environ.get("DB") == "postgres"
        and bool(os.environ.get("PG_BIN"))
        and bool(os.environ.get("PG_DATA"))
        and Path(os.environ["PG_DATA"], "PG_VERSION").is_file()
    )


def skip_unless_available() -> None:
    if not available():
        pytest.skip("needs DB=postgres and the server of scripts/services.sh (PG_BIN, PG_DATA)")


def _data() -> Path:
    return Path(os.environ["PG_DATA"])


def _pg_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(os.environ["PG_BIN"]) / "pg_ctl"), "-D", str(_data()), *args]
    user = os.environ.get("PG_SERVICES_USER")
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S + 10)


def server_options() -> str:
    """The server's own command-line options (``-p … -k … -c …``), without ``-D``."""
    argv = shlex.split(_data().joinpath("postmaster.opts").read_text().strip())
    options: list[str] = []
    rest = iter(argv[1:])  # argv[0] is the postgres binary
    for arg in rest:
        if arg == "-D":
            next(rest, None)
            continue
        options.append(arg)
    return shlex.join(options)


def is_running() -> bool:
    return _pg_ctl("status").returncode == 0


def stop(mode: str = "fast") -> None:
    """Stop the server (``fast``: disconnect every client, as a restart or crash would)."""
    result = _pg_ctl("-m", mode, "-w", "-t", str(TIMEOUT_S), "stop")
    if result.returncode != 0 and is_running():
        raise RuntimeError(f"pg_ctl stop failed: {result.stderr or result.stdout}")


def start() -> None:
    """Start the server again with the options it had, and wait until it accepts."""
    if is_running():
        return
    log_file = _data().parent / "postgres.log"
    result = _pg_ctl(
        "-l", str(log_file), "-w", "-t", str(TIMEOUT_S), "-o", server_options(), "start"
    )
    if result.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {result.stderr or result.stdout}")


@contextmanager
def outage(mode: str = "fast") -> Iterator[None]:
    """PostgreSQL is down inside the block and running again after it, whatever happens."""
    stop(mode)
    try:
        yield
    finally:
        start()
