"""The NVML, XML and CSV views of the same moment on the same H100 tell the same story."""

from __future__ import annotations

import pytest

from monitoring.telemetry.nvml_capture import CapturedNvml, load_capture
from monitoring.telemetry.nvml_source import NvmlSource
from monitoring.telemetry.smi_csv import parse_compute_apps_csv, parse_query_gpu_csv
from monitoring.telemetry.smi_xml import parse_smi_xml
from monitoring.tests.conftest import H100, STATES


def views(state: str):
    nvml = NvmlSource(nvml=CapturedNvml(load_capture(H100, state))).read()
    xml = parse_smi_xml((H100 / f"smi_qx_{state}.xml").read_text())
    csv = parse_query_gpu_csv((H100 / f"smi_csv_{state}.csv").read_text())
    apps = parse_compute_apps_csv((H100 / f"smi_apps_{state}.csv").read_text())
    return nvml, xml, csv, apps


@pytest.mark.parametrize("state", STATES)
def test_the_three_views_name_the_same_gpu(state):
    nvml, xml, csv, _ = views(state)
    for reading in (nvml, xml, csv):
        (gpu,) = reading.gpus
        assert gpu.uuid == "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"
        assert gpu.name == "NVIDIA H100 80GB HBM3"
        assert gpu.pci_bus_id == "00000000:00:06.0"
        assert gpu.memory_total == 81559
    assert {r.driver.driver_version for r in (nvml, xml, csv)} == {"580.159.04"}


@pytest.mark.parametrize("state", STATES)
def test_memory_agrees_within_rounding(state):
    nvml, xml, csv, _ = views(state)
    used = [reading.gpus[0].memory_used for reading in (nvml, xml, csv)]
    free = [reading.gpus[0].memory_free for reading in (nvml, xml, csv)]
    assert max(used) - min(used) <= 1, used
    assert max(free) - min(free) <= 1, free


@pytest.mark.parametrize("state", STATES)
def test_the_processes_agree(state):
    nvml, xml, _, apps = views(state)

    def table(processes):
        return {p.pid: (p.name, p.used_memory_mib) for p in processes}

    expected = table(xml.gpus[0].processes)
    assert table(apps) == expected
    # NVML gives pid and memory; the name comes from attribution (on this host's /proc).
    memory_by_pid = {pid: memory for pid, (_, memory) in expected.items()}
    assert {p.pid: p.used_memory_mib for p in nvml.gpus[0].processes} == memory_by_pid
    assert (len(expected) == 2) == (state == "load")


def test_the_fanless_board_is_null_with_a_reason_in_every_view():
    nvml, xml, csv, _ = views("load")
    for reading in (nvml, xml, csv):
        gpu = reading.gpus[0]
        assert gpu.fans == []
        assert gpu.fan_speed is None
        assert "fans" in gpu.unsupported
