"""MIG slices under one GPU as NVML lists them: who they are (read when the counter tier sees
MIG mode switch on; their layout changes only by admin action) and their memory each tick.

Functions of the NVML source's per-GPU state (:class:`~.nvml_source._Gpu`): a failure costs
the slice's figure, with its reason; an error that says the GPU is gone raises through
``gpu.check_lost``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitoring.telemetry import schema
from monitoring.telemetry.decoding import lenient_text, text_from_decode_error
from monitoring.telemetry.nvml_common import failed_call, mib

if TYPE_CHECKING:
    from monitoring.telemetry.nvml_source import _Gpu


def list_mig(gpu: _Gpu) -> None:
    """The MIG slices under this GPU (their layout changes only by admin action)."""
    nv, err = gpu.nv, gpu.src._nvml_error
    slices: list[tuple[Any, schema.MigInstance]] = []
    try:
        count = nv.nvmlDeviceGetMaxMigDeviceCount(gpu.handle)
    except err as exc:
        gpu.check_lost(exc)
        gpu.mig_slices = []
        return
    for i in range(count):
        try:
            mh = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, i)
        except err as exc:
            gpu.check_lost(exc)
            continue  # an empty slot
        inst = schema.MigInstance(gpu_instance_id=-1)
        for fn, attr in (
            (nv.nvmlDeviceGetGpuInstanceId, "gpu_instance_id"),
            (nv.nvmlDeviceGetComputeInstanceId, "compute_instance_id"),
            (nv.nvmlDeviceGetUUID, "uuid"),
            (nv.nvmlDeviceGetName, "name"),
        ):
            try:
                value = fn(mh)
                setattr(inst, attr, lenient_text(value) if attr in ("uuid", "name") else value)
            except err as exc:
                gpu.check_lost(exc)
                inst.unsupported[attr] = gpu.reason(exc)
            except UnicodeDecodeError as exc:
                setattr(inst, attr, text_from_decode_error(exc))
            except Exception as exc:
                inst.unsupported[attr] = failed_call(exc)
        try:
            inst.sm_count = nv.nvmlDeviceGetAttributes(mh).multiprocessorCount
        except err as exc:
            gpu.check_lost(exc)
            inst.unsupported["sm_count"] = gpu.reason(exc)
        except Exception as exc:
            inst.unsupported["sm_count"] = failed_call(exc)
        slices.append((mh, inst))
    gpu.mig_slices = slices


def mig_instances(gpu: _Gpu) -> list[schema.MigInstance]:
    """This tick's slices: the listed identities with each slice's memory (MiB) read now."""
    nv, err = gpu.nv, gpu.src._nvml_error
    out = []
    for mh, base in gpu.mig_slices:
        inst = schema.MigInstance(
            gpu_instance_id=base.gpu_instance_id,
            compute_instance_id=base.compute_instance_id,
            uuid=base.uuid,
            name=base.name,
            sm_count=base.sm_count,
            unsupported=dict(base.unsupported),
        )
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(mh)
            inst.memory_total, inst.memory_used = mib(mem.total), mib(mem.used)
            inst.memory_free = mib(mem.free)
        except Exception as exc:
            if isinstance(exc, err):
                gpu.check_lost(exc)
            reason = gpu.reason(exc) if isinstance(exc, err) else failed_call(exc)
            for field in ("memory_used", "memory_total", "memory_free"):
                inst.unsupported[field] = reason
        out.append(inst)
    return out
