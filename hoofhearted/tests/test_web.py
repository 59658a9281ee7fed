"""`python -m hoofhearted.web` is daphne on uvloop: the loop must be chosen before daphne
imports its server, which creates the loop under the Twisted reactor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start_web(**env: str) -> subprocess.CompletedProcess:
    """``python -m hoofhearted.web`` on a free loopback port, stopped after 20 s at most (a
    server that starts is a test that fails)."""
    environ = {k: v for k, v in os.environ.items() if k != "CSRF_TRUSTED_ORIGINS"}
    environ.update({"DB": "sqlite", "REDIS_URL": ""}, **env)
    command = [sys.executable, "-m", "hoofhearted.web", "-b", "127.0.0.1", "-p", "0"]
    try:
        return subprocess.run(
            [*command, "hoofhearted.asgi:application"],
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired as started:
        pytest.fail(f"the web server started: {started.stderr}")


LOOP_OF_DAPHNE = """
from hoofhearted.web import use_uvloop
chosen = use_uvloop()
import daphne.server
print(chosen, type(daphne.server.twisted_loop).__module__, use_uvloop())
"""


def test_daphne_runs_on_uvloop_when_chosen_before_its_server_is_imported():
    out = subprocess.run(
        [sys.executable, "-c", LOOP_OF_DAPHNE], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    # chosen; the reactor's loop is uvloop's; asking again once daphne is loaded changes nothing
    assert out == ["True", "uvloop", "False"]


def test_the_web_server_takes_daphnes_own_options():
    result = subprocess.run(
        [sys.executable, "-m", "hoofhearted.web", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert "--websocket_timeout" in result.stdout and "application" in result.stdout


def test_autobahn_writes_its_log_arguments_as_plain_text():
    from autobahn.util import hltype, hlval

    from hoofhearted.web import plain_autobahn_log_arguments

    plain_autobahn_log_arguments()
    assert hlval(1346) == "1346"  # not "\x1b[1m\x1b[37m1346\x1b[0m"
    assert hltype(test_autobahn_writes_its_log_arguments_as_plain_text).startswith("<hoofhearted.")


def test_the_web_server_refuses_what_djangos_system_checks_refuse_as_serve_does():
    result = start_web(CSRF_TRUSTED_ORIGINS="gpu01.example.com")
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: System check identified some issues")
    assert "(4_0.E001)" in result.stderr and "but found gpu01.example.com" in result.stderr
    assert "Listening" not in result.stderr and "Traceback" not in result.stderr


def test_the_web_server_refuses_a_bad_environment_value_in_one_line():
    result = start_web(REDIS_URL="garbage")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "configuration error: REDIS_URL='garbage' is not a Redis URL"
    )
