"""GPU telemetry straight from NVML (nvidia-ml-py): the fast, preferred source.

NVML answers in about a microsecond a call where ``nvidia-smi`` costs ~25 ms a process, so
this source is read every tick. It stays cheap by: initialising NVML once (re-initialising can
wake a GPU without persistence mode and spin up its fan); asking once, then never again, what
a GPU does not support; keeping slow calls (PCIe throughput ~20 ms each, energy ~3 ms, max
clocks ~1 ms, per-process utilisation ~2 ms) on the slow tier and repeating their last figures
in between. A GPU that falls
off the bus is marked lost, retried with back-off, and never stops the other GPUs. Only an
NVML error that says so loses a GPU: any other exception from one call (nvidia-ml-py's
``UnicodeDecodeError`` on a GPU name that is not UTF-8, say) costs that call's figures alone,
and a string that is not UTF-8 is kept with replacement characters.

``nvml`` may be any object that quacks like ``pynvml`` (tests and replay pass
:class:`~monitoring.telemetry.nvml_capture.CapturedNvml`). A GPU's processes and their
utilisation are read by :mod:`.nvml_processes`, its MIG slices by :mod:`.nvml_mig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from monitoring.telemetry import codes, nvml_mig, nvml_processes, schema
from monitoring.telemetry.backoff import Backoff
from monitoring.telemetry.decoding import lenient_text, text_from_decode_error
from monitoring.telemetry.errors import DriverMismatch, SourceUnavailable
from monitoring.telemetry.nvml_common import READ_FAILED, failed_call
from monitoring.telemetry.vendor import NVIDIA

DRIVER_MISMATCH_MESSAGE = (
    "the NVIDIA driver was upgraded without a reboot: the kernel module and the user-space "
    "library differ; reboot (or reload the nvidia kernel module) to see GPUs again"
)
NO_GPU_MESSAGE = "No NVIDIA GPU found"
NOT_IN_DRIVER = "not available in this driver version"
NO_RESERVED_V1 = "not reported by this driver (older NVML memory API)"

#: Errors that mean the GPU itself is gone (fallen off the bus, needs a reset …).
LOST_ERRORS = (
    "NVMLError_GpuIsLost",
    "NVMLError_Unknown",
    "NVMLError_GpuNotFound",
    "NVMLError_ResetRequired",
)
#: Errors that will not change while the driver stays: asked once, then remembered.
PERMANENT_ERRORS = (
    "NVMLError_NotSupported",
    "NVMLError_InvalidArgument",
    "NVMLError_FunctionNotFound",
    "NVMLError_ArgumentVersionMismatch",
    "NVMLError_Deprecated",
)
#: How lost_reason starts when reading a GPU failed on a Python error, not a driver's.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0

_MIB_HALF = 1 << 19
_PSTATES = {n: codes.pstate_name(n) for n in range(33)}
_FI_MEMORY_TEMP = 82
_FI_TOTAL_ENERGY = 83  # mJ since the driver was loaded, as nvmlDeviceGetTotalEnergyConsumption
_FI_PCIE_REPLAY_COUNTER = 94
_FI_PCIE_TX_BYTES = 197  # bytes sent over PCIe since the driver was loaded
_FI_PCIE_RX_BYTES = 198
_COUNTER_FIELDS = [
    _FI_MEMORY_TEMP,
    _FI_TOTAL_ENERGY,
    _FI_PCIE_REPLAY_COUNTER,
    _FI_PCIE_TX_BYTES,
    _FI_PCIE_RX_BYTES,
]
_FIELD_NAMES = {
    _FI_MEMORY_TEMP: "temperature_memory",
    _FI_TOTAL_ENERGY: "energy_joules",
    _FI_PCIE_REPLAY_COUNTER: "pcie_replay_counter",
    _FI_PCIE_TX_BYTES: "pcie_tx_bytes_per_s",
    _FI_PCIE_RX_BYTES: "pcie_rx_bytes_per_s",
}
_PCIE_RATES = ("pcie_tx_bytes_per_s", "pcie_rx_bytes_per_s")
#: How often cumulative and slow-moving figures are read (energy, ECC, PCIe replays, memory
#: temperature, modes, power limits), and PCIe throughput where the driver has no byte
#: counters (its sampling call spends ~20 ms per direction inside the driver). 0: PCIe
#: throughput only while someone asks for it (:meth:`NvmlSource.want_pcie`).
COUNTER_INTERVAL_S = 60.0
PCIE_INTERVAL_S = 300.0
#: How long one request for PCIe throughput keeps it read on every slow tick.
PCIE_WANTED_S = 30.0
PCIE_NEEDS_TWO = "needs two readings of the PCIe byte counters"
PCIE_COUNTER_RESET = "the PCIe byte counters went back (driver reloaded): next reading"
PCIE_OFF = (
    "not read: PCIe throughput is read only while someone looks at it "
    "(HOOFHEARTED_PCIE_INTERVAL_MS=0)"
)
_MEMORY_FIELDS = ("memory_used", "memory_total", "memory_free", "memory_reserved")
_MIG_SKIPPED = ("utilization", "encoder_utilization", "decoder_utilization")
_MIG_FIELDS = ("utilization", "memory_utilization", "encoder_utilization", "decoder_utilization")


_text = lenient_text


def cuda_version_text(value: int) -> str:
    """NVML's CUDA driver version integer -> ``"13.0"`` (13000), ``"12.4"`` (12040)."""
    return f"{value // 1000}.{(value % 1000) // 10}"


class _Lenient:
    """The NVML module, where a function an older nvidia-ml-py lacks raises FunctionNotFound
    (remembered as unsupported) instead of AttributeError (which would lose the GPU)."""

    def __init__(self, nv: Any) -> None:
        self._nv = nv

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._nv, name, None)
        if value is None:
            if not name.startswith("nvml"):
                raise AttributeError(name)
            error = self._nv.NVMLError_FunctionNotFound

            def value(*args: Any, **kwargs: Any) -> Any:
                raise error()

        setattr(self, name, value)  # looked up once
        return value


class _Lost(Exception):
    """Internal: a call said the GPU is gone."""


class _Call:
    """One NVML call of a tier: how to ask, where the answer goes, what it leaves empty."""

    __slots__ = ("apply", "args", "fallback", "fields", "fn", "name", "reason")

    def __init__(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        apply: Callable[[Any, Any], None],
        fields: tuple[str, ...],
        reason: str | None = None,
        fallback: _Call | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.args = args
        self.apply = apply
        self.fields = fields
        self.reason = reason  # why the fields are empty when unsupported (else from the error)
        self.fallback = fallback  # an older call to try once this one is unsupported


# --- where answers go (module functions: cheaper than closures per tick) ----------------------


def _set_util(s: schema.GpuSample, v: Any) -> None:
    s.utilization = v.gpu
    s.memory_utilization = v.memory


def _set_memory_v2(s: schema.GpuSample, v: Any) -> None:
    s.memory_total = (v.total + _MIB_HALF) >> 20
    s.memory_used = (v.used + _MIB_HALF) >> 20
    s.memory_free = (v.free + _MIB_HALF) >> 20
    s.memory_reserved = (v.reserved + _MIB_HALF) >> 20


def _set_memory_v1(s: schema.GpuSample, v: Any) -> None:
    s.memory_total = (v.total + _MIB_HALF) >> 20
    s.memory_used = (v.used + _MIB_HALF) >> 20
    s.memory_free = (v.free + _MIB_HALF) >> 20


def _set_temperature(s: schema.GpuSample, v: int) -> None:
    s.temperature = v


def _set_power(s: schema.GpuSample, v: int) -> None:
    s.power_usage = v / 1000.0


def _set_clock_sm(s: schema.GpuSample, v: int) -> None:
    s.clocks.sm = v


def _set_clock_mem(s: schema.GpuSample, v: int) -> None:
    s.clocks.memory = v


def _set_clock_graphics(s: schema.GpuSample, v: int) -> None:
    s.clocks.graphics = v


def _set_pstate(s: schema.GpuSample, v: int) -> None:
    s.performance_state = _PSTATES.get(v)


def _set_encoder(s: schema.GpuSample, v: Any) -> None:
    s.encoder_utilization = v[0]


def _set_decoder(s: schema.GpuSample, v: Any) -> None:
    s.decoder_utilization = v[0]


def _set_fans(s: schema.GpuSample, v: list[int | None]) -> None:
    s.fans = v


def _set_fan_v1(s: schema.GpuSample, v: int) -> None:
    s.fans = [v]


class _Events:
    """Clock event mask -> reason names, decoded once per distinct mask."""

    __slots__ = ("cache",)

    def __init__(self) -> None:
        self.cache: dict[int, tuple[str, ...]] = {}

    def apply(self, s: schema.GpuSample, mask: int) -> None:
        names = self.cache.get(mask)
        if names is None:
            names = self.cache[mask] = tuple(codes.decode_clock_events(mask))
        s.clock_event_reasons = list(names)


class _Slow:
    """The figures read less often than every tick (at open, once a minute, on the PCIe
    tier), repeated on the ticks in between. Never changed once published: each reading
    fills a :meth:`copy`, so samples may share it."""

    __slots__ = (
        "compute_mode",
        "ecc",
        "energy_joules",
        "graphics_max",
        "memory_max",
        "mig_mode",
        "pcie",
        "persistence_mode",
        "power_limit",
        "power_limit_enforced",
        "sm_max",
        "temperature_memory",
        "temperature_shutdown",
        "temperature_slowdown",
    )

    def __init__(self) -> None:
        self.temperature_memory: int | None = None
        self.temperature_slowdown: int | None = None
        self.temperature_shutdown: int | None = None
        self.power_limit: float | None = None
        self.power_limit_enforced: float | None = None
        self.energy_joules: float | None = None
        self.sm_max: int | None = None
        self.memory_max: int | None = None
        self.graphics_max: int | None = None
        self.persistence_mode: bool | None = None
        self.compute_mode: str | None = None
        self.mig_mode: bool | None = None
        self.pcie = schema.PcieLink()
        self.ecc = schema.EccErrors()

    def copy(self) -> _Slow:
        """The same figures in a new record (with its own PCIe and ECC records) to fill."""
        new = _Slow.__new__(_Slow)
        for name in _Slow.__slots__:
            setattr(new, name, getattr(self, name))
        new.pcie = dataclasses.replace(self.pcie)
        new.ecc = dataclasses.replace(self.ecc)
        return new


def _slow_setter(attr: str, scale: float | None = None) -> Callable[[_Slow, Any], None]:
    if scale is None:
        return lambda sl, v: setattr(sl, attr, v)
    return lambda sl, v: setattr(sl, attr, v / scale)


def _pcie_setter(attr: str, scale: int = 1) -> Callable[[_Slow, Any], None]:
    return lambda sl, v: setattr(sl.pcie, attr, v * scale)


def _ecc_setter(attr: str) -> Callable[[_Slow, Any], None]:
    return lambda sl, v: setattr(sl.ecc, attr, v)


def _set_ecc_mode(sl: _Slow, v: Any) -> None:
    sl.ecc.enabled = bool(v[0])
    sl.ecc.pending_enabled = bool(v[1])


def _set_persistence(sl: _Slow, v: int) -> None:
    sl.persistence_mode = v == 1


def _set_compute_mode(sl: _Slow, v: int) -> None:
    sl.compute_mode = codes.compute_mode_name(v)


def _set_mig_mode(sl: _Slow, v: Any) -> None:
    sl.mig_mode = v[0] == 1


def _set_retired_pending(sl: _Slow, v: int) -> None:
    sl.ecc.retired_pages_pending = bool(v)


class _Gpu:
    """One GPU: its handle, what it does not support, its last slow figures, its health."""

    def __init__(self, source: NvmlSource, index: int) -> None:
        self.src = source
        self.nv: Any = _Lenient(source._nvml)
        self.index = index
        self.handle: Any = None
        self.name: str | None = None
        self.uuid: str | None = None
        self.pci_bus_id: str | None = None
        self.serial: str | None = None
        self.vbios: str | None = None
        self.architecture: str | None = None
        self.static_done = False
        self.unsupported: dict[str, str] = {}  # remembered reasons, copied into each sample
        self.disabled: set[str] = set()
        self.hot_calls: list[_Call] = []
        self.hot: list[tuple[Any, tuple[Any, ...], Any, _Call]] = []
        self.static_calls: list[_Call] = []  # at open: what does not change
        self.counter_calls: list[_Call] = []  # once a minute: counters, modes, limits
        self.pcie_calls: list[_Call] = []  # PCIe throughput where there are no byte counters
        self.slow = _Slow()
        # transient failures of a tier, repeated until that tier is read again
        self.tier_missing: dict[str, dict[str, str]] = {}
        self.counters_at: float | None = None  # when the counter tier is due (None: now)
        self.pcie_at: float | None = None
        self.pcie_counters: bool | None = None  # the driver has PCIe byte counters (None: ?)
        self.pcie_last: tuple[int, int, float] | None = None  # tx, rx bytes and when
        self.pcie_wanted_until = -1.0  # someone looks at this GPU's PCIe until then
        self.energy_field = True  # energy from the counter fields, not its own 3 ms call
        self.need_slow = True  # per-process utilisation on the next read (after opening)
        self._missing: dict[str, str] = {}  # the tier being read: its transient failures
        self.mig = False
        self.mig_slices: list[tuple[Any, schema.MigInstance]] = []
        self.proc_ts = 0
        # per pid, the mean utilisation figures of the last process-utilisation reading
        self.proc_util: dict[int, tuple[float | None, ...]] = {}
        self.proc_util_reason: str | None = None  # the whole reading failed, or MIG
        self.proc_util_pids: set[int] = set()  # the processes listed when it was read
        self.processes: list[schema.GpuProcess] = []
        self.processes_missing: dict[str, str] = {}
        self.lost_reason: str | None = None
        self.retry_at = 0.0
        self.backoff = Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S)
        self.fans_n = 0
        self.fans_alive: list[bool] = []

    # --- errors -----------------------------------------------------------------------------

    def reason(self, exc: BaseException) -> str:
        own = getattr(exc, "reason", None)  # a replayed capture's "not in the capture"
        if isinstance(own, str):
            return own
        name = type(exc).__name__
        if name in ("NVMLError_NotSupported", "NVMLError_InvalidArgument"):
            return schema.NOT_SUPPORTED
        if name in (
            "NVMLError_FunctionNotFound",
            "NVMLError_ArgumentVersionMismatch",
            "NVMLError_Deprecated",
        ):
            return NOT_IN_DRIVER
        if name == "NVMLError_NoPermission":
            return "insufficient permissions to read this value"
        return f"the driver reported an error: {exc}"

    def check_lost(self, exc: BaseException) -> None:
        if isinstance(exc, self.src._lost_errors):
            raise _Lost(f"{exc} ({type(exc).__name__})") from exc

    def _failed(self, call: _Call, exc: BaseException, tick: dict[str, str], target: Any) -> None:
        """A call raised: GPU lost -> _Lost; unsupported -> remembered (or its fallback tried);
        anything else -> empty for this tick only, with the reason."""
        self.check_lost(exc)
        if not isinstance(exc, self.src._permanent_errors):
            reason = self.reason(exc)
            for field in call.fields:
                tick[field] = reason
            return
        fallback = call.fallback
        if fallback is not None:
            self._replace(call, fallback)
            if call.name == "memory":  # v1 cannot tell the reserved memory apart
                self.unsupported["memory_reserved"] = tick["memory_reserved"] = NO_RESERVED_V1
            try:
                fallback.apply(target, fallback.fn(self.handle, *fallback.args))
            except self.src._nvml_error as exc2:
                self._failed(fallback, exc2, tick, target)
            except Exception as exc2:
                self._broken(fallback, exc2, tick)
            return
        reason = call.reason or self.reason(exc)
        self.disabled.add(call.name)
        for field in call.fields:
            self.unsupported[field] = reason
            tick[field] = reason
        self._rebuild()

    def _broken(self, call: _Call, exc: Exception, tick: dict[str, str]) -> None:
        """A call raised something that is not an NVML error: its fields are empty for this
        tick, with the reason; the GPU and its other figures stay."""
        reason = failed_call(exc)
        for field in call.fields:
            tick[field] = reason

    def _replace(self, old: _Call, new: _Call) -> None:
        for calls in (self.hot_calls, self.static_calls, self.counter_calls, self.pcie_calls):
            if old in calls:
                calls[calls.index(old)] = new
        self._rebuild()

    # --- opening ----------------------------------------------------------------------------

    def _static(self, fn: Callable[..., Any], field: str) -> Any:
        try:
            return fn(self.handle)
        except self.src._nvml_error as exc:
            self.check_lost(exc)
            self.unsupported[field] = self.reason(exc)
            return None
        except UnicodeDecodeError as exc:  # the driver's bytes are not UTF-8 (seen on WSL)
            return text_from_decode_error(exc)
        except Exception as exc:
            self.unsupported[field] = failed_call(exc)
            return None

    def open(self) -> None:
        """Read what never changes and plan the tiers; raises _Lost."""
        nv = self.nv
        name = self._static(nv.nvmlDeviceGetName, "name")
        self.name = None if name is None else _text(name)
        uuid = self._static(nv.nvmlDeviceGetUUID, "uuid")
        self.uuid = None if uuid is None else _text(uuid)
        serial = self._static(nv.nvmlDeviceGetSerial, "serial")
        self.serial = None if serial is None else _text(serial)
        pci = self._static(nv.nvmlDeviceGetPciInfo, "pci_bus_id")
        self.pci_bus_id = None if pci is None else _text(pci.busId)
        vbios = self._static(nv.nvmlDeviceGetVbiosVersion, "vbios")
        self.vbios = None if vbios is None else _text(vbios)
        arch = self._static(nv.nvmlDeviceGetArchitecture, "architecture")
        self.architecture = None if arch is None else codes.ARCHITECTURES.get(arch)
        if arch is not None and self.architecture is None:
            self.unsupported["architecture"] = f"unknown architecture code {arch}"
        fans = self._static(nv.nvmlDeviceGetNumFans, "fans")
        self.unsupported.pop("fans", None)
        self.fans_n = -1 if fans is None else fans
        self.fans_alive = [True] * max(self.fans_n, 0)
        mig = self._static(nv.nvmlDeviceGetMigMode, "mig_mode")
        self.unsupported.pop("mig_mode", None)  # asked again on the counter tier
        self.mig = bool(mig) and mig[0] == 1
        self._plan()
        self._run_tier("static", self.static_calls)
        if self.mig:
            nvml_mig.list_mig(self)
        self.static_done = True

    def _plan(self) -> None:
        """The hot and slow calls for this GPU, each with where its answer goes."""
        # fmt: off
        nv = self.nv
        C = _Call
        mem_v1 = C("memory_v1", nv.nvmlDeviceGetMemoryInfo, (), _set_memory_v1, _MEMORY_FIELDS,
                   reason=schema.UNIFIED_MEMORY)
        events_v1 = C("clock_event_reasons_v1", nv.nvmlDeviceGetCurrentClocksThrottleReasons, (),
                      _Events().apply, ("clock_event_reasons",))
        clock = nv.nvmlDeviceGetClockInfo
        hot = [
            C("utilization", nv.nvmlDeviceGetUtilizationRates, (), _set_util,
              ("utilization", "memory_utilization")),
            C("memory", self._memory_v2, (), _set_memory_v2, _MEMORY_FIELDS,
              reason=schema.UNIFIED_MEMORY, fallback=mem_v1),
            C("temperature", nv.nvmlDeviceGetTemperature, (nv.NVML_TEMPERATURE_GPU,),
              _set_temperature, ("temperature",)),
            C("power_usage", nv.nvmlDeviceGetPowerUsage, (), _set_power, ("power_usage",)),
            C("clocks_sm", clock, (nv.NVML_CLOCK_SM,), _set_clock_sm, ("clocks_sm",)),
            C("clocks_memory", clock, (nv.NVML_CLOCK_MEM,), _set_clock_mem, ("clocks_memory",)),
            C("clocks_graphics", clock, (nv.NVML_CLOCK_GRAPHICS,), _set_clock_graphics,
              ("clocks_graphics",)),
            C("performance_state", nv.nvmlDeviceGetPerformanceState, (), _set_pstate,
              ("performance_state",)),
            C("clock_event_reasons", nv.nvmlDeviceGetCurrentClocksEventReasons, (),
              _Events().apply, ("clock_event_reasons",), fallback=events_v1),
            C("encoder_utilization", nv.nvmlDeviceGetEncoderUtilization, (), _set_encoder,
              ("encoder_utilization",)),
            C("decoder_utilization", nv.nvmlDeviceGetDecoderUtilization, (), _set_decoder,
              ("decoder_utilization",)),
        ]
        if self.fans_n == 0:
            self.unsupported["fans"] = schema.NO_FANS
        elif self.fans_n < 0:  # older driver without nvmlDeviceGetNumFans: one fan, v1 call
            hot.append(C("fans", nv.nvmlDeviceGetFanSpeed, (), _set_fan_v1, ("fans",)))
        else:
            hot.append(C("fans", self._read_fans, (), _set_fans, ("fans",)))
        self.hot_calls = hot

        # (name, call, arguments, where the answer goes); the field is named as the call
        threshold, max_clock = nv.nvmlDeviceGetTemperatureThreshold, nv.nvmlDeviceGetMaxClockInfo
        pcie = nv.nvmlDeviceGetPcieThroughput
        static: list[tuple[str, Callable[..., Any], tuple[Any, ...], Any]] = [
            ("temperature_slowdown", threshold, (nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,),
             _slow_setter("temperature_slowdown")),
            ("temperature_shutdown", threshold, (nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,),
             _slow_setter("temperature_shutdown")),
            ("clocks_sm_max", max_clock, (nv.NVML_CLOCK_SM,), _slow_setter("sm_max")),
            ("clocks_memory_max", max_clock, (nv.NVML_CLOCK_MEM,), _slow_setter("memory_max")),
            ("clocks_graphics_max", max_clock, (nv.NVML_CLOCK_GRAPHICS,),
             _slow_setter("graphics_max")),
            ("pcie_gen_max", nv.nvmlDeviceGetMaxPcieLinkGeneration, (), _pcie_setter("gen_max")),
            ("pcie_width_max", nv.nvmlDeviceGetMaxPcieLinkWidth, (), _pcie_setter("width_max")),
        ]
        # an administrator may change these (nvidia-smi -pl, -pm, -c, -mig, -e): once a minute
        counters: list[tuple[str, Callable[..., Any], tuple[Any, ...], Any]] = [
            ("power_limit", nv.nvmlDeviceGetPowerManagementLimit, (),
             _slow_setter("power_limit", 1000.0)),
            ("power_limit_enforced", nv.nvmlDeviceGetEnforcedPowerLimit, (),
             _slow_setter("power_limit_enforced", 1000.0)),
            ("pcie_gen_current", nv.nvmlDeviceGetCurrPcieLinkGeneration, (),
             _pcie_setter("gen_current")),
            ("pcie_width_current", nv.nvmlDeviceGetCurrPcieLinkWidth, (),
             _pcie_setter("width_current")),
        ]
        for counter, counter_name in ((nv.NVML_VOLATILE_ECC, "volatile"),
                                      (nv.NVML_AGGREGATE_ECC, "aggregate")):
            for etype, etype_name in ((nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, "corrected"),
                                      (nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected")):
                attr = f"{counter_name}_{etype_name}"
                counters.append((f"ecc_{attr}", nv.nvmlDeviceGetTotalEccErrors, (etype, counter),
                                 _ecc_setter(attr)))
        counters += [
            ("ecc_retired_pages_pending", nv.nvmlDeviceGetRetiredPagesPendingStatus, (),
             _set_retired_pending),
            ("persistence_mode", nv.nvmlDeviceGetPersistenceMode, (), _set_persistence),
            ("compute_mode", nv.nvmlDeviceGetComputeMode, (), _set_compute_mode),
            ("mig_mode", nv.nvmlDeviceGetMigMode, (), _set_mig_mode),
        ]
        self.static_calls = [C(name, fn, args, apply, (name,)) for name, fn, args, apply in static]
        self.counter_calls = [
            *(C(name, fn, args, apply, (name,)) for name, fn, args, apply in counters),
            # energy, memory temperature, PCIe replays and byte counters: one call
            C("field_values", nv.nvmlDeviceGetFieldValues, (_COUNTER_FIELDS,), self._set_fields,
              ("temperature_memory", "energy_joules", "pcie_replay_counter")),
            C("ecc_mode", nv.nvmlDeviceGetEccMode, (), _set_ecc_mode,
              ("ecc_enabled", "ecc_pending_enabled")),
        ]
        # the driver samples the bus for ~20 ms inside each: only without byte counters
        self.pcie_calls = [
            C("pcie_tx_bytes_per_s", pcie, (nv.NVML_PCIE_UTIL_TX_BYTES,),
              _pcie_setter("tx_bytes_per_s", 1024), ("pcie_tx_bytes_per_s",)),
            C("pcie_rx_bytes_per_s", pcie, (nv.NVML_PCIE_UTIL_RX_BYTES,),
              _pcie_setter("rx_bytes_per_s", 1024), ("pcie_rx_bytes_per_s",)),
        ]
        self._energy_call = C("energy_joules", nv.nvmlDeviceGetTotalEnergyConsumption, (),
                              _slow_setter("energy_joules", 1000.0), ("energy_joules",))
        # fmt: on
        self._rebuild()

    def _rebuild(self) -> None:
        """The hot plan: the calls still worth making, in a tuple-friendly form."""
        skip = self.disabled
        # Under MIG the parent gives no engine figures (nvidia-smi prints N/A for all four on
        # the real A100 MIG capture): not asked, said why, never shown as 0.
        if self.mig:
            skip = skip | set(_MIG_SKIPPED)
            for key in _MIG_FIELDS:
                self.unsupported[key] = schema.MIG_UNAVAILABLE
        else:
            for key in _MIG_FIELDS:
                if self.unsupported.get(key) == schema.MIG_UNAVAILABLE:
                    del self.unsupported[key]
        self.hot = [(c.fn, c.args, c.apply, c) for c in self.hot_calls if c.name not in skip]
        for tier in ("static_calls", "counter_calls", "pcie_calls"):
            setattr(self, tier, [c for c in getattr(self, tier) if c.name not in self.disabled])

    # --- custom calls -----------------------------------------------------------------------

    def _memory_v2(self, handle: Any) -> Any:
        try:
            return self.nv.nvmlDeviceGetMemoryInfo(handle, version=self.nv.nvmlMemory_v2)
        except TypeError:  # pynvml too old to take a version: behave like an old driver
            raise self.nv.NVMLError_FunctionNotFound() from None
        except AttributeError:
            raise self.nv.NVMLError_FunctionNotFound() from None

    def _read_fans(self, handle: Any) -> list[int | None]:
        fn = self.nv.nvmlDeviceGetFanSpeed_v2
        alive = self.fans_alive
        out: list[int | None] = [None] * self.fans_n
        for i in range(self.fans_n):
            if alive[i]:
                try:
                    out[i] = fn(handle, i)
                except Exception as exc:
                    if not isinstance(exc, self.src._nvml_error):
                        continue  # this fan, this tick
                    self.check_lost(exc)
                    if isinstance(exc, self.src._permanent_errors):
                        alive[i] = False
                        if not any(alive):
                            self.unsupported["fans"] = schema.NOT_SUPPORTED
        return out

    def _set_fields(self, sl: _Slow, values: Any) -> None:
        """Memory temperature, energy, PCIe replays and PCIe byte counters from one call."""
        counts: dict[int, int] = {}
        energy_unsupported = False
        for fv in values:
            field = _FIELD_NAMES.get(fv.fieldId)
            if field is None:
                continue
            if fv.nvmlReturn != 0:
                if fv.fieldId in (_FI_PCIE_TX_BYTES, _FI_PCIE_RX_BYTES):
                    if fv.nvmlReturn == 3:
                        self.pcie_counters = False  # the sampling call takes over
                    continue
                if fv.fieldId == _FI_TOTAL_ENERGY and fv.nvmlReturn == 3:
                    energy_unsupported = True
                    continue
                reason = (
                    schema.NOT_SUPPORTED
                    if fv.nvmlReturn == 3
                    else f"the driver reported error {fv.nvmlReturn}"
                )
                if fv.nvmlReturn == 3:
                    self.unsupported[field] = reason
                else:
                    self._missing[field] = reason
            elif fv.fieldId == _FI_MEMORY_TEMP:
                sl.temperature_memory = int(fv.value.uiVal)
            elif fv.fieldId == _FI_TOTAL_ENERGY:
                sl.energy_joules = int(fv.value.ullVal) / 1000.0
            elif fv.fieldId == _FI_PCIE_REPLAY_COUNTER:
                sl.pcie.replay_counter = int(fv.value.uiVal)
            else:
                counts[fv.fieldId] = int(fv.value.ullVal)
        if energy_unsupported and self.energy_field:
            self._energy_by_call(sl)
        if len(counts) == 2:
            self.pcie_counters = True
            self._pcie_rates(sl, counts[_FI_PCIE_TX_BYTES], counts[_FI_PCIE_RX_BYTES])

    def _energy_by_call(self, sl: _Slow) -> None:
        """A driver without the energy field: its own call (~3 ms) from now on."""
        self.energy_field = False
        call = self._energy_call
        self.counter_calls.append(call)
        try:
            call.apply(sl, call.fn(self.handle, *call.args))
        except self.src._nvml_error as exc:
            self._failed(call, exc, self._missing, sl)
        else:
            self.unsupported.pop("energy_joules", None)  # set by a field-values call refused

    def _pcie_rates(self, sl: _Slow, tx: int, rx: int) -> None:
        """Bytes per second over PCIe between two readings of the byte counters."""
        now = self.src._clock()
        last, self.pcie_last = self.pcie_last, (tx, rx, now)
        why = None
        if last is None or now <= last[2]:
            why = PCIE_NEEDS_TWO
        elif tx < last[0] or rx < last[1]:
            why = PCIE_COUNTER_RESET
        if why is not None:
            sl.pcie.tx_bytes_per_s = sl.pcie.rx_bytes_per_s = None
            self.tier_missing["pcie_rates"] = dict.fromkeys(_PCIE_RATES, why)
            return
        elapsed = now - last[2]
        sl.pcie.tx_bytes_per_s = (tx - last[0]) / elapsed
        sl.pcie.rx_bytes_per_s = (rx - last[1]) / elapsed
        self.tier_missing.pop("pcie_rates", None)

    # --- reading ----------------------------------------------------------------------------

    def lost_sample(self) -> schema.GpuSample:
        return schema.GpuSample(
            index=self.index,
            name=self.name,
            uuid=self.uuid,
            pci_bus_id=self.pci_bus_id,
            vendor=NVIDIA,
            serial=self.serial,
            state=schema.GPU_LOST,
            lost_reason=self.lost_reason,
        )

    def mark_lost(self, reason: str, now: float) -> None:
        if self.lost_reason is None:  # a new loss: retried soon, then less and less often
            self.backoff.reset()
        self.lost_reason = reason
        self.retry_at = now + self.backoff.next()

    def reacquire(self) -> None:
        """A fresh handle for a lost (or never opened) GPU; raises _Lost if still gone."""
        nv = self.nv
        try:
            if self.uuid is not None:
                self.handle = nv.nvmlDeviceGetHandleByUUID(self.uuid)
            else:
                self.handle = nv.nvmlDeviceGetHandleByIndex(self.index)
        except self.src._nvml_error as exc:
            raise _Lost(f"{exc} ({type(exc).__name__})") from exc
        if not self.static_done:
            self.open()
        self.need_slow = True
        self.counters_at = self.pcie_at = None  # read afresh; counters may have restarted
        self.pcie_last = None

    def read(self, processes: bool, slow: bool, now: float) -> schema.GpuSample:
        if self.lost_reason is not None:
            if now < self.retry_at:
                return self.lost_sample()
            try:
                self.reacquire()
                sample = self._read(processes, True, now)
            except _Lost as exc:
                self.mark_lost(str(exc), now)
                return self.lost_sample()
            except Exception as exc:  # a bug must not stop the other GPUs
                self.mark_lost(f"{READ_FAILED}: {exc!r}", now)
                return self.lost_sample()
            self.lost_reason = None
            return sample
        try:
            return self._read(processes, slow or self.need_slow, now)
        except _Lost as exc:
            self.mark_lost(str(exc), now)
        except Exception as exc:
            self.mark_lost(f"{READ_FAILED}: {exc!r}", now)
        return self.lost_sample()

    def _read(self, processes: bool, slow: bool, now: float) -> schema.GpuSample:
        self._read_due_tiers(slow, now)
        if slow:
            self.need_slow = False
        sl = self.slow
        s = schema.GpuSample(
            index=self.index,
            name=self.name,
            uuid=self.uuid,
            pci_bus_id=self.pci_bus_id,
            vendor=NVIDIA,
            serial=self.serial,
            vbios=self.vbios,
            architecture=self.architecture,
            temperature_memory=sl.temperature_memory,
            temperature_slowdown=sl.temperature_slowdown,
            temperature_shutdown=sl.temperature_shutdown,
            power_limit=sl.power_limit,
            power_limit_enforced=sl.power_limit_enforced,
            clocks=schema.Clocks(
                sm_max=sl.sm_max, memory_max=sl.memory_max, graphics_max=sl.graphics_max
            ),
            pcie=sl.pcie,
            ecc=sl.ecc,
            mig_mode=sl.mig_mode,
            persistence_mode=sl.persistence_mode,
            compute_mode=sl.compute_mode,
            energy_joules=sl.energy_joules,
            unsupported=dict(self.unsupported),
        )
        for missing in self.tier_missing.values():
            if missing:
                s.unsupported.update(missing)
        handle = self.handle
        err = self.src._nvml_error
        for fn, args, apply, call in self.hot:
            try:
                apply(s, fn(handle, *args))
            except err as exc:
                self._failed(call, exc, s.unsupported, s)
            except Exception as exc:
                self._broken(call, exc, s.unsupported)
        if self.mig:
            s.mig_instances = nvml_mig.mig_instances(self)
        if processes:
            nvml_processes.read_processes(self)
        if slow:
            nvml_processes.read_process_util(self)
        if processes:
            nvml_processes.apply_process_util(self, self.processes)
        s.processes = list(self.processes)
        if self.processes_missing:
            s.unsupported.update(self.processes_missing)
        return s

    def _read_due_tiers(self, slow: bool, now: float) -> None:
        """The counter tier when its minute is up; PCIe throughput when its tier is due or
        someone looks at it (on a slow tick)."""
        src = self.src
        if self.counters_at is None or now >= self.counters_at:
            self.counters_at = now + src.counter_interval_s
            self._run_tier("counters", self.counter_calls)
            self._after_counters()
        wanted = slow and now < self.pcie_wanted_until
        if self.pcie_counters:
            if wanted:
                self._run_tier("pcie", [self._pcie_counter_call()])
            return
        interval = src.pcie_interval_s
        if wanted or (interval > 0 and (self.pcie_at is None or now >= self.pcie_at)):
            self.pcie_at = now + interval
            self._run_tier("pcie", self.pcie_calls)
        elif interval <= 0 and self.pcie_at is None:
            self.tier_missing["pcie"] = dict.fromkeys(_PCIE_RATES, PCIE_OFF)

    def _pcie_counter_call(self) -> _Call:
        return _Call(
            "pcie_counters",
            self.nv.nvmlDeviceGetFieldValues,
            ([_FI_PCIE_TX_BYTES, _FI_PCIE_RX_BYTES],),
            self._set_fields,
            _PCIE_RATES,
        )

    def _run_tier(self, tier: str, calls: list[_Call]) -> None:
        """One tier's calls into a copy of the figures read less often than every tick."""
        sl = self.slow.copy()
        self._missing = missing = {}
        handle = self.handle
        err = self.src._nvml_error
        for call in list(calls):
            try:
                call.apply(sl, call.fn(handle, *call.args))
            except err as exc:
                self._failed(call, exc, missing, sl)
            except Exception as exc:
                self._broken(call, exc, missing)
        # a tier's transient failures are repeated until that tier is read again
        for key in list(missing):
            if key in self.unsupported:
                del missing[key]
        self.tier_missing[tier] = missing
        self.slow = sl

    def _after_counters(self) -> None:
        """What the counter tier decides: energy's source, PCIe's path, MIG."""
        if "field_values" in self.disabled:  # a driver without field values at all
            if self.pcie_counters is None:
                self.pcie_counters = False
            if self.energy_field:  # into this reading's figures, not yet published
                self._energy_by_call(self.slow)
        mig = bool(self.slow.mig_mode)
        if mig != self.mig:
            self.mig = mig
            self._rebuild()
        if mig:
            nvml_mig.list_mig(self)
        else:
            self.mig_slices = []


class NvmlSource:
    """GPU readings through NVML, for every GPU of this host. Implements ``GpuSource``."""

    name = schema.SOURCE_NVML
    attributes_processes = False

    def __init__(
        self,
        nvml: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        counter_interval_s: float = COUNTER_INTERVAL_S,
        pcie_interval_s: float = PCIE_INTERVAL_S,
    ):
        self.counter_interval_s = counter_interval_s
        self.pcie_interval_s = pcie_interval_s  # 0: only while wanted
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as exc:
                raise SourceUnavailable(
                    "nvidia-ml-py (the pynvml module) is not installed"
                ) from exc
        self._nvml = nvml
        self._clock = clock
        self._nvml_error = nvml.NVMLError
        self._lost_errors = tuple(getattr(nvml, n) for n in LOST_ERRORS if hasattr(nvml, n))
        self._permanent_errors = tuple(
            getattr(nvml, n) for n in PERMANENT_ERRORS if hasattr(nvml, n)
        )
        self._open = False
        self._start()
        self._open = True
        self._driver = self._versions()
        self._gpus = [_Gpu(self, i) for i in range(self._count)]
        now = clock()
        for gpu in self._gpus:
            try:
                gpu.reacquire()
            except _Lost as exc:
                if type(exc.__cause__).__name__ == "NVMLError_LibRmVersionMismatch":
                    self.close()
                    raise DriverMismatch(DRIVER_MISMATCH_MESSAGE) from exc
                gpu.mark_lost(str(exc), now)
            except Exception as exc:  # one GPU failing to open must not hide the others
                gpu.mark_lost(f"{READ_FAILED}: {exc!r}", now)

    def _start(self) -> None:
        """nvmlInit once, and the GPU count; turns every failure into a plain message."""
        nv = self._nvml
        started = False
        try:
            init = getattr(nv, "nvmlInit_v2", None) or nv.nvmlInit
            init()
            started = True
            self._count = int(nv.nvmlDeviceGetCount())
        except Exception as exc:
            if started:
                self._shutdown()
            raise self._start_error(exc) from exc
        if self._count <= 0:
            self._shutdown()
            raise SourceUnavailable(NO_GPU_MESSAGE)

    def _start_error(self, exc: Exception) -> Exception:
        name = type(exc).__name__
        if name == "NVMLError_LibRmVersionMismatch":
            return DriverMismatch(DRIVER_MISMATCH_MESSAGE)
        if name == "NVMLError_LibraryNotFound":
            return SourceUnavailable(
                "the NVML library (libnvidia-ml.so) was not found: no NVIDIA driver is "
                "installed here, or it is not visible inside this container"
            )
        if name == "NVMLError_DriverNotLoaded":
            return SourceUnavailable(
                "the NVIDIA kernel driver is not loaded: no NVIDIA GPU is usable here"
            )
        if name == "NVMLError_NoPermission":
            return SourceUnavailable(
                "no permission to open the NVIDIA devices (/dev/nvidia*): run as a user "
                "allowed to use the GPUs, or give the container access to them"
            )
        return SourceUnavailable(f"NVML could not start: {exc} ({name})")

    def _versions(self) -> schema.DriverInfo:
        nv = self._nvml

        def ask(*names: str) -> Any:
            for fname in names:
                fn = getattr(nv, fname, None)
                if fn is None:
                    continue
                try:
                    return fn()
                except Exception:  # a missing version never stops the source
                    continue
            return None

        driver = ask("nvmlSystemGetDriverVersion")
        nvml_version = ask("nvmlSystemGetNVMLVersion")
        cuda = ask("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion")
        return schema.DriverInfo(
            source=self.name,
            status=schema.STATUS_OK,
            driver_version=None if driver is None else _text(driver),
            cuda_version=None if cuda is None else cuda_version_text(int(cuda)),
            nvml_version=None if nvml_version is None else _text(nvml_version),
        )

    def want_pcie(self, seconds: float = PCIE_WANTED_S, gpu: str | None = None) -> bool:
        """Someone looks at PCIe throughput (a GPU's detail on the dashboard, a /metrics
        scrape): read it on every slow tick for ``seconds`` from now, whatever its own tier.
        ``gpu`` is a GPU's UUID (None: every GPU). False when no GPU has that UUID.
        Safe from any thread: it only moves a deadline the sampling thread reads."""
        until = self._clock() + seconds
        found = False
        for each in self._gpus:
            if gpu is None or each.uuid == gpu:
                each.pcie_wanted_until = max(each.pcie_wanted_until, until)
                found = True
        return found

    def pcie_wanted(self, now: float, gpu: str | None = None) -> bool:
        """Whether PCIe throughput is wanted now (of the GPU with UUID ``gpu``, or of any)."""
        return any(
            now < each.pcie_wanted_until for each in self._gpus if gpu is None or each.uuid == gpu
        )

    def read(self, *, processes: bool = True, slow: bool = True) -> schema.GpuReading:
        d = self._driver
        if not self._open:
            return schema.GpuReading(
                driver=schema.DriverInfo(
                    source=self.name, status=schema.STATUS_ERROR, message="NVML source closed"
                )
            )
        now = self._clock()
        gpus = [gpu.read(processes, slow, now) for gpu in self._gpus]
        messages: list[str] = []
        for gpu, sample in zip(self._gpus, gpus, strict=True):
            if sample.state == schema.GPU_LOST:
                wait = max(0.0, gpu.retry_at - now)
                messages.append(
                    f"GPU {gpu.index} is lost: {sample.lost_reason}; retrying in {wait:.0f} s"
                )
            elif sample.persistence_mode is False:
                messages.append(
                    f"GPU {gpu.index} runs without persistence mode: the driver may tear it "
                    "down between readings, making them slow; enable it with "
                    "`sudo nvidia-smi -pm 1` or the nvidia-persistenced service"
                )
        driver = schema.DriverInfo(
            source=d.source,
            status=d.status,
            driver_version=d.driver_version,
            cuda_version=d.cuda_version,
            nvml_version=d.nvml_version,
        )
        return schema.GpuReading(driver=driver, gpus=gpus, messages=messages)

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):  # already shut down, or the library went away
            self._nvml.nvmlShutdown()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._shutdown()
