"""NvidiaSmiSource against a real child process: fake_nvidia_smi.py replaying the capture.

The fake is started exactly as nvidia-smi would be (``-q -x -lms N``), so these tests cover
the stream splitting, the one-child-for-many-reads rule, restarts, hangs and shutdown.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitoring.telemetry import schema
from monitoring.telemetry.errors import SourceUnavailable
from monitoring.telemetry.smi_source import NvidiaSmiSource
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import FAKE, FAST

UUID = "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FAKE_SMI_"):
            monkeypatch.delenv(name)


@pytest.fixture
def sources() -> Iterator[Callable[..., NvidiaSmiSource]]:
    opened: list[NvidiaSmiSource] = []

    def make(**kwargs: object) -> NvidiaSmiSource:
        source = NvidiaSmiSource(FAKE, **{**FAST, **kwargs})
        opened.append(source)
        return source

    yield make
    for source in opened:
        source.close()


def _until(predicate: Callable[[], object], timeout: float = 4.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_fake_is_an_executable_script():
    assert os.access(FAKE, os.X_OK)
    assert Path(FAKE).read_text().startswith("#!/usr/bin/env python3\n")


def test_one_child_serves_many_reads(sources, monkeypatch):
    # Alternating idle/load documents: reads follow the stream without a new process.
    monkeypatch.setenv(
        "FAKE_SMI_XML", os.pathsep.join(str(H100 / f"smi_qx_{s}.xml") for s in ("idle", "load"))
    )
    source = sources()
    assert source.name == "nvidia-smi" and source.attributes_processes is False
    pid = source.pid
    utilizations = set()
    for _ in range(25):
        reading = source.read()
        assert reading.driver.status == schema.STATUS_OK
        assert reading.driver.driver_version == "580.159.04"
        assert [gpu.uuid for gpu in reading.gpus] == [UUID]
        utilizations.add(reading.gpus[0].utilization)
        time.sleep(0.02)
    assert source.pid == pid and source.starts == 1
    assert utilizations == {0, 100}


def test_read_hands_out_a_fresh_reading_each_time(sources):
    source = sources()
    first = source.read()
    first.messages.append("added downstream")
    assert "added downstream" not in source.read().messages


def test_it_is_unavailable_without_the_binary(tmp_path):
    with pytest.raises(SourceUnavailable, match="not found"):
        NvidiaSmiSource("nvidia-smi-that-does-not-exist", **FAST)
    with pytest.raises(SourceUnavailable, match="not an executable"):
        NvidiaSmiSource(str(tmp_path / "nvidia-smi"), **FAST)


def test_it_is_unavailable_without_the_driver(monkeypatch):
    # What nvidia-smi prints (on stdout, exit 9) when the kernel module is not loaded.
    monkeypatch.setenv("FAKE_SMI_MODE", "no-driver")
    with pytest.raises(SourceUnavailable, match="couldn't communicate with the NVIDIA driver"):
        NvidiaSmiSource(FAKE, **FAST)


def test_it_is_unavailable_when_the_first_document_never_comes(monkeypatch):
    monkeypatch.setenv("FAKE_SMI_MODE", "hang")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="no output"):
        NvidiaSmiSource(FAKE, **{**FAST, "timeout_s": 0.5})
    assert time.monotonic() - started < 2.5


def test_it_is_unavailable_when_the_document_lists_no_gpu(monkeypatch, tmp_path):
    empty = re.sub(r'<gpu id="[^"]*">.*</gpu>', "", (H100 / "smi_qx_idle.xml").read_text(),
                   flags=re.S)  # fmt: skip
    (tmp_path / "none.xml").write_text(empty.replace("<attached_gpus>1", "<attached_gpus>0"))
    monkeypatch.setenv("FAKE_SMI_XML", str(tmp_path / "none.xml"))
    with pytest.raises(SourceUnavailable, match="No NVIDIA GPU found"):
        NvidiaSmiSource(FAKE, **FAST)


def test_it_reports_a_dead_child_and_restarts_it(sources, monkeypatch):
    monkeypatch.setenv("FAKE_SMI_DIE_AFTER", "3")
    source = sources()
    first_pid = source.pid
    errors: list[schema.GpuReading] = []

    def restarted_and_ok() -> bool:
        reading = source.read()  # never raises
        if reading.driver.status == schema.STATUS_ERROR:
            errors.append(reading)
        return reading.driver.status == schema.STATUS_OK and source.pid != first_pid

    _until(restarted_and_ok)
    assert errors, "the death was reported"
    assert errors[0].gpus == []  # no invented GPUs while the source is down
    assert "exited with code 1" in (errors[0].driver.message or "")
    assert errors[0].driver.driver_version == "580.159.04"  # last known stack stays shown
    assert source.starts >= 2
    assert not _alive(first_pid)


def test_it_backs_off_while_the_driver_stays_broken(sources, monkeypatch):
    # The driver goes away mid-run: each restart fails at once, and waits grow.
    source = sources()
    monkeypatch.setenv("FAKE_SMI_MODE", "no-driver")  # inherited by the restarted children
    os.kill(source.pid, signal.SIGKILL)  # the running child goes down with the driver
    delays: list[float] = []

    def three_delays() -> bool:
        message = source.read().driver.message or ""
        match = re.search(r"restarting in ([\d.]+) s", message)
        if match and (not delays or float(match.group(1)) != delays[-1]):
            delays.append(float(match.group(1)))
        return len(delays) >= 3

    _until(three_delays)
    assert delays[:3] == sorted(delays[:3]) and delays[2] > delays[0]
    assert "couldn't communicate with the NVIDIA driver" in source.read().driver.message


def test_it_kills_and_restarts_a_silent_child(sources, monkeypatch):
    # nvidia-smi stuck in the driver: half a document, then nothing.
    monkeypatch.setenv("FAKE_SMI_HANG_AFTER", "2")
    source = sources(timeout_s=0.4)
    first_pid = source.pid

    def silent_reported() -> schema.GpuReading | None:
        reading = source.read()
        return reading if "printed nothing" in (reading.driver.message or "") else None

    reading = _until(silent_reported)
    assert reading.driver.status == schema.STATUS_ERROR
    assert reading.gpus == []
    _until(lambda: source.pid != first_pid and not _alive(first_pid))


def test_it_says_when_persistence_mode_is_off(sources, monkeypatch, tmp_path):
    # Persistence off (the default on many Linux installs without nvidia-persistenced).
    off = (
        (H100 / "smi_qx_idle.xml")
        .read_text()
        .replace(
            "<persistence_mode>Enabled</persistence_mode>",
            "<persistence_mode>Disabled</persistence_mode>",
        )
    )
    (tmp_path / "off.xml").write_text(off)
    monkeypatch.setenv("FAKE_SMI_XML", str(tmp_path / "off.xml"))
    reading = sources().read()
    assert reading.gpus[0].persistence_mode is False
    assert any(m.startswith("persistence mode is off on GPU 0: ") for m in reading.messages)


def test_close_kills_the_child_and_is_idempotent(sources):
    source = sources()
    pid = source.pid
    source.close()
    assert not _alive(pid)
    source.close()


def test_close_kills_a_child_that_ignores_terminate(sources, monkeypatch):
    monkeypatch.setenv("FAKE_SMI_IGNORE_TERM", "1")
    source = sources(grace_s=0.2)
    pid = source.pid
    started = time.monotonic()
    source.close()
    assert not _alive(pid)
    assert time.monotonic() - started < 2.0
