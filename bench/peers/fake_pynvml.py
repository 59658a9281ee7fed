"""A ``pynvml`` module for the peers that answers from the H100 capture, charging real costs.

Each peer imports ``pynvml`` itself; putting this module in ``sys.modules["pynvml"]`` before
the peer is imported makes its own code run against the same captured NVML, each call
lasting the cost recorded on the H100, exactly as our NvmlSource is measured.

Built from the real nvidia-ml-py module (constants, structs, exception classes, helpers stay
real); every NVML *call* (``nvml*`` function) is replaced by
:class:`monitoring.telemetry.nvml_capture.CapturedNvml`'s answer:

* a call CapturedNvml models and the capture holds: the recorded value, charged its cost;
* a call CapturedNvml models but the capture lacks: ``NVMLError_NotSupported`` (charged 1 µs);
* a call CapturedNvml does not model at all: ``NVMLError_FunctionNotFound``, charged nothing
  (the benchmark lists which ones each peer hit, so a reader can see what was free).

``nvmlInit`` is charged the capture's ``init_ms`` (CapturedNvml itself does not charge it):
that matters only for gpustat, which initialises NVML on every query.

One call no capture holds but a peer cannot do without is answered here: gpustat's
``nvmlDeviceGetIndex`` (the handle's index, charged as the capture's ``minor`` getter, 1 µs).
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pynvml as real_pynvml  # noqa: E402  (the real one, before anything replaces it)

from monitoring.telemetry.nvml_capture import CapturedNvml  # noqa: E402

# nvml* names that are Python helpers, not NVML calls: kept real.
_HELPERS = {"nvmlExceptionClass", "nvmlStructToFriendlyObject", "nvmlFriendlyObjectToStruct"}
_INITS = ("nvmlInit", "nvmlInit_v2", "nvmlInitWithFlags")


def _spin(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


class FakeNvml:
    """The module object and the CapturedNvml behind it (for its call counters)."""

    def __init__(
        self, capture: dict[str, Any], *, function_pointers: bool, charge_init: bool = True
    ) -> None:
        self.nv = CapturedNvml(capture, charge_cost=True)
        self.init_ns = int(float(capture.get("init_ms") or 0.0) * 1e6) if charge_init else 0
        self.absent: set[str] = set()  # calls answered FunctionNotFound (cost nothing)
        self.proxied: set[str] = set()  # calls answered by this harness, cost estimated
        mod = types.ModuleType("pynvml", real_pynvml.__doc__)
        mod.__dict__.update(
            {k: v for k, v in vars(real_pynvml).items() if k not in ("__name__", "__doc__")}
        )
        mod.__file__ = __file__
        for name, attr in vars(real_pynvml).items():
            if (
                name.startswith("nvml")
                and isinstance(attr, types.FunctionType)
                and name not in _HELPERS
            ):
                mod.__dict__[name] = self._call(name)
        mod.nvmlErrorString = lambda result: real_pynvml.NVMLError._errcode_to_string.get(
            result, f"NVML error {result}"
        )
        # Calls a peer cannot run without that CapturedNvml does not model (see module doc).
        mod.nvmlDeviceGetIndex = self._device_index
        if function_pointers:
            # gpustat probes symbols through this; a symbol "exists" when the capture answers it.
            mod._nvmlGetFunctionPointer = self._function_pointer
            mod._nvmlGetFunctionPointer_cache = {}
        else:
            # nvitop then skips its ctypes patch layers and calls these pynvml functions.
            del mod.__dict__["_nvmlGetFunctionPointer"]
        self.module = mod

    def _call(self, name: str):
        nv, absent = self.nv, self.absent
        target = getattr(nv, name)
        modelled = name in dir(type(nv)) or name in nv.__dict__
        if name in _INITS:
            init_ns = self.init_ns

            def init(*args: Any, **kwargs: Any) -> Any:
                if init_ns:
                    _spin(init_ns)
                return target(*args, **kwargs)

            init.__name__ = name
            return init
        if not modelled:

            def missing(*args: Any, **kwargs: Any) -> Any:
                absent.add(name)
                return target(*args, **kwargs)  # raises NVMLError_FunctionNotFound

            missing.__name__ = name
            return missing

        def call(*args: Any, **kwargs: Any) -> Any:
            return target(*args, **kwargs)

        call.__name__ = name
        return call

    def _device_index(self, handle: Any) -> int:
        """gpustat asks each handle its index, unguarded. Not in the capture: answered from the
        handle and charged what the capture's other one-integer getter (``minor``) cost."""
        self.nv.calls["nvmlDeviceGetIndex"] += 1
        self.proxied.add("nvmlDeviceGetIndex")
        _spin(int(float(self.nv.capture["gpus"][0]["minor"]["us"]) * 1000))
        return handle.gpu

    def _function_pointer(self, name: str) -> object:
        base = name.split("_v")[0] if "_v" in name else name
        nv = self.nv
        known = {"nvmlDeviceGetMemoryInfo_v2": "memory_v2"}
        if name in known:
            if known[name] in nv.capture["gpus"][0]:
                return object()
            raise real_pynvml.NVMLError_FunctionNotFound()
        if base in dir(type(nv)) or base in nv.__dict__:
            return object()
        self.absent.add(name)
        raise real_pynvml.NVMLError_FunctionNotFound()

    def install(self) -> None:
        sys.modules["pynvml"] = self.module
