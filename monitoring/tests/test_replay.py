"""ReplaySource plays the real H100 captures through NvmlSource as if live."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from monitoring.telemetry import schema
from monitoring.telemetry.errors import ParseError, SourceUnavailable
from monitoring.telemetry.replay import (
    DEFAULT_REPLAY_DIR,
    ReplaySource,
    list_states,
    read_nvml_capture,
)
from monitoring.tests.conftest import H100


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_it_defaults_to_the_shipped_h100_captures():
    assert DEFAULT_REPLAY_DIR.resolve() == H100.resolve()
    assert list_states(DEFAULT_REPLAY_DIR) == ["idle", "load"]


def test_it_replays_the_load_capture(h100):
    source = ReplaySource(h100, "load")
    assert (source.name, source.attributes_processes) == ("replay", True)
    reading = source.read(processes=True, slow=True)
    assert reading.driver.source == schema.SOURCE_REPLAY
    assert reading.driver.driver_version == "580.159.04"
    (gpu,) = reading.gpus
    assert (gpu.utilization, gpu.temperature, gpu.memory_used) == (100, 69, 4734)
    assert gpu.power_usage == pytest.approx(696.797)
    assert any("Replaying" in m and "load" in m for m in reading.messages)
    source.close()


def test_it_replays_the_idle_capture(h100):
    source = ReplaySource(h100, "idle")
    (gpu,) = source.read().gpus
    assert (gpu.utilization, gpu.temperature, gpu.processes) == (0, 46, [])


def test_it_gives_processes_the_user_and_command_of_the_capture_machine(h100):
    source = ReplaySource(h100, "load")
    procs = {p.pid: p for p in source.read(processes=True).gpus[0].processes}
    assert {p.user for p in procs.values()} == {"root"}
    assert procs[447].name == "python3"
    assert procs[447].command.startswith("python3")
    # the capture's argv, joined (and redacted by the attribution module when it exists)
    assert procs[448].command.startswith("python3 -c ")
    assert "torch.empty(3*1024**3" in procs[448].command
    # repeated on ticks without the process tier, still attributed
    again = {p.pid: p for p in source.read(processes=False, slow=False).gpus[0].processes}
    assert again[447].user == "root"


def test_it_alternates_idle_and_load_when_no_state_is_given(h100):
    clock = Clock()
    source = ReplaySource(h100, switch_every_s=30, clock=clock)
    seen = []
    for _ in range(4):
        gpu = source.read(processes=False, slow=False).gpus[0]
        seen.append((source.state, gpu.utilization))
        clock.now += 30
    assert seen == [("idle", 0), ("load", 100), ("idle", 0), ("load", 100)]


def test_it_lists_processes_on_the_first_tick_after_a_switch(h100):
    clock = Clock()
    source = ReplaySource(h100, switch_every_s=30, clock=clock)
    source.read(processes=True)
    clock.now += 30
    gpu = source.read(processes=False, slow=False).gpus[0]
    assert {p.pid for p in gpu.processes} == {447, 448}


def test_it_refuses_a_directory_without_nvml_captures(tmp_path):
    with pytest.raises(SourceUnavailable, match=re.escape(str(tmp_path))):
        ReplaySource(tmp_path)
    with pytest.raises(SourceUnavailable, match="nosuchdir"):
        ReplaySource(tmp_path / "nosuchdir")


def test_it_refuses_an_unknown_state(h100):
    with pytest.raises(SourceUnavailable, match="idle, load"):
        ReplaySource(h100, "busy")


def test_it_names_a_broken_capture_file(tmp_path, h100):
    shutil.copy(h100 / "nvml_idle.json", tmp_path / "nvml_idle.json")
    (tmp_path / "nvml_load.json").write_text("{not json")
    with pytest.raises(SourceUnavailable, match=r"nvml_load\.json"):
        ReplaySource(tmp_path)


def test_it_charges_the_real_cost_when_asked(h100):
    source = ReplaySource(h100, "load", charge_cost=True)
    source.read(processes=True, slow=True)  # slow tier pays ~45 ms of PCIe and energy
    assert source.read(processes=False, slow=False).gpus[0].utilization == 100


def test_it_reads_a_single_capture_file_for_collect(h100):
    data = json.loads((h100 / "nvml_load.json").read_text())
    reading = read_nvml_capture(data, origin="nvml_load.json")
    (gpu,) = reading.gpus
    assert gpu.temperature == 69 and {p.user for p in gpu.processes} == {"root"}
    with pytest.raises(ParseError, match=r"x\.json"):
        read_nvml_capture({"hello": 1}, origin="x.json")
    with pytest.raises(ParseError, match=r"x\.json"):
        read_nvml_capture({"gpus": [{"name": "no record"}]}, origin="x.json")


def test_a_malformed_figure_costs_that_figure_and_is_named(h100):
    data = json.loads((h100 / "nvml_load.json").read_text())
    data["gpus"][0]["utilization"]["value"] = {"busy": 100}  # no .gpu member
    reading = read_nvml_capture(data, origin="broken.json")
    (gpu,) = reading.gpus
    assert gpu.state == "ok" and gpu.utilization is None
    assert gpu.unsupported["utilization"].startswith("reading failed: AttributeError")
    assert gpu.temperature == 69 and gpu.memory_used is not None  # the rest is read
    assert any("broken.json" in m and "utilization" in m for m in reading.messages)


def test_settings_reach_the_nvml_tiers_and_a_viewer_asks_for_pcie_throughput(h100):
    from monitoring.telemetry.select import SourceOptions, open_gpu_source

    options = SourceOptions(replay_dir=h100, replay_state="load", pcie_interval_ms=0)
    opened = open_gpu_source("replay", options)
    sampler = build_sampler_from(opened)
    try:
        assert sampler.sample(slow=True).gpus[0].pcie.tx_bytes_per_s is None
        sampler.want_pcie()
        assert sampler.sample(slow=True).gpus[0].pcie.tx_bytes_per_s == 9328 * 1024
    finally:
        sampler.close()


def build_sampler_from(opened):
    from monitoring.telemetry.host import HostSampler, read_host_info
    from monitoring.telemetry.sampler import Sampler

    return Sampler(
        opened.source,
        host_info=read_host_info(),
        host_sampler=HostSampler(),
        no_source=opened.no_source,
    )
