"""The NVML stand-in answers like pynvml, from the real H100 captures."""

from __future__ import annotations

import time

import pynvml
import pytest

from monitoring.telemetry.nvml_capture import (
    CapturedNvml,
    capture_with_error,
    load_capture,
    multi_gpu,
)
from monitoring.telemetry.nvml_source import NvmlSource
from monitoring.tests.conftest import CAPTURES, H100, STATES

# Per-GPU capture keys no source call reads, and why.
IGNORED_GPU_KEYS = {
    "memory": "v1 memory counts reserved memory as used; read only on drivers without v2",
    "throttle": "the older name of clock_event_reasons; read only when that is missing",
    "fan_speed": "v1 fan call; read only when the driver lacks nvmlDeviceGetNumFans",
    "fan_speed_0": "per-fan call; this board reports 0 fans so no fan is asked",
    "cuda_cc": "compute capability: not in the schema",
    "minor": "device node number: not in the schema",
    "xid_supported_events": "event mask: the monitor does not register for events",
    "bar1": "BAR1 aperture: not in the schema",
    "retired_pages_dbe": "page list; the monitor asks only whether retirement is pending",
    "power_violation": "violation counters: not in the schema",
    "thermal_violation": "violation counters: not in the schema",
    "display_active": "not in the schema",
    "board_part": "not in the schema",
    "brand": "not in the schema",
    "whole_sample_us": "a timing of the capture machine, not an NVML answer",
    "total_energy_mj": "energy comes from field 83 of the counter fields' call (the same "
    "counter, mJ since the driver loaded); this 3 ms call only on drivers without that field",
}
IGNORED_TOP_KEYS = {"init_ms", "pynvml_file", "psutil"}


def all_captures() -> list:
    return sorted(CAPTURES.glob("*/nvml_*.json"))


def test_it_finds_the_h100_captures():
    assert {p.name for p in all_captures()} >= {f"nvml_{s}.json" for s in STATES}


@pytest.mark.parametrize("path", all_captures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_it_reads_every_key_of_every_capture_or_says_why_not(path):
    nvml = CapturedNvml(path)
    source = NvmlSource(nvml)
    source.read(processes=True, slow=True)
    source.close()
    top = set(nvml.capture) - {"gpus"}
    assert top - IGNORED_TOP_KEYS == {"driver", "nvml", "cuda", "count"}
    for gpu in nvml.capture["gpus"]:
        unread = set(gpu) - set(nvml.keys) - set(IGNORED_GPU_KEYS)
        if not gpu["compute_procs"].get("value") and not gpu["graphics_procs"].get("value"):
            unread.discard("process_util")  # no process to attribute it to: not asked
        assert unread == set(), f"capture keys neither read nor ignored: {sorted(unread)}"


def test_it_answers_with_attribute_objects_like_pynvml(h100):
    nvml = CapturedNvml(load_capture(h100, "load"))
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlDeviceGetUtilizationRates(handle).gpu == 100
    mem = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    assert mem.reserved == 503316480
    assert nvml.nvmlDeviceGetMemoryInfo(handle).used == 5467734016  # v1 counts reserved
    procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    assert [(p.pid, p.usedGpuMemory) for p in procs] == [(448, 3764387840), (447, 1184890880)]
    assert not hasattr(procs[0], "resolved")  # pynvml structs have no such member
    assert nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) == 1350
    assert nvml.nvmlDeviceGetPcieThroughput(handle, pynvml.NVML_PCIE_UTIL_RX_BYTES) == 20647
    fields = nvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_MEMORY_TEMP, 66])
    assert (fields[0].nvmlReturn, fields[0].value.uiVal) == (0, 71)
    assert fields[1].nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED  # no NVLink on this VM


def test_it_raises_the_real_pynvml_exception_the_capture_names(h100):
    nvml = CapturedNvml(load_capture(h100, "idle"))
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetFanSpeed(handle)
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetProcessUtilization(handle, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # not in the capture
        nvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_VIDEO)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):  # not a call the stand-in knows
        nvml.nvmlDeviceGetGspFirmwareVersion(handle)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.NVMLError is pynvml.NVMLError
    assert nvml.NVML_TEMPERATURE_GPU == pynvml.NVML_TEMPERATURE_GPU


def test_it_counts_calls(h100):
    nvml = CapturedNvml(load_capture(h100, "idle"))
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    for _ in range(3):
        nvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
    assert nvml.calls["nvmlDeviceGetTemperature"] == 3
    assert nvml.keys["temperature"] == 3


def test_it_charges_the_recorded_cost_when_asked(h100):
    # pcie_tx took ~20.8 ms on the H100
    for charge, check in ((True, lambda s: s >= 0.02), (False, lambda s: s < 0.01)):
        nvml = CapturedNvml(load_capture(h100, "idle"), charge_cost=charge)
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        start = time.perf_counter()
        nvml.nvmlDeviceGetPcieThroughput(handle, pynvml.NVML_PCIE_UTIL_TX_BYTES)
        assert check(time.perf_counter() - start)


def test_it_injects_init_errors_as_a_driver_would(h100):
    capture = capture_with_error(
        load_capture(h100, "idle"), key="init", error="NVMLError_LibRmVersionMismatch"
    )
    nvml = CapturedNvml(capture)
    with pytest.raises(pynvml.NVMLError_LibRmVersionMismatch):
        nvml.nvmlInit()
    with pytest.raises(ValueError):
        capture_with_error(load_capture(h100, "idle"), key="init", error="NoSuchError")


def test_it_clones_the_gpu_for_multi_gpu_tests(h100):
    capture = multi_gpu(load_capture(h100, "idle"), 3)
    nvml = CapturedNvml(capture)
    nvml.nvmlInit()
    assert nvml.nvmlDeviceGetCount() == 3
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(3)]
    uuids = {nvml.nvmlDeviceGetUUID(h) for h in handles}
    buses = {nvml.nvmlDeviceGetPciInfo(h).busId for h in handles}
    assert len(uuids) == 3 and len(buses) == 3
    assert nvml.nvmlDeviceGetHandleByUUID(nvml.nvmlDeviceGetUUID(handles[2])) is handles[2]


def test_it_loses_and_heals_a_gpu_on_demand(h100):
    nvml = CapturedNvml(multi_gpu(load_capture(h100, "idle"), 2))
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(1)
    nvml.fail(1)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        nvml.nvmlDeviceGetHandleByIndex(1)
    assert nvml.nvmlDeviceGetTemperature(nvml.nvmlDeviceGetHandleByIndex(0), 0) == 46
    nvml.heal(1)
    assert nvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU) == 46


def test_it_keeps_who_ran_each_process_apart(h100):
    nvml = CapturedNvml(load_capture(h100, "load"))
    assert nvml.resolved(0, 447) == {"name": "python3", "user": "root", "cmd": ["python3", "-"]}
    assert nvml.resolved(0, 1) is None
    assert nvml.resolved(5, 447) is None


def test_h100_constant_points_at_the_captures():
    assert (H100 / "nvml_idle.json").is_file()
