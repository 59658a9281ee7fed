"""`python -m hoofhearted.web` is daphne on uvloop: the loop must be chosen before daphne
imports its server, which creates the loop under the Twisted reactor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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
