"""The systemd units in deploy/systemd: systemd itself finds nothing to say about them (with
/opt/hoofhearted pointed at this checkout, so their commands exist), they restart on failure
as a dedicated user, and systemd rates their exposure low."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> list[Path]:
    """The units as installed, with the checkout (and its .venv) at /opt/hoofhearted."""
    directory = tmp_path_factory.mktemp("units")
    for unit in UNITS:
        (directory / unit.name).write_text(unit.read_text().replace("/opt/hoofhearted", str(ROOT)))
    return sorted(directory.glob("*.service"))


def test_there_is_a_unit_for_the_web_server_and_one_for_the_worker():
    assert [u.name for u in UNITS] == ["hoofhearted-web.service", "hoofhearted-worker.service"]


@needs_systemd
def test_systemd_analyze_verify_finds_nothing(installed):
    result = subprocess.run(
        [ANALYZE, "verify", *map(str, installed)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


@needs_systemd
@pytest.mark.parametrize(("unit", "limit"), [(0, 1.5), (1, 2.0)], ids=["web", "worker"])
def test_systemd_rates_the_units_exposure_low(installed, unit, limit):
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(installed[unit])], capture_output=True, text=True
    )
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)[1])
    assert level <= limit


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_each_unit_restarts_on_failure_as_a_dedicated_user_on_a_read_only_system(unit):
    text = unit.read_text()
    for line in (
        "User=hoofhearted",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "EnvironmentFile=/etc/hoofhearted/hoofhearted.env",
    ):
        assert f"\n{line}\n" in text, line


def test_the_web_server_listens_on_loopback_only():
    web = (ROOT / "deploy" / "systemd" / "hoofhearted-web.service").read_text()
    assert "-m hoofhearted.web -b 127.0.0.1 -p 8000 --websocket_timeout -1" in web
