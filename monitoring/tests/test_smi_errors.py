"""nvidia-smi's own error words reach the user, with what they mean, from every path: a saved
file (``--from-file`` exits 2 with one line), the CSV reader, and the live source (the reason
it cannot open, the driver status when it fails, messages beside the GPUs it still reads).

The lines are nvidia-smi's real wording as users quote it in bug reports; the fell-off-the-bus
output is the field capture."""

from __future__ import annotations

import os
import time

import pytest

from monitoring.telemetry import schema, smi_errors
from monitoring.telemetry.capture_file import read_capture_bytes
from monitoring.telemetry.errors import DriverError, DriverMismatch, ParseError, SourceUnavailable
from monitoring.telemetry.select import SourceOptions, open_gpu_source
from monitoring.telemetry.smi_csv import parse_query_gpu_csv
from monitoring.telemetry.smi_source import NvidiaSmiSource
from monitoring.tests.conftest import FIELD, H100
from monitoring.tests.helpers import FAKE, FAST

FELL_OFF = FIELD / "smi-gpu-fell-off-bus.txt"

# (what nvidia-smi printed, its kind, words of the meaning shown after it)
SAID = [
    (FELL_OFF.read_text(), smi_errors.LOST, "fallen off the bus"),
    (
        "Unable to determine the device handle for gpu 0000:65:00.0: GPU is lost.  Reboot the "
        "system to recover this GPU",
        smi_errors.LOST,
        "nvidia-smi -r -i 0000:65:00.0",
    ),
    (
        "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 535.183",
        smi_errors.MISMATCH,
        "upgraded without a reboot",
    ),
    ("No devices were found", smi_errors.NO_GPU, "sees no NVIDIA GPU"),
    (
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make "
        "sure that the latest NVIDIA driver is installed and running.",
        smi_errors.NO_DRIVER,
        "kernel driver is not loaded",
    ),
    ("Failed to initialize NVML: Insufficient Permissions", smi_errors.PERMISSION, "/dev/nvidia*"),
    ("Failed to initialize NVML: Unknown Error", smi_errors.NVML_FAILED, "restart the container"),
    (
        "Failed to initialize NVML: GPU access blocked by the operating system",
        smi_errors.PERMISSION,
        "blocks GPU access",
    ),
]


@pytest.mark.parametrize(("said", "kind", "meaning"), SAID, ids=lambda v: str(v)[:30])
def test_a_file_holding_only_nvidia_smis_error_relays_it_and_says_what_it_means(
    said, kind, meaning
):
    with pytest.raises(ParseError) as caught:
        read_capture_bytes(said.encode(), origin="saved.txt")
    first_line = said.strip().splitlines()[0].strip()
    assert caught.value.origin == "saved.txt"
    assert first_line in caught.value.detail and meaning in caught.value.detail
    assert "\n" not in caught.value.detail  # one line
    assert [e.kind for e in smi_errors.errors_in(said)] == [kind]


def test_a_gpu_nvidia_smi_cannot_open_is_said_beside_the_others():
    # nvidia-smi prints the lost GPU's error line, then the document of those it can read.
    text = FELL_OFF.read_text() + (H100 / "smi_qx_load.xml").read_text()
    reading = read_capture_bytes(text.encode(), origin="both.xml")
    assert len(reading.gpus) == 1 and reading.gpus[0].utilization == 100
    assert "0000:09:00.0" in reading.messages[0] and "fallen off the bus" in reading.messages[0]


def test_the_csv_reader_reports_nvidia_smis_error_as_the_driver_status():
    reading = parse_query_gpu_csv(FELL_OFF.read_text())
    assert reading.gpus == [] and reading.driver.status == schema.STATUS_ERROR
    assert "Unable to determine the device handle" in reading.driver.message
    no_gpu = parse_query_gpu_csv("No devices were found\n")
    assert no_gpu.driver.status == schema.STATUS_NO_GPU


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("FAKE_SMI_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_live_source_that_cannot_open_gives_nvidia_smis_reason(fake_env):
    fake_env.setenv("FAKE_SMI_MODE", "say")
    fake_env.setenv("FAKE_SMI_SAY", str(FELL_OFF))
    with pytest.raises(DriverError) as caught:
        NvidiaSmiSource(FAKE, **FAST)
    assert "Unable to determine the device handle for GPU 0000:09:00.0" in str(caught.value)
    assert "fallen off the bus" in str(caught.value)


def test_a_driver_mismatch_from_nvidia_smi_stops_the_search_for_a_source(fake_env, tmp_path):
    said = tmp_path / "said.txt"
    said.write_text(SAID[2][0])
    fake_env.setenv("FAKE_SMI_MODE", "say")
    fake_env.setenv("FAKE_SMI_SAY", str(said))
    with pytest.raises(DriverMismatch, match="Driver/library version mismatch"):
        NvidiaSmiSource(FAKE, **FAST)


def test_no_devices_is_only_the_absence_of_a_gpu(fake_env, tmp_path):
    said = tmp_path / "said.txt"
    said.write_text("No devices were found\n")
    fake_env.setenv("FAKE_SMI_MODE", "say")
    fake_env.setenv("FAKE_SMI_SAY", str(said))
    with pytest.raises(SourceUnavailable) as caught:
        NvidiaSmiSource(FAKE, **FAST)
    assert not isinstance(caught.value, DriverError)


def test_auto_reports_the_broken_driver_in_its_status_not_no_gpu(fake_env, tmp_path):
    fake_env.setenv("FAKE_SMI_MODE", "say")
    fake_env.setenv("FAKE_SMI_SAY", str(FELL_OFF))
    fake_env.setenv("PATH", "/usr/bin:/bin")  # no nvtop either
    opened = open_gpu_source("auto", SourceOptions(nvidia_smi=FAKE, nvtop="no-such-nvtop"))
    if opened.source is not None:
        opened.source.close()
        pytest.skip("this machine has a working GPU source")
    assert opened.no_source.status == schema.STATUS_ERROR
    assert opened.no_source.source == "nvidia-smi"
    assert "Unable to determine the device handle for GPU 0000:09:00.0" in (
        opened.no_source.message
    )


def test_the_live_source_says_which_gpu_it_could_not_open_beside_the_others(fake_env):
    fake_env.setenv("FAKE_SMI_SAY", str(FELL_OFF))
    fake_env.setenv("FAKE_SMI_XML", str(H100 / "smi_qx_load.xml"))
    with NvidiaSmiSource(FAKE, **FAST) as source:
        reading = source.read()
    assert reading.driver.status == schema.STATUS_OK and len(reading.gpus) == 1
    assert "0000:09:00.0" in reading.driver.message
    assert any("fallen off the bus" in m for m in reading.messages)


def test_the_live_source_that_dies_says_why_in_nvidia_smis_words(fake_env, tmp_path):
    fake_env.setenv("FAKE_SMI_DIE_AFTER", "1")
    fake_env.setenv("FAKE_SMI_SAY", str(FELL_OFF))
    with NvidiaSmiSource(FAKE, **{**FAST, "backoff_initial_s": 30.0}) as source:
        deadline = 50
        reading = source.read()
        while reading.driver.status == schema.STATUS_OK and deadline:
            time.sleep(0.05)
            deadline -= 1
            reading = source.read()
    assert reading.driver.status == schema.STATUS_ERROR
    assert "nvidia-smi exited with code 1" in reading.driver.message
    assert "Unable to determine the device handle" in reading.driver.message
