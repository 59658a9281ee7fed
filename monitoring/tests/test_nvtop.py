"""nvtop -s: real outputs from nvtop's users (AMD, Intel, Apple and NVIDIA; nvtop 3.2 to
3.3.1 and the Apple M2 Max snapshot), the derived H100 snapshots only where they are checked
against the NVML captures they came from, and NvtopSource driving a fake ``nvtop``
executable for real."""

from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.telemetry import nvtop as nvtop_module
from monitoring.telemetry import schema
from monitoring.telemetry.errors import ParseError, SourceUnavailable
from monitoring.telemetry.nvtop import (
    INTEGRATED_FAN_REASON,
    MEMORY_UTILIZATION_REASON,
    NO_CMDLINE_REASON,
    NO_GPU_MESSAGE,
    PROCESSES_NOTE,
    REPAIRED_JSON_MESSAGE,
    NvtopSource,
    parse_nvtop_snapshot,
)
from monitoring.telemetry.select import SourceOptions, open_gpu_source
from monitoring.telemetry.vendor import UNKNOWN_REASON
from monitoring.tests.conftest import FIELD, H100, STATES

NVTOP = Path(__file__).resolve().parents[1] / "captures" / "nvtop"
MIB = 1024 * 1024
#: Real nvtop -s outputs (monitoring/captures/field/README.md says where each came from).
M2_MAX = FIELD / "nvtop-apple-m2-max.json"
AMD = FIELD / "nvtop-3.2-amd-ryzen-igpu-rx7900xtx.json"
NVIDIA_INTEL = FIELD / "nvtop-3.2-nvidia-gtx1060-intel-battlemage.json"
ARC = FIELD / "nvtop-3.2-intel-arc-a770.json"
BROKEN_3_3_1 = FIELD / "nvtop-3.3.1-nvidia-gtx1650ti-intel-uhd.json"
REAL = (M2_MAX, AMD, NVIDIA_INTEL, ARC, BROKEN_3_3_1)


def _real(path: Path) -> schema.GpuReading:
    return parse_nvtop_snapshot(path.read_text(), origin=path.name)


def _text(state: str) -> str:
    return (NVTOP / f"nvtop_s_{state}.json").read_text()


def _nvml(state: str) -> dict:
    return json.loads((H100 / f"nvml_{state}.json").read_text())["gpus"][0]


def _devices(state: str) -> list[dict]:
    return json.loads(_text(state))


# --- the derived H100 snapshots agree with the NVML captures they came from -----------


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


# --- real outputs: every vendor, every version -------------------------------------------


def test_it_reads_the_apple_m2_max_with_its_processes_once_each() -> None:
    (gpu,) = _real(M2_MAX).gpus
    assert (gpu.name, gpu.vendor) == ("Apple M2 Max", "apple")
    assert gpu.utilization == 0 and gpu.memory_total == 65536
    assert gpu.memory_used == round(7142440960 / MIB) and gpu.memory_free == round(
        61577035776 / MIB
    )
    assert gpu.temperature is None and gpu.unsupported["temperature"] == schema.NOT_SUPPORTED
    assert gpu.fans == [] and gpu.unsupported["fans"] == INTEGRATED_FAN_REASON
    # nvtop listed pid 610 twice: one process, one row
    assert [(p.pid, p.user, p.type) for p in gpu.processes] == [
        (609, "root", "compute+graphics"),
        (610, "_windowserver", "compute+graphics"),
    ]
    for proc in gpu.processes:  # cmdline null: no name, and why
        assert proc.name is None and proc.unsupported["name"] == NO_CMDLINE_REASON
        assert proc.used_memory_mib is None and proc.sm_utilization is None


def test_it_reads_nvtop_3_2_which_gives_no_memory_sizes_nor_processes() -> None:
    reading = _real(AMD)
    ryzen, radeon = reading.gpus
    assert (radeon.name, radeon.vendor) == ("AMD Radeon RX 7900 XTX", "amd")
    assert (radeon.utilization, radeon.temperature, radeon.power_usage) == (73, 51, 117.0)
    assert (radeon.clocks.graphics, radeon.clocks.memory, radeon.fans) == (1230, 1249, [14])
    assert radeon.memory_used is None and radeon.unsupported["memory_used"] == schema.NOT_REPORTED
    assert radeon.unsupported["encoder_utilization"] == schema.NOT_REPORTED
    assert radeon.processes == [] and radeon.processes_note == PROCESSES_NOTE
    # An AMD APU's GPU carries the CPU's name: still AMD, cooled by the CPU fan.
    assert (ryzen.vendor, ryzen.unsupported["fans"]) == ("amd", INTEGRATED_FAN_REASON)


def test_it_does_not_take_mem_util_for_memory_controller_activity() -> None:
    # nvtop's mem_util is occupancy (used * 100 / total): 31 % on the GTX 1060.
    nvidia, _ = _real(NVIDIA_INTEL).gpus
    assert json.loads(NVIDIA_INTEL.read_text())[0]["mem_util"] == "31%"
    assert nvidia.memory_utilization is None
    assert nvidia.unsupported["memory_utilization"] == MEMORY_UTILIZATION_REASON


def test_it_marks_what_nvtop_never_gives_as_not_reported() -> None:
    gpu = _real(ARC).gpus[0]
    for field in ("uuid", "pci_bus_id", "power_limit", "performance_state", "clocks.sm"):
        assert gpu.unsupported[field] == schema.NOT_REPORTED
    assert gpu.uuid is None and gpu.power_limit is None and gpu.clocks.sm is None


def test_it_keeps_gpus_of_every_vendor_in_nvtop_order_marked_by_vendor() -> None:
    nvidia, intel = _real(NVIDIA_INTEL).gpus
    assert [(g.index, g.vendor) for g in (nvidia, intel)] == [(0, "nvidia"), (1, "intel")]
    assert intel.name == "Battlemage G31 (Intel Graphics)"
    assert (intel.temperature, intel.clocks.graphics) == (59, 2800)
    # nulls are what the Intel driver did not give, not zeros
    assert intel.utilization is None and intel.unsupported["utilization"] == schema.NOT_SUPPORTED
    assert intel.power_usage is None and intel.unsupported["power_usage"] == schema.NOT_SUPPORTED
    assert "RPM only (1061RPM)" in intel.unsupported["fans"]
    assert _real(ARC).gpus[0].vendor == "intel"


def test_a_gpu_whose_name_names_no_vendor_says_so() -> None:
    # hand-built: no real output with such a name is known
    (gpu,) = parse_nvtop_snapshot('[{"device_name": "Mystery 9000", "gpu_util": "5%"}]').gpus
    assert gpu.vendor is None and gpu.unsupported["vendor"] == UNKNOWN_REASON


def test_it_repairs_the_missing_commas_of_nvtop_3_3_1() -> None:
    # The real output of issue #444: commas missing before mem_total/used/free.
    with pytest.raises(json.JSONDecodeError):
        json.loads(BROKEN_3_3_1.read_text())
    reading = _real(BROKEN_3_3_1)
    assert reading.messages == [REPAIRED_JSON_MESSAGE]
    nvidia, intel = reading.gpus
    assert (nvidia.memory_total, nvidia.memory_used) == (4096, round(718798848 / MIB))
    assert nvidia.utilization == 32 and nvidia.fans == []
    assert (intel.vendor, intel.memory_total, intel.memory_used) == ("intel", 15766, None)
    assert intel.unsupported["fans"] == INTEGRATED_FAN_REASON


def test_it_keeps_a_real_zero_fan_at_zero() -> None:
    nvidia, _ = _real(NVIDIA_INTEL).gpus
    assert nvidia.fans == [0] and nvidia.fan_speed == 0
    assert "fans" not in nvidia.unsupported


def _with(state: str, **changes: object) -> str:
    """The derived H100 file with some keys changed (``...`` drops a key): for the cases no
    real output shows."""
    devices = _devices(state)
    for key, value in changes.items():
        if value is ...:
            devices[0].pop(key, None)
        else:
            devices[0][key] = value
    return json.dumps(devices, indent=2)


def test_it_reads_a_shared_encode_decode_engine_for_both() -> None:
    # hand-built on the derived file: the real outputs print encode_decode only as null
    text = _with("idle", encode=..., decode=..., encode_decode="12%")
    gpu = parse_nvtop_snapshot(text).gpus[0]
    assert gpu.encoder_utilization == gpu.decoder_utilization == 12
    (m2,) = _real(M2_MAX).gpus
    assert m2.encoder_utilization is None is m2.decoder_utilization


def test_it_converts_fahrenheit_back() -> None:
    # hand-built: nvtop -f prints "156F" for the 69 °C of the load capture; no real output
    gpu = parse_nvtop_snapshot(_with("load", temp="156F")).gpus[0]
    assert gpu.temperature == 69


def test_it_notes_an_unreadable_figure_without_failing() -> None:
    # hand-built: a figure no nvtop prints
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


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_truncated_real_output_only_parses_or_raises_parse_error(path: Path) -> None:
    text = path.read_text()
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
    _mode(script, str(M2_MAX))
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
    assert (reading.gpus[0].name, reading.gpus[0].vendor) == ("Apple M2 Max", "apple")
    assert [p.pid for p in reading.gpus[0].processes] == [609, 610]
    source.close()
    source.close()


def test_the_source_spawns_nvtop_at_most_every_interval(fake_nvtop: Path) -> None:
    source = NvtopSource(binary=str(fake_nvtop), min_interval_s=0.3)
    assert _calls(fake_nvtop) == 1  # the check at construction
    first = source.read()
    source.read()
    assert _calls(fake_nvtop) == 1  # both repeated the reading taken at construction
    _mode(fake_nvtop, str(AMD))
    time.sleep(0.35)
    later = source.read()
    assert _calls(fake_nvtop) == 2
    assert [g.vendor for g in first.gpus] == ["apple"]
    assert [g.vendor for g in later.gpus] == ["amd", "amd"]


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
    garbage.write_text(M2_MAX.read_text()[:200])
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


def test_nvtop_is_found_where_homebrew_puts_it(fake_nvtop: Path, monkeypatch) -> None:
    # A service on a Mac gets a PATH without /opt/homebrew/bin: nvtop is still found there.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(nvtop_module, "EXTRA_NVTOP_DIRS", (str(fake_nvtop.parent),))
    source = NvtopSource()
    assert source.path == str(fake_nvtop)
    assert source.read().gpus[0].vendor == "apple"


def test_auto_finds_nvtop_where_there_is_no_nvidia_driver(fake_nvtop: Path, monkeypatch) -> None:
    # As on a Mac: NVML has no library here (the real pynvml fails to load it), nvidia-smi
    # is not installed, nvtop is: auto settles on nvtop and shows the Apple GPU.
    monkeypatch.setenv("PATH", str(fake_nvtop.parent))
    opened = open_gpu_source("auto", SourceOptions(nvidia_smi="nvidia-smi-not-installed"))
    if opened.source is not None and opened.source.name == "nvml":
        opened.source.close()
        pytest.skip("this machine has an NVIDIA driver: NVML comes first, as it should")
    try:
        assert opened.source is not None and opened.source.name == "nvtop"
        assert [n.split(":")[0] for n in opened.notes] == ["nvml", "nvidia-smi"]
        assert opened.source.read().gpus[0].vendor == "apple"
    finally:
        opened.source.close()
