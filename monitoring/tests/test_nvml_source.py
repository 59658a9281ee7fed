"""NvmlSource over the real H100 captures (through CapturedNvml), and variants derived from them."""

from __future__ import annotations

import pytest

from monitoring.telemetry import schema
from monitoring.telemetry.errors import DriverMismatch, SourceUnavailable
from monitoring.telemetry.nvml_capture import (
    MIG_XML,
    NOT_CAPTURED,
    CapturedNvml,
    capture_with_error,
    capture_with_pcie_counters,
    capture_with_value,
    capture_without,
    load_capture,
    multi_gpu,
    with_mig,
)
from monitoring.telemetry.nvml_processes import IMPOSSIBLE_VALUE, NO_RECENT_SAMPLE, UTIL_PENDING
from monitoring.telemetry.nvml_source import (
    DRIVER_MISMATCH_MESSAGE,
    NO_RESERVED_V1,
    PCIE_NEEDS_TWO,
    PCIE_OFF,
    NvmlSource,
    cuda_version_text,
)
from monitoring.telemetry.smi_xml import parse_smi_xml

SLOW_CALLS = (
    "nvmlDeviceGetPcieThroughput",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetEccMode",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetTemperatureThreshold",
)
# Energy as the capture's field 83 gave it. The dedicated call said 10,998,506 mJ: the same
# counter (mJ since the driver was loaded), read ~15 s earlier at ~724 W (the idle capture's
# gap, 1,167 J at ~82 W, is ~14 s too).
ENERGY_FIELD_J = 21882.071


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_source(capture: dict, clock: Clock | None = None) -> tuple[NvmlSource, CapturedNvml]:
    nvml = CapturedNvml(capture)
    return NvmlSource(nvml, clock=clock or Clock()), nvml


def test_it_reads_the_h100_under_load(h100):
    source, _ = open_source(load_capture(h100, "load"))
    reading = source.read(processes=True, slow=True)
    (gpu,) = reading.gpus
    assert gpu.state == schema.GPU_OK
    assert (gpu.name, gpu.architecture, gpu.pci_bus_id) == (
        "NVIDIA H100 80GB HBM3",
        "Hopper",
        "00000000:00:06.0",
    )
    assert gpu.uuid == "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"
    assert (gpu.utilization, gpu.memory_utilization) == (100, 33)
    assert gpu.temperature == 69
    assert gpu.power_usage == pytest.approx(696.797)
    assert gpu.power_limit == pytest.approx(700.0)
    # v2 excludes the 480 MiB the driver reserves (v1 would say 5214), as nvidia-smi does
    assert (gpu.memory_used, gpu.memory_total, gpu.memory_reserved) == (4734, 81559, 480)
    assert (gpu.clocks.sm, gpu.clocks.memory, gpu.clocks.sm_max) == (1350, 2619, 1980)
    assert gpu.performance_state == "P0"
    assert gpu.clock_event_reasons == ["sw_power_cap"]
    assert gpu.temperature_memory == 71
    assert gpu.energy_joules == pytest.approx(ENERGY_FIELD_J)
    assert gpu.pcie.rx_bytes_per_s == 20647 * 1024
    assert gpu.ecc.enabled is True and gpu.ecc.volatile_uncorrected == 0
    assert (gpu.persistence_mode, gpu.mig_mode, gpu.compute_mode) == (True, False, "Default")
    procs = {p.pid: p for p in gpu.processes}
    assert {pid: p.used_memory_mib for pid, p in procs.items()} == {447: 1130, 448: 3590}
    assert procs[447].sm_utilization == 100 and procs[447].memory_utilization == 32
    assert procs[447].type == "compute" and procs[447].gpu_instance_id is None
    # pid 448 holds memory without computing: no sample, as nvidia-smi pmon shows "-"
    assert procs[448].sm_utilization is None
    assert procs[448].unsupported["sm_utilization"] == NO_RECENT_SAMPLE
    assert reading.messages == []


def test_it_reads_the_idle_h100_without_errors(h100):
    source, _ = open_source(load_capture(h100, "idle"))
    (gpu,) = source.read(processes=True, slow=True).gpus
    assert (gpu.utilization, gpu.temperature, gpu.memory_used) == (0, 46, 0)
    assert gpu.power_usage == pytest.approx(77.895)
    assert gpu.clock_event_reasons == ["gpu_idle"]
    assert gpu.processes == []
    assert "processes" not in gpu.unsupported


def test_it_reports_the_driver_stack(h100):
    source, _ = open_source(load_capture(h100, "idle"))
    driver = source.read().driver
    assert (driver.source, driver.status) == ("nvml", "ok")
    assert (driver.driver_version, driver.cuda_version, driver.nvml_version) == (
        "580.159.04",
        "13.0",
        "13.580.159.04",
    )
    assert cuda_version_text(12040) == "12.4"


def test_it_takes_no_utilization_sample_as_nothing_ran_not_as_an_error(h100):
    # idle H100 answered NotFound to process utilization; give it the load's processes:
    # processes that hold memory but ran nothing since the last query
    idle = load_capture(h100, "idle")
    procs = load_capture(h100, "load")["gpus"][0]["compute_procs"]["value"]
    source, nvml = open_source(capture_with_value(idle, key="compute_procs", value=procs))
    (gpu,) = source.read(processes=True).gpus
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 1
    assert len(gpu.processes) == 2
    assert all(p.sm_utilization is None for p in gpu.processes)
    assert "process_utilization" not in gpu.unsupported
    source.read(processes=True)
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 2  # NotFound is not remembered


def test_it_passes_the_last_seen_sample_time_per_gpu(h100):
    source, nvml = open_source(load_capture(h100, "load"))
    source.read(processes=True)
    assert nvml.last_args["nvmlDeviceGetProcessUtilization"] == (0,)
    source.read(processes=True)
    assert nvml.last_args["nvmlDeviceGetProcessUtilization"] == (1795412305701381,)


def test_it_drops_process_utilization_over_100(h100):
    # some drivers report garbage such as 4294967295 % for a process that just exited
    load = load_capture(h100, "load")
    samples = load["gpus"][0]["process_util"]["value"]
    samples[0]["smUtil"] = 4294967295
    source, _ = open_source(capture_with_value(load, key="process_util", value=samples))
    procs = {p.pid: p for p in source.read(processes=True).gpus[0].processes}
    assert procs[447].sm_utilization is None
    assert procs[447].unsupported["sm_utilization"] == IMPOSSIBLE_VALUE
    assert procs[447].memory_utilization == 32


def test_it_reads_process_utilization_on_the_slow_tier_only(h100):
    # the call costs ~2 ms on the H100 (nvml_load.json): not every process tick
    source, nvml = open_source(load_capture(h100, "load"))
    source.read(processes=True, slow=True)
    for _ in range(4):
        procs = {p.pid: p for p in source.read(processes=True, slow=False).gpus[0].processes}
        # fresh objects on every process tick, carrying the last reading's figures
        assert procs[447].sm_utilization == 100 and procs[447].memory_utilization == 32
        assert procs[448].unsupported["sm_utilization"] == NO_RECENT_SAMPLE
    assert nvml.calls["nvmlDeviceGetComputeRunningProcesses"] == 5
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 1
    source.read(processes=True, slow=True)
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 2


def test_it_averages_process_utilization_over_the_window_since_the_last_reading(h100):
    load = load_capture(h100, "load")
    (captured,) = load["gpus"][0]["process_util"]["value"]
    # the driver keeps every sample since the last-seen time: a 10 s window holds several
    window = [
        dict(captured, timeStamp=captured["timeStamp"] - 2_000_000 * n, smUtil=sm, memUtil=mem)
        for n, (sm, mem) in enumerate(((100, 32), (60, 20), (20, 8), (4294967295, 4)))
    ]
    source, nvml = open_source(capture_with_value(load, key="process_util", value=window))
    procs = {p.pid: p for p in source.read(processes=True, slow=True).gpus[0].processes}
    # the impossible 4294967295 % is left out of the mean, not clamped into it
    assert procs[447].sm_utilization == 60
    assert procs[447].memory_utilization == 16
    source.read(processes=True, slow=True)
    assert nvml.last_args["nvmlDeviceGetProcessUtilization"] == (captured["timeStamp"],)


def test_a_process_started_between_readings_waits_for_the_next_one(h100):
    load = load_capture(h100, "load")
    procs = load["gpus"][0]["compute_procs"]["value"]
    busy = [p for p in procs if p["pid"] == 447]
    source, nvml = open_source(capture_with_value(load, key="compute_procs", value=busy))
    (only,) = source.read(processes=True, slow=True).gpus[0].processes
    assert only.pid == 447 and only.sm_utilization == 100
    nvml.answer(0, "compute_procs", procs)  # pid 448 starts and takes memory
    new = {p.pid: p for p in source.read(processes=True, slow=False).gpus[0].processes}
    assert new[448].sm_utilization is None
    assert new[448].unsupported["sm_utilization"] == UTIL_PENDING
    assert new[447].sm_utilization == 100
    new = {p.pid: p for p in source.read(processes=True, slow=True).gpus[0].processes}
    # measured now: it holds memory but ran nothing
    assert new[448].unsupported["sm_utilization"] == NO_RECENT_SAMPLE


def test_it_does_not_ask_process_utilization_without_processes(h100):
    source, nvml = open_source(load_capture(h100, "idle"))
    source.read(processes=True, slow=True)
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 0


def test_it_merges_compute_and_graphics_processes_by_pid(h100):
    # a process using both APIs (e.g. an OpenGL viewer running CUDA) is listed twice by NVML
    load = load_capture(h100, "load")
    graphics = [
        dict(load["gpus"][0]["compute_procs"]["value"][1]),
        {
            "pid": 900,
            "usedGpuMemory": None,
            "gpuInstanceId": 4294967295,
            "computeInstanceId": 4294967295,
        },
    ]
    source, _ = open_source(capture_with_value(load, key="graphics_procs", value=graphics))
    procs = {p.pid: p for p in source.read(processes=True).gpus[0].processes}
    assert procs[447].type == "compute+graphics" and procs[447].used_memory_mib == 1130
    assert procs[448].type == "compute"
    # Windows WDDM reports no per-process memory: None with its reason, never 0
    assert procs[900].type == "graphics" and procs[900].used_memory_mib is None
    assert procs[900].unsupported["used_memory_mib"] == schema.WDDM_NO_MEMORY


def test_it_repeats_the_last_processes_on_ticks_without_them(h100):
    source, nvml = open_source(load_capture(h100, "load"))
    first = source.read(processes=True).gpus[0].processes
    again = source.read(processes=False, slow=False).gpus[0].processes
    assert [p.pid for p in again] == [p.pid for p in first]
    assert nvml.calls["nvmlDeviceGetComputeRunningProcesses"] == 1


def test_it_knows_a_board_without_fans_and_never_asks_their_speed(h100):
    source, nvml = open_source(load_capture(h100, "load"))
    for _ in range(50):
        gpu = source.read(processes=False, slow=False).gpus[0]
    assert gpu.fans == [] and gpu.fan_speed is None
    assert gpu.unsupported["fans"] == schema.NO_FANS
    assert nvml.calls["nvmlDeviceGetNumFans"] == 1
    assert nvml.calls["nvmlDeviceGetFanSpeed"] == nvml.calls["nvmlDeviceGetFanSpeed_v2"] == 0


def test_it_asks_an_unsupported_fan_once_then_remembers(h100):
    # an older driver without nvmlDeviceGetNumFans: the v1 call answers NotSupported (as on
    # this H100), asked once and never again
    capture = capture_with_error(
        load_capture(h100, "load"), gpu=0, key="num_fans", error="NVMLError_FunctionNotFound"
    )
    source, nvml = open_source(capture)
    for _ in range(50):
        gpu = source.read(processes=False, slow=False).gpus[0]
    assert nvml.calls["nvmlDeviceGetFanSpeed"] == 1
    assert gpu.fans == [] and gpu.unsupported["fans"] == schema.NOT_SUPPORTED


def test_it_reads_each_fan_of_a_board_that_has_them(h100):
    # a workstation board with two fans, the second of which does not answer
    capture = capture_with_value(load_capture(h100, "load"), key="num_fans", value=2)
    capture = capture_with_value(capture, key="fan_speed_0", value=0)
    source, nvml = open_source(capture)
    for _ in range(5):
        gpu = source.read(processes=False, slow=False).gpus[0]
    assert gpu.fans == [0, None]  # a fan at 0 % stays 0
    assert nvml.calls["nvmlDeviceGetFanSpeed_v2"] == 5 + 1  # fan 1 asked once


def test_it_leaves_slow_calls_off_the_hot_ticks(h100):
    source, nvml = open_source(load_capture(h100, "load"))
    source.read(processes=True, slow=True)
    before = {name: nvml.calls[name] for name in SLOW_CALLS}
    assert all(before.values())
    for _ in range(20):
        gpu = source.read(processes=False, slow=False).gpus[0]
    assert {name: nvml.calls[name] for name in SLOW_CALLS} == before
    # the last slow figures are repeated in between
    assert gpu.energy_joules == pytest.approx(ENERGY_FIELD_J)
    assert gpu.pcie.tx_bytes_per_s == 9328 * 1024 and gpu.clocks.sm_max == 1980
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 1


def test_it_reads_the_slow_tier_on_the_first_tick_even_if_not_asked(h100):
    source, _ = open_source(load_capture(h100, "load"))
    gpu = source.read(processes=False, slow=False).gpus[0]
    assert gpu.power_limit == pytest.approx(700.0)


def test_it_stops_asking_what_the_gpu_does_not_support(h100):
    source, nvml = open_source(load_capture(h100, "load"))
    for _ in range(10):
        gpu = source.read(processes=False, slow=True).gpus[0]
    assert nvml.calls["nvmlDeviceGetCurrPcieLinkGeneration"] == 1  # not in the capture
    assert gpu.pcie.gen_current is None
    # the capture never asked it: said as such, not as the H100 lacking a PCIe link
    assert gpu.unsupported["pcie_gen_current"] == NOT_CAPTURED
    assert gpu.unsupported["fans"] == "no fan of its own (passively cooled board)"  # NVML said


def test_it_initialises_nvml_once(h100):
    source, nvml = open_source(load_capture(h100, "load"))
    for i in range(30):
        source.read(processes=i % 2 == 0, slow=i % 10 == 0)
    assert nvml.calls["nvmlInit_v2"] + nvml.calls["nvmlInit"] == 1
    assert nvml.calls["nvmlDeviceGetHandleByIndex"] == 1
    assert nvml.calls["nvmlDeviceGetName"] == 1
    source.close()
    source.close()
    assert nvml.calls["nvmlShutdown"] == 1


def test_it_explains_a_driver_upgraded_without_reboot(h100):
    capture = capture_with_error(
        load_capture(h100, "idle"), key="init", error="NVMLError_LibRmVersionMismatch"
    )
    with pytest.raises(DriverMismatch) as caught:
        NvmlSource(CapturedNvml(capture))
    assert str(caught.value) == DRIVER_MISMATCH_MESSAGE
    assert "reboot" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        ("NVMLError_LibraryNotFound", "libnvidia-ml"),
        ("NVMLError_DriverNotLoaded", "kernel driver is not loaded"),
        ("NVMLError_NoPermission", "permission"),
    ],
)
def test_it_says_why_nvml_cannot_start(h100, error, words):
    capture = capture_with_error(load_capture(h100, "idle"), key="init", error=error)
    with pytest.raises(SourceUnavailable, match=words):
        NvmlSource(CapturedNvml(capture))


def test_it_says_no_gpu_when_the_driver_sees_none(h100):
    capture = capture_with_value(load_capture(h100, "idle"), key="count", value=0, gpu=None)
    nvml = CapturedNvml(capture)
    with pytest.raises(SourceUnavailable, match="No NVIDIA GPU found"):
        NvmlSource(nvml)
    assert nvml.initialised == 0  # shut down again


def test_it_marks_one_lost_gpu_and_recovers_it_after_back_off(h100):
    clock = Clock()
    source, nvml = open_source(multi_gpu(load_capture(h100, "load"), 2), clock)
    assert [g.state for g in source.read().gpus] == ["ok", "ok"]
    nvml.fail(1, error="NVMLError_GpuIsLost")  # fell off the bus
    reading = source.read(processes=True, slow=True)
    ok, lost = reading.gpus
    assert ok.state == schema.GPU_OK and ok.utilization == 100
    assert lost.state == schema.GPU_LOST and "GPU is lost" in lost.lost_reason
    assert lost.uuid is not None and lost.utilization is None
    assert any("GPU 1 is lost" in m for m in reading.messages)
    # retried by a fresh handle after 1 s, then 2 s, 4 s …, never before
    handle_calls = nvml.calls["nvmlDeviceGetHandleByUUID"]
    due = clock.now
    for wait in (1, 2, 4):
        due += wait
        clock.now = due - 0.01
        source.read()
        assert nvml.calls["nvmlDeviceGetHandleByUUID"] == handle_calls
        clock.now = due
        assert source.read().gpus[1].state == schema.GPU_LOST
        handle_calls += 1
        assert nvml.calls["nvmlDeviceGetHandleByUUID"] == handle_calls
    nvml.heal(1)
    clock.now += 8
    back = source.read(processes=True).gpus[1]
    assert back.state == schema.GPU_OK and back.lost_reason is None
    assert back.utilization == 100 and back.power_limit == pytest.approx(700.0)


def test_it_caps_the_back_off_at_a_minute(h100):
    clock = Clock()
    source, nvml = open_source(load_capture(h100, "idle"), clock)
    nvml.fail(0, error="NVMLError_Unknown")
    for _ in range(20):
        clock.now += 61
        source.read()
    calls = nvml.calls["nvmlDeviceGetHandleByUUID"]
    clock.now += 59
    source.read()
    assert nvml.calls["nvmlDeviceGetHandleByUUID"] == calls
    clock.now += 2
    source.read()
    assert nvml.calls["nvmlDeviceGetHandleByUUID"] == calls + 1


def test_it_opens_with_a_gpu_already_lost(h100):
    capture = multi_gpu(load_capture(h100, "idle"), 2)
    nvml = CapturedNvml(capture)
    nvml.fail(0, error="NVMLError_GpuNotFound")
    source = NvmlSource(nvml, clock=Clock())
    first, second = source.read().gpus
    assert first.state == schema.GPU_LOST and second.state == schema.GPU_OK


def test_it_marks_a_gpu_lost_mid_tick_on_any_call(h100):
    capture = capture_with_error(
        load_capture(h100, "load"), gpu=0, key="memory_v2", error="NVMLError_GpuIsLost"
    )
    source, _ = open_source(capture)
    gpu = source.read().gpus[0]
    assert gpu.state == schema.GPU_LOST


def test_it_keeps_a_transient_error_to_its_tick(h100):
    source, nvml = open_source(load_capture(h100, "load"))
    nvml.fail(0, "temperature", "NVMLError_Timeout")
    gpu = source.read().gpus[0]
    assert gpu.temperature is None and "Timeout" in gpu.unsupported["temperature"]
    nvml.heal(0, "temperature")
    gpu = source.read().gpus[0]
    assert gpu.temperature == 69 and "temperature" not in gpu.unsupported


def test_it_shows_no_utilization_under_mig_rather_than_zero(h100):
    # The slices are the real A100 MIG capture's (monitoring/captures/field/), and the same
    # figures come out of NVML here as out of that capture's nvidia-smi XML.
    source, nvml = open_source(with_mig(load_capture(h100, "load")))
    gpu = source.read(processes=True, slow=True).gpus[0]
    (xml_gpu,) = parse_smi_xml(MIG_XML.read_text()).gpus
    assert gpu.mig_mode is xml_gpu.mig_mode is True
    for field in ("utilization", "memory_utilization", "encoder_utilization"):
        assert getattr(gpu, field) is None is getattr(xml_gpu, field)
        assert gpu.unsupported[field] == xml_gpu.unsupported[field] == schema.MIG_UNAVAILABLE
    assert nvml.calls["nvmlDeviceGetUtilizationRates"] == 0
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 0
    assert (gpu.memory_used, gpu.memory_total) == (xml_gpu.memory_used, xml_gpu.memory_total)
    slices = [(m.gpu_instance_id, m.compute_instance_id, m.sm_count, m.memory_total,
               m.memory_used, m.memory_free) for m in gpu.mig_instances]  # fmt: skip
    assert slices == [(m.gpu_instance_id, m.compute_instance_id, m.sm_count, m.memory_total,
                       m.memory_used, m.memory_free) for m in xml_gpu.mig_instances]  # fmt: skip
    assert slices[0] == (3, 0, 14, 19968, 12, 19955) and len(slices) == 4
    assert all(m.uuid.startswith("MIG-") for m in gpu.mig_instances)
    for proc in gpu.processes:
        assert proc.sm_utilization is None
        assert proc.unsupported["sm_utilization"] == schema.MIG_UNAVAILABLE
        assert proc.gpu_instance_id == 3


def test_it_names_unified_memory_when_memory_is_not_supported(h100):
    # a Grace/Jetson-style unified-memory device answers NotSupported to both memory calls
    capture = capture_with_error(
        load_capture(h100, "load"), gpu=0, key="memory_v2", error="NVMLError_NotSupported"
    )
    capture = capture_with_error(capture, gpu=0, key="memory", error="NVMLError_NotSupported")
    source, nvml = open_source(capture)
    for _ in range(5):
        gpu = source.read(processes=False, slow=False).gpus[0]
    assert gpu.memory_used is gpu.memory_total is gpu.memory_free is None
    assert gpu.unsupported["memory_used"] == schema.UNIFIED_MEMORY
    assert gpu.memory_percent is None
    assert nvml.calls["nvmlDeviceGetMemoryInfo"] == 2  # v2 once, v1 once, then never


def test_it_falls_back_to_v1_memory_on_an_older_driver(h100):
    capture = capture_without(load_capture(h100, "load"), "memory_v2")
    source, _ = open_source(capture)
    gpu = source.read().gpus[0]
    assert gpu.memory_used == 5214  # v1 counts the reserved 480 MiB as used
    assert gpu.memory_reserved is None
    assert gpu.unsupported["memory_reserved"] == NO_RESERVED_V1


def test_it_falls_back_to_throttle_reasons_on_an_older_driver(h100):
    capture = capture_without(load_capture(h100, "load"), "clock_event_reasons")
    source, nvml = open_source(capture)
    for _ in range(3):
        gpu = source.read().gpus[0]
    assert gpu.clock_event_reasons == ["sw_power_cap"]
    assert "clock_event_reasons" not in gpu.unsupported
    assert nvml.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1


def test_it_warns_about_a_gpu_without_persistence_mode(h100):
    capture = capture_with_value(load_capture(h100, "idle"), key="persistence", value=0)
    source, _ = open_source(capture)
    reading = source.read()
    assert reading.gpus[0].persistence_mode is False
    assert any(m.startswith("GPU 0 runs without persistence mode:") for m in reading.messages)


def test_it_reads_nothing_after_close(h100):
    source, _ = open_source(load_capture(h100, "idle"))
    source.close()
    reading = source.read()
    assert reading.gpus == [] and reading.driver.status == schema.STATUS_ERROR


class OldPynvml:
    """nvidia-ml-py before 12.535, which lacks the clock-event call (only the throttle name)."""

    def __init__(self, nvml: CapturedNvml) -> None:
        self.nvml = nvml

    def __getattr__(self, name: str):
        if name == "nvmlDeviceGetCurrentClocksEventReasons":
            raise AttributeError(name)
        return getattr(self.nvml, name)


def test_it_works_with_an_older_nvidia_ml_py_missing_a_call(h100):
    nvml = CapturedNvml(load_capture(h100, "load"))
    source = NvmlSource(OldPynvml(nvml), clock=Clock())
    for _ in range(3):
        gpu = source.read().gpus[0]
    assert gpu.state == schema.GPU_OK
    assert gpu.clock_event_reasons == ["sw_power_cap"]
    assert nvml.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 3


# --- what each tier reads, and how often (issue 12) ------------------------------------------


def run_ticks(source: NvmlSource, clock: Clock, seconds: int, slow_every: int = 10) -> None:
    """``seconds`` ticks of 1 s as the worker makes them: processes every 2nd, slow every 10th."""
    for tick in range(seconds):
        clock.now += 1.0
        source.read(processes=tick % 2 == 0, slow=tick % slow_every == 0)


def test_what_never_changes_is_asked_once_at_open(h100):
    clock = Clock()
    source, nvml = open_source(load_capture(h100, "load"), clock)
    run_ticks(source, clock, 3 * 3600)
    gpu = source.read().gpus[0]
    assert gpu.clocks.sm_max == 1980 and gpu.temperature_slowdown == 89
    assert nvml.calls["nvmlDeviceGetMaxClockInfo"] == 3  # SM, memory, graphics: once each
    assert nvml.calls["nvmlDeviceGetTemperatureThreshold"] == 2  # slowdown, shutdown
    assert nvml.calls["nvmlDeviceGetMaxPcieLinkGeneration"] == 1


def test_energy_is_read_once_a_minute_from_the_counter_fields_not_its_own_call(h100):
    clock = Clock()
    source, nvml = open_source(load_capture(h100, "load"), clock)
    run_ticks(source, clock, 600)
    assert nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == 0
    assert nvml.calls["nvmlDeviceGetFieldValues"] == 10  # at the first tick, then every 60 s
    assert nvml.calls["nvmlDeviceGetEccMode"] == 10
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 60  # every slow tick: the "why"
    assert source.read(slow=False).gpus[0].energy_joules == pytest.approx(ENERGY_FIELD_J)


def test_a_driver_without_the_energy_field_gets_energy_from_its_own_call(h100):
    capture = load_capture(h100, "load")
    fields = [f for f in capture["gpus"][0]["field_values"]["value"] if f["fieldId"] != 83]
    clock = Clock()
    source, nvml = open_source(capture_with_value(capture, key="field_values", value=fields), clock)
    gpu = source.read().gpus[0]
    assert gpu.energy_joules == pytest.approx(10998.506)
    assert "energy_joules" not in gpu.unsupported
    run_ticks(source, clock, 120)
    assert nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == 3  # with the counters


def test_a_driver_without_field_values_reads_energy_and_pcie_by_their_own_calls(h100):
    capture = capture_with_error(
        load_capture(h100, "load"), key="field_values", error="NVMLError_NotSupported", gpu=0
    )
    clock = Clock()
    source, nvml = open_source(capture, clock)
    gpu = source.read().gpus[0]
    assert gpu.energy_joules == pytest.approx(10998.506)
    assert gpu.pcie.rx_bytes_per_s == 20647 * 1024
    assert gpu.temperature_memory is None and "temperature_memory" in gpu.unsupported
    assert "energy_joules" not in gpu.unsupported
    run_ticks(source, clock, 120)
    assert nvml.calls["nvmlDeviceGetFieldValues"] == 1  # asked once, remembered
    assert nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == 3


def test_pcie_throughput_without_byte_counters_is_sampled_on_its_own_tier(h100):
    clock = Clock()
    source, nvml = open_source(load_capture(h100, "load"), clock)
    gpu = source.read().gpus[0]  # the first tick reads everything
    assert gpu.pcie.tx_bytes_per_s == 9328 * 1024
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 2
    run_ticks(source, clock, 299)
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 2
    run_ticks(source, clock, 1)  # five minutes on
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 4


def test_pcie_throughput_is_read_while_someone_looks_at_it(h100):
    clock = Clock()
    nvml = CapturedNvml(load_capture(h100, "load"))
    source = NvmlSource(nvml, clock=clock, pcie_interval_s=0)
    gpu = source.read(slow=False).gpus[0]
    assert gpu.pcie.tx_bytes_per_s is None
    assert gpu.unsupported["pcie_tx_bytes_per_s"] == PCIE_OFF
    run_ticks(source, clock, 60)
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 0
    source.want_pcie(30)  # a viewer opened the GPU's detail
    run_ticks(source, clock, 60)
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 2 * 3  # slow ticks within 30 s
    gpu = source.read(slow=False).gpus[0]
    assert gpu.pcie.rx_bytes_per_s == 20647 * 1024
    assert "pcie_rx_bytes_per_s" not in gpu.unsupported


def test_pcie_throughput_comes_from_the_byte_counters_where_the_driver_has_them(h100):
    clock = Clock()
    capture = load_capture(h100, "load")
    source, nvml = open_source(capture_with_pcie_counters(capture, 10**12, 3 * 10**12), clock)
    gpu = source.read().gpus[0]
    assert gpu.pcie.tx_bytes_per_s is None
    assert gpu.unsupported["pcie_tx_bytes_per_s"] == PCIE_NEEDS_TWO
    tx, rx = 10**12 + 60 * 9_551_872, 3 * 10**12 + 60 * 21_142_528  # a minute at those rates
    nvml.answer(
        0,
        "field_values",
        capture_with_pcie_counters(capture, tx, rx)["gpus"][0]["field_values"]["value"],
    )
    clock.now += 60
    gpu = source.read(slow=False).gpus[0]
    assert (gpu.pcie.tx_bytes_per_s, gpu.pcie.rx_bytes_per_s) == (9_551_872, 21_142_528)
    assert "pcie_tx_bytes_per_s" not in gpu.unsupported
    run_ticks(source, clock, 600)
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 0  # the 20 ms call: never
