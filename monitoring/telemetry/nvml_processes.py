"""The processes on one GPU as NVML lists them (compute and graphics lists merged, one row a
pid) and their utilisation, read on the slow tier and averaged over the window since the last
reading.

Functions of the NVML source's per-GPU state (:class:`~.nvml_source._Gpu`): a failure costs
the processes' figures, with the reason; an error that says the GPU is gone raises through
``gpu.check_lost``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monitoring.telemetry import schema
from monitoring.telemetry.nvml_common import failed_call, mib

if TYPE_CHECKING:
    from monitoring.telemetry.nvml_source import _Gpu

NO_RECENT_SAMPLE = "no GPU activity sampled since the last reading"
UTIL_PENDING = "not read yet: per-process utilisation is read on the slow tier"
IMPOSSIBLE_VALUE = "the driver reported an impossible value (over 100 %)"
_NO_INSTANCE = 0xFFFFFFFF
_VALUE_NOT_AVAILABLE = (1 << 64) - 1
_UTIL_FIELDS = (
    "sm_utilization",
    "memory_utilization",
    "encoder_utilization",
    "decoder_utilization",
)


def read_processes(gpu: _Gpu) -> None:
    """``gpu.processes``: the compute and graphics lists merged, one row a pid (a pid in both
    is ``compute+graphics``); ``gpu.processes_missing`` says why the list is empty."""
    nv, err = gpu.nv, gpu.src._nvml_error
    missing: dict[str, str] = {}
    merged: dict[int, schema.GpuProcess] = {}
    asked = 0
    for name, fn, kind in (
        ("compute_procs", nv.nvmlDeviceGetComputeRunningProcesses, "compute"),
        ("graphics_procs", nv.nvmlDeviceGetGraphicsRunningProcesses, "graphics"),
    ):
        if name in gpu.disabled:
            continue
        try:
            running = fn(gpu.handle)
            for p in running:
                _merge(gpu, merged, p, kind)
        except err as exc:
            gpu.check_lost(exc)
            if isinstance(exc, gpu.src._permanent_errors):
                gpu.disabled.add(name)
            else:
                missing["processes"] = gpu.reason(exc)
            continue
        except Exception as exc:
            missing["processes"] = failed_call(exc)
            continue
        asked += 1
    if asked == 0 and "processes" not in missing:
        missing["processes"] = schema.NOT_SUPPORTED
    procs = list(merged.values())
    gpu.processes = procs
    gpu.processes_missing = missing


def _merge(gpu: _Gpu, merged: dict[int, schema.GpuProcess], p: Any, kind: str) -> None:
    mem = p.usedGpuMemory
    used = None if mem is None or mem == _VALUE_NOT_AVAILABLE else mib(mem)
    proc = merged.get(p.pid)
    if proc is None:
        gi = getattr(p, "gpuInstanceId", _NO_INSTANCE)
        ci = getattr(p, "computeInstanceId", _NO_INSTANCE)
        proc = merged[p.pid] = schema.GpuProcess(
            pid=p.pid,
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            used_memory_mib=used,
            type=kind,
            gpu_instance_id=None if gi in (None, _NO_INSTANCE) else gi,
            compute_instance_id=None if ci in (None, _NO_INSTANCE) else ci,
        )
        if used is None:
            proc.unsupported["used_memory_mib"] = schema.WDDM_NO_MEMORY
    else:
        if proc.type != kind:
            proc.type = "compute+graphics"
        if proc.used_memory_mib is None and used is not None:
            proc.used_memory_mib = used
            proc.unsupported.pop("used_memory_mib", None)


def read_process_util(gpu: _Gpu) -> None:
    """Per-process utilisation since the last reading, averaged per pid.

    The call costs about 2 ms on an H100 whatever it returns, so it runs on the slow
    tier; the driver keeps the samples since ``proc_ts``, so the mean covers the whole
    window between two readings, not only the last instant.
    """
    gpu.proc_util = {}
    gpu.proc_util_reason = None
    # only the processes listed now were measured: one that starts later waits its turn
    gpu.proc_util_pids = {proc.pid for proc in gpu.processes}
    if not gpu.proc_util_pids:
        return  # no process to attribute it to: not asked
    if gpu.mig:
        gpu.proc_util_reason = schema.MIG_UNAVAILABLE
        return
    if "process_util" in gpu.disabled:
        gpu.proc_util_reason = gpu.unsupported.get("process_utilization", schema.NOT_SUPPORTED)
        return
    nv = gpu.nv
    try:
        samples = nv.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.proc_ts)
    except nv.NVMLError_NotFound:
        return  # nothing ran since the last query: not an error
    except gpu.src._nvml_error as exc:
        gpu.check_lost(exc)
        gpu.proc_util_reason = gpu.reason(exc)
        if isinstance(exc, gpu.src._permanent_errors):
            gpu.disabled.add("process_util")
            gpu.unsupported["process_utilization"] = gpu.proc_util_reason
        return
    except Exception as exc:
        gpu.proc_util_reason = failed_call(exc)
        return
    sums: dict[int, list[list[int]]] = {}
    ts = gpu.proc_ts
    for smp in samples:
        if smp.timeStamp > ts:
            ts = smp.timeStamp
        per_field = sums.get(smp.pid)
        if per_field is None:
            per_field = sums[smp.pid] = [[], [], [], []]
        for values, value in zip(
            per_field, (smp.smUtil, smp.memUtil, smp.encUtil, smp.decUtil), strict=True
        ):
            if value is not None and 0 <= value <= 100:
                values.append(value)
    gpu.proc_ts = ts
    gpu.proc_util = {
        pid: tuple(sum(v) / len(v) if v else None for v in per_field)
        for pid, per_field in sums.items()
    }
    gpu.proc_util_pids.update(sums)


def apply_process_util(gpu: _Gpu, procs: list[schema.GpuProcess]) -> None:
    """The last utilisation reading onto a fresh process list (never onto published ones)."""
    reason, util, measured = gpu.proc_util_reason, gpu.proc_util, gpu.proc_util_pids
    for proc in procs:
        figures = None if reason is not None else util.get(proc.pid)
        if figures is None:
            if gpu.mig:
                why = schema.MIG_UNAVAILABLE
            elif "process_util" in gpu.disabled:
                why = gpu.unsupported.get("process_utilization", schema.NOT_SUPPORTED)
            elif proc.pid not in measured:
                why = UTIL_PENDING
            else:
                why = reason or NO_RECENT_SAMPLE
            for field in _UTIL_FIELDS:
                proc.unsupported[field] = why
            continue
        for field, value in zip(_UTIL_FIELDS, figures, strict=True):
            if value is None:
                proc.unsupported[field] = IMPOSSIBLE_VALUE
            else:
                setattr(proc, field, round(value))
