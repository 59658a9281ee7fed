"""nvtop -s: the derived H100 snapshots against the NVML captures they came from, the
variants older nvtop versions print (derived from them), and NvtopSource driving a fake
``nvtop`` executable for real."""

from __future__ import annotations

import json
import re
import stat
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.telemetry import schema
from monitoring.telemetry.errors import ParseError, SourceUnavailable
from monitoring.telemetry.nvtop import (
    INTEGRATED_FAN_REASON,
    MEMORY_UTILIZATION_REASON,
    NO_GPU_MESSAGE,
    PROCESSES_NOTE,
    REPAIRED_JSON_MESSAGE,
    NvtopSource,
    parse_nvtop_snapshot,
)
from monitoring.tests.conftest import H100, STATES

NVTOP = Path(__file__).resolve().parents[1] / "captures" / "nvtop"
MIB = 1024 * 1024


def _text(state: str) -> str:
    return (NVTOP / f"nvtop_s_{state}.json").read_text()


def _nvml(state: str) -> dict:
    return json.loads((H100 / f"nvml_{state}.json").read_text())["gpus"][0]


def _devices(state: str) -> list[dict]:
    return json.loads(_text(state))


# --- the derived H100 snapshots ----------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_it_reads_the_h100_figures_the_capture_holds(state: str) -> None:
    nvml = _nvml(state)
    reading = parse_nvtop_snapshot(_text(state))
    assert reading.driver.source == schema.SOURCE_NVTOP
    assert reading.driver.status == schema.STATUS_OK
    assert reading.driver.driver_version is None
    [gpu] = reading.gpus
    assert gpu.index == 0
    assert gpu.name == nvml["name"]["value"] == "NVIDIA H100 80GB HBM3"
    assert gpu.temperature == nvml["temperature"]["value"]
    assert gpu.utilization == nvml["utilization"]["value"]["gpu"]
    memory = nvml["memory"]["value"]
    assert abs(gpu.memory_total - memory["total"] / MIB) <= 1
    assert abs(gpu.memory_used - memory["used"] / MIB) <= 1
    assert abs(gpu.memory_free - memory["free"] / MIB) <= 1
    assert abs(gpu.power_usage - nvml["power_usage_mw"]["value"] / 1000) < 1
    assert gpu.clocks.graphics == nvml["clock_graphics"]["value"]
    assert gpu.clocks.memory == nvml["clock_mem"]["value"]
    assert gpu.encoder_utilization == nvml["encoder"]["value"][0]
    assert gpu.decoder_utilization == nvml["decoder"]["value"][0]


def test_it_tells_idle_from_load() -> None:
    idle, load = (parse_nvtop_snapshot(_text(s)).gpus[0] for s in ("idle", "load"))
    assert (idle.utilization, load.utilization) == (0, 100)
    assert idle.power_usage < 100 < 600 < load.power_usage
    assert idle.memory_used < load.memory_used


def test_it_keeps_the_fanless_h100_fan_missing_not_zero() -> None:
    gpu = parse_nvtop_snapshot(_text("load")).gpus[0]
    assert gpu.fans == []
    assert gpu.fan_speed is None
    assert gpu.unsupported["fans"] == schema.NOT_SUPPORTED


def test_it_does_not_take_mem_util_for_memory_controller_activity() -> None:
    # nvtop's mem_util is used * 100 / total (6 % here); NVML's controller figure was 33 %.
    assert _devices("load")[0]["mem_util"] == "6%"
    gpu = parse_nvtop_snapshot(_text("load")).gpus[0]
    assert gpu.memory_utilization is None
    assert gpu.unsupported["memory_utilization"] == MEMORY_UTILIZATION_REASON


def test_it_marks_what_nvtop_never_gives_as_not_reported() -> None:
    gpu = parse_nvtop_snapshot(_text("idle")).gpus[0]
    for field in ("uuid", "pci_bus_id", "power_limit", "performance_state", "clocks.sm"):
        assert gpu.unsupported[field] == schema.NOT_REPORTED
    assert gpu.uuid is None and gpu.power_limit is None and gpu.clocks.sm is None


def test_it_reads_the_processes_of_the_load_capture() -> None:
    nvml = _nvml("load")
    gpu = parse_nvtop_snapshot(_text("load")).gpus[0]
    assert gpu.processes_note is None
    by_pid = {proc.pid: proc for proc in gpu.processes}
    compute = {p["pid"]: p for p in nvml["compute_procs"]["value"]}
    assert set(by_pid) == set(compute) == {447, 448}
    for pid, info in compute.items():
        proc = by_pid[pid]
        assert proc.gpu_index == 0
        assert proc.type == "compute"
        assert proc.name == "python3"
        assert proc.user == info["resolved"]["user"]
        assert abs(proc.used_memory_mib - info["usedGpuMemory"] / MIB) <= 1
        assert proc.command is None  # left to attribution, which redacts
    busy = nvml["process_util"]["value"][0]
    assert by_pid[busy["pid"]].sm_utilization == busy["smUtil"] == 100
    assert by_pid[448].sm_utilization == 0  # no sample since the last query: nvtop says 0 %


def test_it_lists_no_processes_on_the_idle_gpu() -> None:
    gpu = parse_nvtop_snapshot(_text("idle")).gpus[0]
    assert gpu.processes == [] and gpu.processes_note is None


# --- variants other nvtop versions and devices print (derived from the H100 file) --------


def _with(state: str, **changes: object) -> str:
    devices = _devices(state)
    for key, value in changes.items():
        if value is ...:
            devices[0].pop(key, None)
        else:
            devices[0][key] = value
    return json.dumps(devices, indent=2)


def _as_nvtop_3_2(state: str) -> str:
    """nvtop 3.2.x printed only the first eight keys (no memory bytes, codecs, processes)."""
    drop = ("encode", "decode", "mem_total", "mem_used", "mem_free", "processes")
    return _with(state, **dict.fromkeys(drop, ...))


def test_it_reads_nvtop_3_2_which_gives_no_memory_sizes_nor_processes() -> None:
    gpu = parse_nvtop_snapshot(_as_nvtop_3_2("load")).gpus[0]
    assert gpu.temperature == 69 and gpu.utilization == 100
    assert gpu.memory_used is None and gpu.memory_total is None
    assert gpu.unsupported["memory_used"] == schema.NOT_REPORTED
    assert gpu.unsupported["encoder_utilization"] == schema.NOT_REPORTED
    assert gpu.processes == [] and gpu.processes_note == PROCESSES_NOTE


def test_it_repairs_the_missing_commas_of_nvtop_3_3_0() -> None:
    # nvtop 3.3.0/3.3.1 printed mem_total/used/free without the commas before them
    # (upstream issues #438, #444); reproduce that on the derived load file.
    devices = _devices("load")
    for key in ("encode", "decode", "processes"):
        devices[0].pop(key)
    text = json.dumps(devices, indent=2)
    broken = re.sub(r'("(?:mem_util|mem_total|mem_used)": "[^"]*"),', r"\1", text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    reading = parse_nvtop_snapshot(broken)
    assert reading.messages == [REPAIRED_JSON_MESSAGE]
    gpu = reading.gpus[0]
    assert abs(gpu.memory_used - 5467734016 / MIB) <= 1
    assert gpu.utilization == 100


def test_it_keeps_a_real_zero_fan_at_zero() -> None:
    gpu = parse_nvtop_snapshot(_with("idle", fan_speed="0%")).gpus[0]
    assert gpu.fans == [0] and gpu.fan_speed == 0
    assert "fans" not in gpu.unsupported


@pytest.mark.parametrize(
    ("fan", "reason"),
    [("1179RPM", "RPM only"), ("CPU Fan", INTEGRATED_FAN_REASON)],
)
def test_it_explains_fans_that_give_no_percentage(fan: str, reason: str) -> None:
    # Intel Arc boards print RPM, integrated GPUs "CPU Fan" (upstream issues #371, #358).
    gpu = parse_nvtop_snapshot(_with("idle", fan_speed=fan)).gpus[0]
    assert gpu.fans == []
    assert reason in gpu.unsupported["fans"]


def test_it_keeps_devices_of_other_vendors_in_nvtop_order() -> None:
    # nvtop also lists AMD/Intel GPUs; an integrated one has no fan of its own.
    devices = _devices("idle") * 2
    devices[1] = {**devices[1], "device_name": "AMD Radeon 780M Graphics", "fan_speed": "CPU Fan"}
    reading = parse_nvtop_snapshot(json.dumps(devices))
    assert [g.index for g in reading.gpus] == [0, 1]
    assert reading.gpus[1].name == "AMD Radeon 780M Graphics"


def test_it_reads_a_shared_encode_decode_engine_for_both() -> None:
    text = _with("idle", encode=..., decode=..., encode_decode="12%")
    gpu = parse_nvtop_snapshot(text).gpus[0]
    assert gpu.encoder_utilization == gpu.decoder_utilization == 12


def test_it_converts_fahrenheit_back() -> None:
    # nvtop -f prints "156F" for the 69 °C of the load capture.
    gpu = parse_nvtop_snapshot(_with("load", temp="156F")).gpus[0]
    assert gpu.temperature == 69


def test_it_records_nulls_as_not_supported() -> None:
    gpu = parse_nvtop_snapshot(_with("idle", power_draw=None, gpu_clock=None)).gpus[0]
    assert gpu.power_usage is None and gpu.clocks.graphics is None
    assert gpu.unsupported["power_usage"] == schema.NOT_SUPPORTED
    assert gpu.unsupported["clocks.graphics"] == schema.NOT_SUPPORTED


def test_it_notes_an_unreadable_figure_without_failing() -> None:
    gpu = parse_nvtop_snapshot(_with("idle", temp="hot", mem_used="9" * 400)).gpus[0]
    assert gpu.temperature is None and gpu.memory_used is None
    assert "hot" in gpu.unsupported["temperature"]
    assert "unreadable" in gpu.unsupported["memory_used"]


@pytest.mark.parametrize("text", ["No GPU to monitor.\n", "[\n]\n", "[]"])
def test_it_reads_no_gpu_as_such(text: str) -> None:
    reading = parse_nvtop_snapshot(text)
    assert reading.gpus == []
    assert reading.driver.status == schema.STATUS_NO_GPU
    assert reading.driver.message == NO_GPU_MESSAGE


@pytest.mark.parametrize(
    "text",
    ["", "{}", '"x"', "[1]", '[{"temp": []}]', '[{"processes": {}}]', '[{"processes": [{}]}]'],
)
def test_it_rejects_what_is_not_an_nvtop_snapshot(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_nvtop_snapshot(text, origin="here")
    assert caught.value.origin == "here"


def _parses_or_parse_error(text: str) -> None:
    try:
        reading = parse_nvtop_snapshot(text)
    except ParseError:
        return
    assert isinstance(reading, schema.GpuReading)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_random_text_only_parses_or_raises_parse_error(text: str) -> None:
    _parses_or_parse_error(text)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["temp", "fan_speed", "mem_used", "processes", "pid", "kind", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(st.lists(_JSONISH, max_size=3))
def test_random_json_arrays_only_parse_or_raise_parse_error(devices: list) -> None:
    _parses_or_parse_error(json.dumps(devices))


@pytest.mark.parametrize("state", STATES)
def test_truncated_real_output_only_parses_or_raises_parse_error(state: str) -> None:
    text = _text(state)
    for end in range(len(text)):
        _parses_or_parse_error(text[:end])


# --- NvtopSource over a fake nvtop -------------------------------------------------------


@pytest.fixture
def fake_nvtop(tmp_path: Path) -> Path:
    """An executable that behaves as the ``mode`` file beside it says, counting its calls."""
    script = tmp_path / "nvtop"
    script.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys, time\n"
        "here = pathlib.Path(__file__).parent\n"
        "with open(here / 'calls', 'a') as calls:\n"
        "    calls.write('x')\n"
        "assert sys.argv[1:] == ['-s'], sys.argv\n"
        "mode = (here / 'mode').read_text().strip()\n"
        "if mode == 'sleep':\n"
        "    time.sleep(30)\n"
        "elif mode == 'fail':\n"
        "    print('nvtop: could not initialise', file=sys.stderr)\n"
        "    sys.exit(1)\n"
        "elif mode == 'nogpu':\n"
        "    print('No GPU to monitor.')\n"
        "elif mode == 'empty':\n"
        "    print('[\\n]')\n"
        "else:\n"
        "    sys.stdout.write(pathlib.Path(mode).read_text())\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    _mode(script, str(NVTOP / "nvtop_s_load.json"))
    return script


def _mode(script: Path, mode: str) -> None:
    (script.parent / "mode").write_text(mode)


def _calls(script: Path) -> int:
    path = script.parent / "calls"
    return len(path.read_text()) if path.exists() else 0


def test_the_source_reads_the_gpus_nvtop_prints(fake_nvtop: Path) -> None:
    source = NvtopSource(binary=str(fake_nvtop))
    assert source.name == "nvtop" and source.attributes_processes is False
    reading = source.read()
    assert reading.driver.status == schema.STATUS_OK
    assert reading.gpus[0].temperature == 69
    assert {p.pid for p in reading.gpus[0].processes} == {447, 448}
    source.close()
    source.close()


def test_the_source_spawns_nvtop_at_most_every_interval(fake_nvtop: Path) -> None:
    source = NvtopSource(binary=str(fake_nvtop), min_interval_s=0.3)
    assert _calls(fake_nvtop) == 1  # the check at construction
    first = source.read()
    source.read()
    assert _calls(fake_nvtop) == 1  # both repeated the reading taken at construction
    _mode(fake_nvtop, str(NVTOP / "nvtop_s_idle.json"))
    time.sleep(0.35)
    later = source.read()
    assert _calls(fake_nvtop) == 2
    assert first.gpus[0].utilization == 100 and later.gpus[0].utilization == 0


def test_the_source_leaves_processes_out_when_not_asked(fake_nvtop: Path) -> None:
    source = NvtopSource(binary=str(fake_nvtop))
    assert source.read(processes=False).gpus[0].processes == []
    assert len(source.read(processes=True).gpus[0].processes) == 2  # cache left intact


def test_a_timeout_becomes_an_error_reading(fake_nvtop: Path) -> None:
    source = NvtopSource(binary=str(fake_nvtop), timeout_s=0.5, min_interval_s=0)
    _mode(fake_nvtop, "sleep")
    started = time.monotonic()
    reading = source.read()
    assert time.monotonic() - started < 5
    assert reading.driver.status == schema.STATUS_ERROR
    assert reading.driver.source == schema.SOURCE_NVTOP
    assert "did not answer within 0.5 s" in reading.driver.message
    assert reading.gpus == []


def test_a_failing_nvtop_becomes_an_error_reading(fake_nvtop: Path) -> None:
    source = NvtopSource(binary=str(fake_nvtop), min_interval_s=0)
    _mode(fake_nvtop, "fail")
    reading = source.read()
    assert reading.driver.status == schema.STATUS_ERROR
    assert "exited with status 1: nvtop: could not initialise" in reading.driver.message


def test_garbage_at_a_later_read_becomes_an_error_reading(fake_nvtop: Path, tmp_path) -> None:
    source = NvtopSource(binary=str(fake_nvtop), min_interval_s=0)
    garbage = tmp_path / "garbage.json"
    garbage.write_text(_text("load")[:200])
    _mode(fake_nvtop, str(garbage))
    reading = source.read()
    assert reading.driver.status == schema.STATUS_ERROR
    assert "invalid JSON" in reading.driver.message


def test_a_missing_binary_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="nvtop not found"):
        NvtopSource(binary=str(tmp_path / "no-such-nvtop"))


@pytest.mark.parametrize("mode", ["empty", "nogpu"])
def test_nvtop_without_gpus_is_unavailable(fake_nvtop: Path, mode: str) -> None:
    _mode(fake_nvtop, mode)
    with pytest.raises(SourceUnavailable, match=NO_GPU_MESSAGE):
        NvtopSource(binary=str(fake_nvtop))


def test_nvtop_failing_at_construction_is_unavailable(fake_nvtop: Path) -> None:
    _mode(fake_nvtop, "fail")
    with pytest.raises(SourceUnavailable, match="exited with status 1"):
        NvtopSource(binary=str(fake_nvtop))
