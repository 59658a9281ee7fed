"""Real outputs from other monitors' users: each gives what monitoring/captures/field/README.md
says a user must get, read the way a user reads them (``collect --from-file``, or NVML)."""

from __future__ import annotations

import json

import pytest

from monitoring.telemetry import schema
from monitoring.telemetry.capture_file import read_capture_file
from monitoring.telemetry.decoding import REPLACEMENT
from monitoring.telemetry.nvml_capture import CapturedNvml, load_capture
from monitoring.telemetry.nvml_source import READ_FAILED, NvmlSource
from monitoring.telemetry.nvtop import NO_CMDLINE_REASON
from monitoring.tests.conftest import FIELD, H100
from monitoring.tests.helpers import collect


def test_a_dgx_spark_csv_without_name_or_uuid_is_read_with_unified_memory():
    reading = read_capture_file(FIELD / "gb10-unified-memory-na.csv")
    (gpu,) = reading.gpus
    assert (gpu.utilization, gpu.power_usage, gpu.temperature) == (0, 11.17, 35)
    for field in ("memory_total", "memory_used", "memory_free"):
        assert getattr(gpu, field) is None
        assert gpu.unsupported[field] == schema.UNIFIED_MEMORY
    assert gpu.memory_percent is None
    assert gpu.identity == "index:0"  # no uuid, no bus id: its index, the same every time
    assert read_capture_file(FIELD / "gb10-unified-memory-na.csv").gpus[0].identity == "index:0"


def test_a_windows_process_name_in_gbk_costs_its_characters_only():
    reading = read_capture_file(FIELD / "windows-gbk-process-name.xml")
    (gpu,) = reading.gpus
    assert (gpu.name, gpu.utilization, gpu.memory_used, gpu.memory_total) == (
        "GeForce GTX 1060 6GB", 2, 512, 6144)  # fmt: skip
    assert (gpu.temperature, gpu.power_usage, gpu.fans, gpu.performance_state) == (
        41, 9.84, [28], "P8")  # fmt: skip
    explorer, manager = gpu.processes
    assert (explorer.pid, explorer.name) == (1234, r"C:\Windows\explorer.exe")
    assert manager.pid == 5678 and manager.type == "compute+graphics"
    assert manager.name.startswith("C:\\Program Files (x86)\\Tencent\\QQPCMgr\\")
    assert manager.name.endswith(".exe") and REPLACEMENT in manager.name
    assert manager.used_memory_mib is None  # N/A under WDDM, and said so
    assert manager.unsupported["used_memory_mib"] == schema.WDDM_NO_MEMORY
    assert any("not valid text" in m for m in reading.messages)


def test_driver_340_processes_under_compute_processes_are_read():
    (gpu,) = read_capture_file(FIELD / "driver340-compute-processes.xml").gpus
    assert [(p.pid, p.used_memory_mib, p.type) for p in gpu.processes] == [
        (5495, 98, "compute"),
        (5494, 98, "compute"),
    ]
    assert (gpu.name, gpu.utilization, gpu.memory_used, gpu.memory_total) == (
        "Tesla K20m", 4, 828, 4799)  # fmt: skip
    assert (gpu.temperature, gpu.temperature_slowdown, gpu.temperature_shutdown) == (32, 90, 95)
    assert (gpu.power_usage, gpu.power_limit, gpu.clocks.sm) == (48.05, 225.0, 705)


def test_a_gpu_fallen_off_the_bus_exits_2_relaying_nvidia_smis_words():
    result = collect("--from-file", str(FIELD / "smi-gpu-fell-off-bus.txt"))
    assert result.returncode == 2
    said = result.stderr.strip().splitlines()
    assert len(said) == 1, said
    assert "Unable to determine the device handle for GPU 0000:09:00.0: Unknown Error" in said[0]
    assert "stopped answering (fallen off the bus" in said[0]
    assert "not a recognised capture" not in said[0]


def test_the_apple_m2_max_snapshot_lists_each_process_once_without_names():
    result = collect("--from-file", str(FIELD / "nvtop-apple-m2-max.json"), "--json")
    assert result.returncode == 0, result.stderr
    (gpu,) = json.loads(result.stdout)["gpus"]
    assert (gpu["name"], gpu["vendor"]) == ("Apple M2 Max", "apple")
    assert [p["pid"] for p in gpu["processes"]] == [609, 610]
    assert all(p["name"] is None for p in gpu["processes"])
    assert all(p["unsupported"]["name"] == NO_CMDLINE_REASON for p in gpu["processes"])


def test_the_a100_mig_capture_shows_its_slices_and_no_false_zeros():
    (gpu,) = read_capture_file(FIELD / "a100-sxm4-mig-v12.xml").gpus
    assert [(m.gpu_instance_id, m.memory_total) for m in gpu.mig_instances] == [
        (3, 19968), (4, 19968), (5, 19968), (6, 19968)]  # fmt: skip
    for field in ("utilization", "memory_utilization", "encoder_utilization"):
        assert getattr(gpu, field) is None  # not 0
        assert gpu.unsupported[field] == schema.MIG_UNAVAILABLE


def _name_bytes_not_utf8(nvml: CapturedNvml) -> None:
    """What nvidia-ml-py does on WSL with such a driver: its own strict decode of the name
    buffer raises inside nvmlDeviceGetName. The bytes are the capture's real name with one
    byte that is not UTF-8 (the driver's bytes themselves were not published)."""
    raw = nvml.capture["gpus"][0]["name"]["value"].encode() + b" \xff"

    def get_name(handle: object) -> str:
        return raw.decode()  # raises UnicodeDecodeError, as pynvml's decorator does

    nvml.nvmlDeviceGetName = get_name


def test_a_gpu_name_nvml_cannot_decode_costs_the_name_not_the_gpu():
    nvml = CapturedNvml(load_capture(H100, "load"))
    _name_bytes_not_utf8(nvml)
    source = NvmlSource(nvml)
    (gpu,) = source.read().gpus
    assert gpu.state == schema.GPU_OK and gpu.lost_reason is None
    assert gpu.name == f"NVIDIA H100 80GB HBM3 {REPLACEMENT}"
    assert (gpu.utilization, gpu.temperature) == (100, 69)
    assert gpu.memory_used is not None and gpu.power_usage > 600
    assert {p.pid for p in gpu.processes} == {447, 448}
    assert not any(why.startswith(READ_FAILED) for why in gpu.unsupported.values())


@pytest.mark.parametrize(
    "path",
    sorted(p for p in FIELD.iterdir() if p.suffix in (".xml", ".csv", ".json")),
    ids=lambda p: p.name,
)
def test_every_field_capture_is_read(path):
    reading = read_capture_file(path)
    assert reading.gpus and all(gpu.state == schema.GPU_OK for gpu in reading.gpus)
    assert all(gpu.vendor for gpu in reading.gpus)
