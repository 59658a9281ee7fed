"""A stand-in for the ``pynvml`` module that answers from a real NVML capture.

Tests, the replay source and the benchmark need NVML answers on machines with no GPU.
Rather than hand-writing figures, :class:`CapturedNvml` plays back what a real driver said
(``monitoring/captures/nvidia/*/nvml_*.json``): values come back as attribute objects like
pynvml's structs, recorded failures raise the *real* pynvml exception classes, and a call
the capture does not hold raises ``NVMLError_NotCaptured``, a ``NVMLError_NotSupported`` (as a
driver lacking it would) whose words say the capture, not the GPU, lacks it.
With ``charge_cost`` every call lasts its recorded median cost from its entry (busy-waiting
what the look-up left), so a benchmark over the stand-in charges what the real call costs.
``calls`` counts what the caller asked.

Variants the capture lacks (more GPUs, MIG, a lost GPU, an old driver) are derived from the
real captures with the helpers at the bottom, never written by hand (MIG from the real A100
MIG capture).
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

#: Cost charged for a call that fails (the capture records no cost for errors), µs.
ERROR_COST_US = 1.0
#: Capture keys that describe the capture itself, not an NVML answer.
CAPTURE_META_KEYS = ("init_ms", "pynvml_file", "psutil", "whole_sample_us")

# Device calls that take only the handle, and the capture key that answers each.
_SIMPLE_DEVICE_CALLS: dict[str, str] = {
    "nvmlDeviceGetName": "name",
    "nvmlDeviceGetUUID": "uuid",
    "nvmlDeviceGetSerial": "serial",
    "nvmlDeviceGetPciInfo": "pci",
    "nvmlDeviceGetPciInfo_v3": "pci",
    "nvmlDeviceGetUtilizationRates": "utilization",
    "nvmlDeviceGetPowerUsage": "power_usage_mw",
    "nvmlDeviceGetPowerManagementLimit": "power_limit_mw",
    "nvmlDeviceGetEnforcedPowerLimit": "enforced_power_limit_mw",
    "nvmlDeviceGetTotalEnergyConsumption": "total_energy_mj",
    "nvmlDeviceGetFanSpeed": "fan_speed",
    "nvmlDeviceGetNumFans": "num_fans",
    "nvmlDeviceGetEncoderUtilization": "encoder",
    "nvmlDeviceGetDecoderUtilization": "decoder",
    "nvmlDeviceGetPerformanceState": "pstate",
    "nvmlDeviceGetCurrentClocksThrottleReasons": "throttle",
    "nvmlDeviceGetCurrentClocksEventReasons": "clock_event_reasons",
    "nvmlDeviceGetComputeRunningProcesses": "compute_procs",
    "nvmlDeviceGetGraphicsRunningProcesses": "graphics_procs",
    "nvmlDeviceGetEccMode": "ecc_mode",
    "nvmlDeviceGetMigMode": "mig_mode",
    "nvmlDeviceGetPersistenceMode": "persistence",
    "nvmlDeviceGetComputeMode": "compute_mode",
    "nvmlDeviceGetVbiosVersion": "vbios",
    "nvmlDeviceGetArchitecture": "arch",
    "nvmlDeviceGetCudaComputeCapability": "cuda_cc",
    "nvmlDeviceGetMinorNumber": "minor",
    "nvmlDeviceGetSupportedEventTypes": "xid_supported_events",
    "nvmlDeviceGetBAR1MemoryInfo": "bar1",
    "nvmlDeviceGetDisplayActive": "display_active",
    "nvmlDeviceGetBoardPartNumber": "board_part",
    "nvmlDeviceGetBrand": "brand",
    "nvmlDeviceGetRetiredPagesPendingStatus": "retired_pages_pending",
    "nvmlDeviceGetCurrPcieLinkGeneration": "pcie_gen_current",
    "nvmlDeviceGetMaxPcieLinkGeneration": "pcie_gen_max",
    "nvmlDeviceGetCurrPcieLinkWidth": "pcie_width_current",
    "nvmlDeviceGetMaxPcieLinkWidth": "pcie_width_max",
    "nvmlDeviceGetMaxMigDeviceCount": "max_mig_device_count",
    "nvmlDeviceGetGpuInstanceId": "gpu_instance_id",
    "nvmlDeviceGetComputeInstanceId": "compute_instance_id",
    "nvmlDeviceGetAttributes": "attributes",
    "nvmlDeviceGetAttributes_v2": "attributes",
}
_CLOCK_KEYS = {
    pynvml.NVML_CLOCK_SM: "sm",
    pynvml.NVML_CLOCK_MEM: "mem",
    pynvml.NVML_CLOCK_GRAPHICS: "graphics",
    pynvml.NVML_CLOCK_VIDEO: "video",
}
_CLOCK_ANSWERS = {clock: f"clock_{name}" for clock, name in _CLOCK_KEYS.items()}
_MAX_CLOCK_ANSWERS = {clock: f"max_clock_{name}" for clock, name in _CLOCK_KEYS.items()}
_THRESHOLD_KEYS = {
    pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: "temp_slowdown",
    pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: "temp_shutdown",
}
_PCIE_KEYS = {pynvml.NVML_PCIE_UTIL_TX_BYTES: "pcie_tx", pynvml.NVML_PCIE_UTIL_RX_BYTES: "pcie_rx"}
_ECC_TYPES = {
    pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: "corrected",
    pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: "uncorrected",
}
_ECC_COUNTERS = {pynvml.NVML_VOLATILE_ECC: "volatile", pynvml.NVML_AGGREGATE_ECC: "aggregate"}
_RETIREMENT_KEYS = {
    pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: "retired_pages_dbe",
    pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS: "retired_pages_sbe",
}
_VIOLATION_KEYS = {
    pynvml.NVML_PERF_POLICY_POWER: "power_violation",
    pynvml.NVML_PERF_POLICY_THERMAL: "thermal_violation",
}
# Capture keys that are not per-device answers (nested device lists, resolution data).
_NOT_ANSWERS = {"mig_devices", "whole_sample_us"}


#: Why a figure the capture holds no answer for is missing (the page says so, not "not
#: supported by this GPU": the H100 has a PCIe link, the capture just never asked it).
NOT_CAPTURED = "not in the capture"


class NVMLError_NotCaptured(pynvml.NVMLError_NotSupported):
    """A call the capture did not record: NVML code sees NotSupported, as from a driver
    without the call, and :attr:`reason` gives the words."""

    reason = NOT_CAPTURED


#: One capture record as the stand-in keeps it: (answer, cost in ns, exception class or None).
_Record = tuple[Any, int, type[pynvml.NVMLError] | None]
#: What a call the capture did not record answers, charged as a failed call.
_NOT_CAPTURED: _Record = (None, int(ERROR_COST_US * 1000), NVMLError_NotCaptured)
_now_ns = time.perf_counter_ns


def _error_class(name: str) -> type[pynvml.NVMLError]:
    """The real pynvml exception class a capture names (unknown names fail loudly)."""
    cls = getattr(pynvml, name, None)
    if not (isinstance(cls, type) and issubclass(cls, pynvml.NVMLError)):
        raise ValueError(f"not a pynvml exception class: {name!r}")
    return cls


def _as_object(value: Any) -> Any:
    """Capture JSON -> what pynvml hands back: structs as attribute objects, lists as lists."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _as_object(v) for k, v in value.items() if k != "resolved"})
    if isinstance(value, list):
        return [_as_object(item) for item in value]
    return value


def _entry(raw: Any) -> _Record:
    """One capture record -> (answer, cost in ns, exception class or None)."""
    if isinstance(raw, dict) and "error" in raw:
        return None, int(ERROR_COST_US * 1000), _error_class(raw["error"])
    if isinstance(raw, dict) and "value" in raw:
        return _as_object(raw["value"]), int(float(raw.get("us") or 0.0) * 1000), None
    raise ValueError(f"not a capture record: {raw!r}")


class _Handle:
    """What ``nvmlDeviceGetHandleByIndex`` returns: one GPU (or MIG slice) of the capture."""

    __slots__ = ("gpu", "lost", "mig", "resolved", "table")

    def __init__(self, gpu: int, mig: int | None, raw: dict[str, Any]) -> None:
        self.gpu = gpu
        self.mig = mig
        self.lost: type[pynvml.NVMLError] | None = None  # every call fails with this
        self.table: dict[str, _Record] = {}
        self.resolved: dict[int, dict[str, Any]] = {}
        for key, rec in raw.items():
            if key in _NOT_ANSWERS:
                continue
            self.table[key] = _entry(rec)
        for key in ("compute_procs", "graphics_procs"):
            for proc in (raw.get(key) or {}).get("value") or []:
                if isinstance(proc, dict) and "resolved" in proc:
                    self.resolved.setdefault(proc["pid"], proc["resolved"])

    def __repr__(self) -> str:
        return f"<captured nvmlDevice {self.gpu}{'' if self.mig is None else f'/{self.mig}'}>"


class CapturedNvml:
    """Quacks like the ``pynvml`` module for the calls a monitor makes, from one capture."""

    def __init__(self, capture: dict[str, Any] | str | Path, *, charge_cost: bool = False):
        if not isinstance(capture, dict):
            capture = json.loads(Path(capture).read_text())
        self.capture = capture
        self.charge_cost = charge_cost
        #: pynvml function name -> how many times it was called.
        self.calls: Counter[str] = Counter()
        #: capture key -> how many times it was asked (whatever the function).
        self.keys: Counter[str] = Counter()
        #: pynvml function name -> arguments of its last call (after the handle).
        self.last_args: dict[str, tuple[Any, ...]] = {}
        self.initialised = 0
        self._system = {k: _entry(v) for k, v in capture.items() if k in _SYSTEM_KEYS}
        self._handles = [_Handle(i, None, gpu) for i, gpu in enumerate(capture.get("gpus", []))]
        self._mig: dict[int, list[_Handle]] = {
            i: [_Handle(i, m, dev) for m, dev in enumerate(gpu.get("mig_devices") or [])]
            for i, gpu in enumerate(capture.get("gpus", []))
        }
        for fname, key in _SIMPLE_DEVICE_CALLS.items():
            setattr(self, fname, self._simple(fname, key))

    # --- plumbing ---------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """Constants and exception classes come from the real pynvml; other calls are absent."""
        if name.startswith(("NVML", "nvmlMemory", "c_nvml", "nvmlFriendlyObject")):
            return getattr(pynvml, name)
        if name.startswith("nvml"):
            calls = self.__dict__.get("calls")

            def absent(*args: Any, **kwargs: Any) -> Any:
                if calls is not None:
                    calls[name] += 1
                raise pynvml.NVMLError_FunctionNotFound()

            return absent
        raise AttributeError(name)

    def _settle(self, start_ns: int, cost_ns: int) -> None:
        """Busy-wait until the call has lasted its captured cost, counted from its entry.

        The capture timed each call through nvidia-ml-py, so its cost already holds pynvml's
        own Python; counting from the entry puts this stand-in's own look-up inside that cost
        instead of on top of it (about 1 µs a call, which a benchmark would otherwise charge
        to the monitor).
        """
        if not self.charge_cost or not cost_ns:
            return
        end = start_ns + cost_ns
        while _now_ns() < end:
            pass

    def _entry_of(self, fname: str, handle: _Handle, key: str) -> _Record:
        self.calls[fname] += 1
        self.keys[key] += 1
        if handle.lost is not None:
            raise handle.lost()
        return handle.table.get(key) or _NOT_CAPTURED

    def _answer(self, fname: str, handle: _Handle, key: str, start_ns: int) -> Any:
        # _entry_of and _settle written out: this runs for every call of every tick, and a
        # stand-in slower than the real call would charge its own time to the monitor
        self.calls[fname] += 1
        self.keys[key] += 1
        if handle.lost is not None:
            raise handle.lost()
        value, cost, error = handle.table.get(key) or _NOT_CAPTURED
        if value.__class__ is list:
            value = list(value)
        if self.charge_cost and cost:
            end = start_ns + cost
            while _now_ns() < end:
                pass
        if error is not None:
            raise error()
        return value

    def _system_answer(self, fname: str, key: str) -> Any:
        start_ns = _now_ns()
        self.calls[fname] += 1
        self.keys[key] += 1
        entry = self._system.get(key)
        if entry is None:
            raise NVMLError_NotCaptured()
        value, cost, error = entry
        self._settle(start_ns, cost)
        if error is not None:
            raise error()
        return value

    def _simple(self, fname: str, key: str) -> Any:
        answer = self._answer

        def call(handle: _Handle) -> Any:
            return answer(fname, handle, key, _now_ns())

        call.__name__ = fname
        return call

    # --- library and system -----------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._init("nvmlInit")

    def nvmlInit_v2(self) -> None:
        self._init("nvmlInit_v2")

    def nvmlInitWithFlags(self, flags: int) -> None:
        self._init("nvmlInitWithFlags")

    def _init(self, fname: str) -> None:
        self.calls[fname] += 1
        entry = self._system.get("init")
        if entry is not None and entry[2] is not None:
            raise entry[2]()
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1
        if self.initialised <= 0:
            raise pynvml.NVMLError_Uninitialized()
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self._system_answer("nvmlSystemGetDriverVersion", "driver")

    def nvmlSystemGetNVMLVersion(self) -> str:
        return self._system_answer("nvmlSystemGetNVMLVersion", "nvml")

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self._system_answer("nvmlSystemGetCudaDriverVersion", "cuda")

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self._system_answer("nvmlSystemGetCudaDriverVersion_v2", "cuda")

    def nvmlDeviceGetCount(self) -> int:
        return self._system_answer("nvmlDeviceGetCount", "count")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self.calls["nvmlDeviceGetHandleByIndex"] += 1
        self._check_init()
        if not 0 <= index < len(self._handles):
            raise pynvml.NVMLError_InvalidArgument()
        handle = self._handles[index]
        if handle.lost is not None:
            raise handle.lost()
        return handle

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Handle:
        self.calls["nvmlDeviceGetHandleByUUID"] += 1
        self._check_init()
        for handle in self._handles:
            entry = handle.table.get("uuid")
            if entry is not None and entry[0] == uuid:
                if handle.lost is not None:
                    raise handle.lost()
                return handle
        raise pynvml.NVMLError_NotFound()

    def _check_init(self) -> None:
        if self.initialised <= 0:
            raise pynvml.NVMLError_Uninitialized()

    # --- device calls with arguments --------------------------------------------------------

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        start_ns = _now_ns()
        key = "memory_v2" if version == pynvml.nvmlMemory_v2 else "memory"
        if version not in (None, pynvml.nvmlMemory_v2):
            self.calls["nvmlDeviceGetMemoryInfo"] += 1
            raise pynvml.NVMLError_ArgumentVersionMismatch()
        return self._answer("nvmlDeviceGetMemoryInfo", handle, key, start_ns)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        start_ns = _now_ns()
        key = "temperature" if sensor == pynvml.NVML_TEMPERATURE_GPU else f"temperature_{sensor}"
        return self._answer("nvmlDeviceGetTemperature", handle, key, start_ns)

    def nvmlDeviceGetTemperatureThreshold(self, handle: _Handle, threshold: int) -> int:
        start_ns = _now_ns()
        key = _THRESHOLD_KEYS.get(threshold, f"temp_threshold_{threshold}")
        return self._answer("nvmlDeviceGetTemperatureThreshold", handle, key, start_ns)

    def nvmlDeviceGetFanSpeed_v2(self, handle: _Handle, fan: int) -> int:
        start_ns = _now_ns()
        self.last_args["nvmlDeviceGetFanSpeed_v2"] = (fan,)
        return self._answer("nvmlDeviceGetFanSpeed_v2", handle, f"fan_speed_{fan}", start_ns)

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock: int) -> int:
        start_ns = _now_ns()
        key = _CLOCK_ANSWERS.get(clock) or f"clock_{clock}"
        return self._answer("nvmlDeviceGetClockInfo", handle, key, start_ns)

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, clock: int) -> int:
        start_ns = _now_ns()
        key = _MAX_CLOCK_ANSWERS.get(clock) or f"max_clock_{clock}"
        return self._answer("nvmlDeviceGetMaxClockInfo", handle, key, start_ns)

    def nvmlDeviceGetPcieThroughput(self, handle: _Handle, counter: int) -> int:
        start_ns = _now_ns()
        key = _PCIE_KEYS.get(counter, f"pcie_{counter}")
        return self._answer("nvmlDeviceGetPcieThroughput", handle, key, start_ns)

    def nvmlDeviceGetProcessUtilization(self, handle: _Handle, timeStamp: int) -> list[Any]:
        """Answers as captured whatever ``timeStamp`` says (a capture is one frozen moment)."""
        start_ns = _now_ns()
        self.last_args["nvmlDeviceGetProcessUtilization"] = (timeStamp,)
        return self._answer("nvmlDeviceGetProcessUtilization", handle, "process_util", start_ns)

    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, error_type: int, counter: int) -> int:
        start_ns = _now_ns()
        key = f"ecc_{_ECC_COUNTERS.get(counter, counter)}_{_ECC_TYPES.get(error_type, error_type)}"
        return self._answer("nvmlDeviceGetTotalEccErrors", handle, key, start_ns)

    def nvmlDeviceGetRetiredPages(self, handle: _Handle, cause: int) -> list[int]:
        start_ns = _now_ns()
        key = _RETIREMENT_KEYS.get(cause, f"retired_pages_{cause}")
        return self._answer("nvmlDeviceGetRetiredPages", handle, key, start_ns)

    def nvmlDeviceGetViolationStatus(self, handle: _Handle, policy: int) -> Any:
        start_ns = _now_ns()
        key = _VIOLATION_KEYS.get(policy, f"violation_{policy}")
        return self._answer("nvmlDeviceGetViolationStatus", handle, key, start_ns)

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: Iterable[Any]) -> list[Any]:
        """One value per asked id, in order; ids the capture lacks answer NOT_SUPPORTED."""
        start_ns = _now_ns()
        captured, cost, error = self._entry_of("nvmlDeviceGetFieldValues", handle, "field_values")
        if error is not None:
            self._settle(start_ns, cost)
            raise error()
        by_id = {item.fieldId: item for item in captured}
        out = []
        for field_id in field_ids:
            fid = field_id[0] if isinstance(field_id, tuple) else field_id
            item = by_id.get(fid)
            if item is None:
                out.append(_field_value(fid, pynvml.NVML_ERROR_NOT_SUPPORTED, 0, 0))
            else:
                out.append(_field_value(fid, item.nvmlReturn, item.valueType, item.value))
        self._settle(start_ns, cost)
        return out

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        self.calls["nvmlDeviceGetMigDeviceHandleByIndex"] += 1
        if handle.lost is not None:
            raise handle.lost()
        slices = self._mig.get(handle.gpu, [])
        if not 0 <= index < len(slices):
            raise pynvml.NVMLError_NotFound()
        return slices[index]

    # --- test controls ----------------------------------------------------------------------

    def resolved(self, gpu: int, pid: int) -> dict[str, Any] | None:
        """Who the capture machine said ``pid`` was: ``{"name", "user", "cmd"}``, or None."""
        if not 0 <= gpu < len(self._handles):
            return None
        return self._handles[gpu].resolved.get(pid)

    def fail(self, gpu: int, key: str = "*", error: str = "NVMLError_GpuIsLost") -> None:
        """From now on ``key`` on ``gpu`` raises ``error``; ``"*"`` fails every call (GPU lost)."""
        handle = self._handles[gpu]
        if key == "*":
            handle.lost = _error_class(error)
        else:
            handle.table[key] = (None, int(ERROR_COST_US * 1000), _error_class(error))

    def answer(self, gpu: int, key: str, value: Any) -> None:
        """From now on ``key`` on ``gpu`` answers ``value`` (a process starting, say), at the
        captured cost; :meth:`heal` goes back to the capture."""
        handle = self._handles[gpu]
        old = handle.table.get(key)
        cost = old[1] if old is not None and old[2] is None else 0
        handle.table[key] = (_as_object(value), cost, None)

    def heal(self, gpu: int, key: str = "*") -> None:
        """Undo :meth:`fail`: answer ``key`` (or every call) from the capture again."""
        handle = self._handles[gpu]
        if key == "*":
            handle.lost = None
            return
        raw = self.capture["gpus"][gpu].get(key)
        if raw is None:
            handle.table.pop(key, None)
        else:
            handle.table[key] = _entry(raw)


_SYSTEM_KEYS = {"driver", "nvml", "cuda", "count", "init"}


def _field_value(field_id: int, ret: int, value_type: int, value: Any) -> SimpleNamespace:
    """A ``c_nvmlFieldValue_t`` look-alike: the value sits in every member of the union."""
    union = SimpleNamespace(
        dVal=float(value),
        uiVal=int(value),
        ulVal=int(value),
        ullVal=int(value),
        sllVal=int(value),
        siVal=int(value),
        usVal=int(value),
    )
    return SimpleNamespace(
        fieldId=field_id,
        scopeId=0,
        nvmlReturn=ret,
        valueType=value_type,
        value=union,
        timestamp=0,
        latencyUsec=0,
    )


# --- loading and deriving variants -----------------------------------------------------------


def capture_path(directory: str | Path, state: str) -> Path:
    return Path(directory) / f"nvml_{state}.json"


def load_capture(directory: str | Path, state: str) -> dict[str, Any]:
    """The capture of ``state`` (``idle``, ``load`` …) in a capture directory, as a dict."""
    return json.loads(capture_path(directory, state).read_text())


def capture_with_error(
    capture: dict[str, Any], *, key: str, error: str, gpu: int | None = None
) -> dict[str, Any]:
    """A copy where ``key`` answers ``error`` (a pynvml class name).

    ``gpu=None`` targets the library level: ``key="init"`` makes ``nvmlInit`` fail (e.g.
    ``NVMLError_LibRmVersionMismatch`` after a driver upgrade without reboot), ``"count"`` …
    """
    _error_class(error)
    out = copy.deepcopy(capture)
    target = out if gpu is None else out["gpus"][gpu]
    target[key] = {"error": error, "msg": error.removeprefix("NVMLError_")}
    return out


def capture_with_value(
    capture: dict[str, Any], *, key: str, value: Any, gpu: int | None = 0, us: float = 1.0
) -> dict[str, Any]:
    """A copy where ``key`` answers ``value`` (e.g. a process list a driver variant gives)."""
    out = copy.deepcopy(capture)
    target = out if gpu is None else out["gpus"][gpu]
    old = target.get(key)
    cost = old.get("us", us) if isinstance(old, dict) and "us" in old else us
    target[key] = {"value": value, "us": cost}
    return out


def capture_with_pcie_counters(
    capture: dict[str, Any], tx: int, rx: int, *, gpu: int = 0
) -> dict[str, Any]:
    """A copy whose field-values call also answers the PCIe byte counters (fields 197 and
    198, bytes since the driver loaded), at the captured cost of that call. No capture holds
    them: this is the path a driver that has them takes."""
    fields = [
        *capture["gpus"][gpu]["field_values"]["value"],
        {"fieldId": 197, "nvmlReturn": 0, "valueType": 3, "value": tx},
        {"fieldId": 198, "nvmlReturn": 0, "valueType": 3, "value": rx},
    ]
    return capture_with_value(capture, key="field_values", value=fields, gpu=gpu)


def capture_without(capture: dict[str, Any], *keys: str, gpu: int = 0) -> dict[str, Any]:
    """A copy lacking ``keys`` on ``gpu``: those calls raise NotSupported, as an old driver."""
    out = copy.deepcopy(capture)
    for key in keys:
        out["gpus"][gpu].pop(key, None)
    return out


def _variant_uuid(uuid: str, n: int) -> str:
    return f"{uuid[:-4]}{(int(uuid[-4:], 16) + n) % 0x10000:04x}"


def multi_gpu(capture: dict[str, Any], count: int = 2) -> dict[str, Any]:
    """A copy with ``count`` GPUs: the first as captured, the others clones of it on their own
    PCI bus, with their own UUID and serial (a multi-GPU server of the same boards)."""
    out = copy.deepcopy(capture)
    base = out["gpus"][0]
    gpus = [base]
    for n in range(1, count):
        clone = copy.deepcopy(base)
        if "uuid" in clone and "value" in clone["uuid"]:
            clone["uuid"]["value"] = _variant_uuid(clone["uuid"]["value"], n)
        if "serial" in clone and "value" in clone["serial"]:
            clone["serial"]["value"] = str(int(clone["serial"]["value"]) + n)
        pci = clone.get("pci", {}).get("value")
        if isinstance(pci, dict):
            bus = int(pci.get("bus", 0)) + n
            pci["bus"] = bus
            pci["busId"] = f"00000000:{bus:02X}:{int(pci.get('device', 0)):02X}.0"
            pci["busIdLegacy"] = f"0000:{bus:02X}:{int(pci.get('device', 0)):02X}.0"
        if "minor" in clone and "value" in clone["minor"]:
            clone["minor"]["value"] = n
        gpus.append(clone)
    out["gpus"] = gpus
    out["count"] = {"value": count, "us": out.get("count", {}).get("us", 1.0)}
    return out


#: The real MIG capture (nvidia-smi -q -x of an A100-SXM4-80GB with four MIG devices) that
#: MIG variants take their slices from, so NVML and nvidia-smi tests describe the same GPU.
MIG_XML = Path(__file__).resolve().parents[1] / "captures" / "field" / "a100-sxm4-mig-v12.xml"
_MIB = 1 << 20


def with_mig(capture: dict[str, Any], *, gpu: int = 0, xml: Path = MIG_XML) -> dict[str, Any]:
    """A copy where ``gpu`` is the A100 of the real MIG capture ``xml``: its name, UUID,
    memory and MIG slices (GPU/compute instance ids, SM counts, memory) come from that
    capture; the other calls keep ``capture``'s answers.

    What the XML cannot say is stated, not invented: MIG devices' UUIDs and names are not
    in ``-q -x``, so the slices answer NotSupported for their name and a UUID made from the
    parent's. Under MIG the parent answers NotSupported for GPU and per-process utilization
    (as the capture's N/A says), and the capture's processes are put on the first slice.
    """
    from monitoring.telemetry.smi_xml import parse_smi_xml

    (a100,) = parse_smi_xml(Path(xml).read_text(), origin=str(xml)).gpus
    out = copy.deepcopy(capture)
    dev = out["gpus"][gpu]
    dev["name"] = {"value": a100.name, "us": dev.get("name", {}).get("us", 1.0)}
    dev["uuid"] = {"value": a100.uuid, "us": dev.get("uuid", {}).get("us", 1.0)}
    reserved = (a100.memory_reserved or 0) * _MIB
    total, used, free = (a100.memory_total * _MIB, a100.memory_used * _MIB,
                         a100.memory_free * _MIB)  # fmt: skip
    # -q -x counts as NVML's v2 call does (used excludes reserved); v1 counts it as used.
    dev["memory"] = {
        "value": {"total": total, "used": used + reserved, "free": free},
        "us": dev.get("memory", {}).get("us", 1.0),
    }
    if "memory_v2" in dev:
        v2 = dev["memory_v2"]
        v2["value"] = {**v2["value"], "total": total, "used": used, "free": free,
                       "reserved": reserved}  # fmt: skip
    dev["mig_mode"] = {"value": [1, 1], "us": dev.get("mig_mode", {}).get("us", 1.0)}
    dev["utilization"] = {"error": "NVMLError_NotSupported", "msg": "Not Supported"}
    dev["process_util"] = {"error": "NVMLError_NotSupported", "msg": "Not Supported"}
    dev["max_mig_device_count"] = {"value": 7, "us": 1.0}  # an A100 has seven slots
    devices = []
    for n, mig in enumerate(a100.mig_instances):
        devices.append(
            {
                "uuid": {"value": f"MIG-{_variant_uuid(a100.uuid, n + 1)[4:]}", "us": 1.0},
                "gpu_instance_id": {"value": mig.gpu_instance_id, "us": 1.0},
                "compute_instance_id": {"value": mig.compute_instance_id, "us": 1.0},
                "attributes": {"value": {"multiprocessorCount": mig.sm_count}, "us": 1.0},
                "memory": {
                    "value": {
                        "total": mig.memory_total * _MIB,
                        "used": mig.memory_used * _MIB,
                        "free": mig.memory_free * _MIB,
                    },
                    "us": 1.0,
                },
            }
        )
    dev["mig_devices"] = devices
    first = a100.mig_instances[0]
    for key in ("compute_procs", "graphics_procs"):
        for proc in (dev.get(key) or {}).get("value") or []:
            proc["gpuInstanceId"] = first.gpu_instance_id
            proc["computeInstanceId"] = first.compute_instance_id
    return out
