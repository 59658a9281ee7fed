"""One process, one row: merge the rows a source lists twice for the same process.

NVML and old nvidia-smi XML list a process that both computes and draws in two lists
(compute and graphics), and nvtop can print the same pid twice (the Apple M2 Max snapshot
does). Each copy describes the same allocation, so memory is the larger of the two, never
the sum; the types combine (compute + graphics), and a figure one copy lacks comes from the
other. Every source's parser ends with :func:`merge_processes`.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitoring.telemetry.schema import GpuProcess

COMPUTE_GRAPHICS = "compute+graphics"
_FIGURES = (
    "used_memory_mib",
    "sm_utilization",
    "memory_utilization",
    "encoder_utilization",
    "decoder_utilization",
)
_DETAILS = ("name", "user", "command", "container", "start_time")


def merge_processes(processes: Iterable[GpuProcess]) -> list[GpuProcess]:
    """The rows in their first-seen order, one per (GPU, MIG instance, pid)."""
    merged: dict[tuple[object, ...], GpuProcess] = {}
    for proc in processes:
        key = (
            proc.gpu_index,
            proc.gpu_uuid,  # the compute-apps CSV names GPUs only by UUID
            proc.gpu_instance_id,
            proc.compute_instance_id,
            proc.pid,
        )
        first = merged.get(key)
        if first is None:
            merged[key] = proc
        else:
            _absorb(first, proc)
    return list(merged.values())


def _absorb(into: GpuProcess, other: GpuProcess) -> None:
    if into.type != other.type:
        into.type = COMPUTE_GRAPHICS
    for name in _FIGURES:
        mine, theirs = getattr(into, name), getattr(other, name)
        if theirs is not None and (mine is None or theirs > mine):
            setattr(into, name, theirs)
            into.unsupported.pop(name, None)
    for name in _DETAILS:
        if getattr(into, name) is None and getattr(other, name) is not None:
            setattr(into, name, getattr(other, name))
            into.unsupported.pop(name, None)
