"""The best available source wins; each one passed over says why; the host always goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.telemetry.errors import DriverMismatch
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.schema import (
    STATUS_ERROR,
    STATUS_NO_GPU,
    DriverInfo,
    HostInfo,
    SystemSample,
)
from monitoring.telemetry.select import NO_GPU_MESSAGE, SourceOptions, open_gpu_source
from monitoring.tests.conftest import H100

FAKE_SMI = str(Path(__file__).resolve().parent / "fake_nvidia_smi.py")


@pytest.fixture(autouse=True)
def _load_capture(monkeypatch):
    monkeypatch.setenv("FAKE_SMI_XML", str(H100 / "smi_qx_load.xml"))


def test_without_nvml_auto_falls_back_to_nvidia_smi_and_says_why():
    opened = open_gpu_source("auto", SourceOptions(nvidia_smi=FAKE_SMI, interval_ms=250))
    try:
        assert opened.source is not None and opened.source.name == "nvidia-smi"
        assert opened.notes and opened.notes[0].startswith("nvml: ")
        reading = opened.source.read()
        assert reading.gpus[0].utilization == 100
    finally:
        opened.source.close()


def test_with_nothing_available_it_reports_no_gpu_plainly():
    opened = open_gpu_source(
        "auto", SourceOptions(nvidia_smi="/nonexistent/nvidia-smi", nvtop="/nonexistent/nvtop")
    )
    assert opened.source is None
    assert opened.no_source.status == STATUS_NO_GPU
    assert opened.no_source.message == NO_GPU_MESSAGE
    assert [note.split(":")[0] for note in opened.notes] == ["nvml", "nvidia-smi", "nvtop"]


def test_a_forced_source_that_cannot_run_is_an_error_not_a_fallback():
    opened = open_gpu_source("nvml")
    assert opened.source is None
    assert opened.no_source.status == STATUS_ERROR
    assert "nvml source is unavailable" in opened.no_source.message


def test_replay_and_none_can_be_forced():
    opened = open_gpu_source("replay", SourceOptions(replay_dir=H100, replay_state="idle"))
    assert opened.source.name == "replay"
    opened.source.close()
    assert open_gpu_source("none").source is None


def test_a_driver_mismatch_stops_the_search_with_its_message(monkeypatch):
    from monitoring.telemetry import select

    def mismatch(name, options):
        raise DriverMismatch("the NVIDIA driver was upgraded without a reboot")

    monkeypatch.setattr(select, "_open_one", mismatch)
    opened = open_gpu_source("auto")
    assert opened.source is None
    assert opened.no_source.status == STATUS_ERROR
    assert "without a reboot" in opened.no_source.message


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="unknown GPU source 'cuda'"):
        open_gpu_source("cuda")


class CountingHost:
    def __init__(self):
        self.samples = 0

    def sample(self, *, top_processes=False, slow=False):
        self.samples += 1
        return SystemSample(cpu_usage=1.0)


class BrokenSource:
    name = "nvml"
    attributes_processes = False

    def read(self, *, processes=True, slow=True):
        raise RuntimeError("library exploded")

    def close(self):
        pass


def test_a_source_failing_mid_run_does_not_stop_the_host_figures():
    host = CountingHost()
    sampler = Sampler(
        BrokenSource(),
        host_info=HostInfo("box", "Linux", "6", None, 2, 1, None),
        host_sampler=host,
        no_source=DriverInfo("none", STATUS_NO_GPU),
    )
    snapshot = sampler.sample()
    assert snapshot.driver.status == STATUS_ERROR
    assert "library exploded" in snapshot.driver.message
    assert snapshot.system.cpu_usage == 1.0
    assert host.samples == 1
