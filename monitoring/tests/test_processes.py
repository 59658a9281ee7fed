"""One process, one row, in every source: the rows a source lists twice are merged, and a
process's memory is never counted twice."""

from __future__ import annotations

from monitoring.telemetry.capture_file import read_capture_file
from monitoring.telemetry.nvml_capture import CapturedNvml, load_capture
from monitoring.telemetry.nvml_source import NvmlSource
from monitoring.telemetry.processes import merge_processes
from monitoring.telemetry.schema import GpuProcess
from monitoring.tests.conftest import FIELD, H100


def test_a_pid_listed_twice_is_one_row_with_its_memory_once():
    compute = GpuProcess(pid=7, gpu_index=0, gpu_uuid="GPU-a", used_memory_mib=512)
    graphics = GpuProcess(pid=7, gpu_index=0, gpu_uuid="GPU-a", used_memory_mib=512,
                          type="graphics", name="blender")  # fmt: skip
    (merged,) = merge_processes([compute, graphics])
    assert (merged.type, merged.used_memory_mib, merged.name) == (
        "compute+graphics",
        512,
        "blender",
    )


def test_a_figure_one_copy_lacks_comes_from_the_other():
    bare = GpuProcess(pid=7, gpu_index=0, gpu_uuid=None, unsupported={"used_memory_mib": "?"})
    full = GpuProcess(pid=7, gpu_index=0, gpu_uuid=None, used_memory_mib=300, sm_utilization=40)
    (merged,) = merge_processes([bare, full])
    assert (merged.used_memory_mib, merged.sm_utilization) == (300, 40)
    assert "used_memory_mib" not in merged.unsupported


def test_the_same_pid_on_two_gpus_or_two_mig_slices_stays_two_rows():
    rows = [
        GpuProcess(pid=7, gpu_index=0, gpu_uuid="GPU-a"),
        GpuProcess(pid=7, gpu_index=1, gpu_uuid="GPU-b"),
        GpuProcess(pid=7, gpu_index=0, gpu_uuid="GPU-a", gpu_instance_id=3),
        GpuProcess(pid=7, gpu_index=-1, gpu_uuid="GPU-a"),  # compute-apps, GPU not yet placed
        GpuProcess(pid=7, gpu_index=-1, gpu_uuid="GPU-b"),
    ]
    assert len(merge_processes(rows)) == 5


def test_nvml_lists_a_compute_and_graphics_process_once():
    capture = load_capture(H100, "load")
    gpu = capture["gpus"][0]
    gpu["graphics_procs"] = {"value": [dict(gpu["compute_procs"]["value"][0])], "us": 1.0}
    (sample,) = NvmlSource(CapturedNvml(capture)).read().gpus
    by_pid = {p.pid: p for p in sample.processes}
    assert len(sample.processes) == 2
    doubled = gpu["compute_procs"]["value"][0]
    assert by_pid[doubled["pid"]].type == "compute+graphics"
    assert by_pid[doubled["pid"]].used_memory_mib == round(doubled["usedGpuMemory"] / 2**20)


def test_nvtops_twice_listed_pid_is_shown_once():
    (gpu,) = read_capture_file(FIELD / "nvtop-apple-m2-max.json").gpus
    assert [p.pid for p in gpu.processes] == [609, 610]
