"""The last-resort GPU source: ``nvtop -s``, when neither NVML nor nvidia-smi can be used.

nvtop's snapshot mode (``-s``, nvtop 3.2 and later) prints one JSON array of devices and
exits. Every figure is a string with its unit glued on (``"1350MHz"``, ``"69C"``,
``"696W"``, ``"6%"``, memory as a byte count ``"85520809984"``) and a figure the driver
did not give is ``null``. Versions differ (see monitoring/captures/nvtop/README.md):

- 3.2.x: device_name, gpu_clock, mem_clock, temp, fan_speed, power_draw, gpu_util, mem_util.
- 3.3.0 and 3.3.1 add mem_total/mem_used/mem_free but forget the commas before them,
  so the JSON is invalid; that exact mistake is repaired here (and said in a message).
- 3.3.2 and later add encode/decode (or encode_decode on shared engines) and a per-device
  ``processes`` array.

Two nvtop meanings differ from the schema's: ``mem_util`` is memory *occupancy*
(used * 100 / total), not memory-controller activity, so it does not fill
``memory_utilization``; and ``gpu_clock`` is the larger of the graphics and SM clocks.

Spawning nvtop costs a process start, NVML (or DRM) initialisation and nvtop's own
100 ms settling sleep per reading, hundreds of milliseconds against microseconds for NVML:
that is why it comes last, and why :class:`NvtopSource` rate-limits itself.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable

from monitoring.telemetry import values
from monitoring.telemetry.errors import TOO_DEEP, ParseError, SourceUnavailable
from monitoring.telemetry.processes import merge_processes
from monitoring.telemetry.schema import (
    NOT_REPORTED,
    NOT_SUPPORTED,
    SOURCE_NVTOP,
    STATUS_ERROR,
    STATUS_NO_GPU,
    STATUS_OK,
    DriverInfo,
    GpuProcess,
    GpuReading,
    GpuSample,
)
from monitoring.telemetry.values import Missing
from monitoring.telemetry.vendor import UNKNOWN_REASON, vendor_from_name

NO_GPU_MESSAGE = "nvtop found no GPU"
PROCESSES_NOTE = "nvtop snapshot mode does not list processes"
# nvtop writes null exactly when the driver call behind a figure did not succeed.
NULL_REASON = NOT_SUPPORTED
MEMORY_UTILIZATION_REASON = (
    "nvtop reports memory occupancy (mem_util), not memory-controller activity"
)
NO_CMDLINE_REASON = "nvtop could not read its command line (another user's process?)"
INTEGRATED_FAN_REASON = "integrated GPU: cooled by the CPU fan"
REPAIRED_JSON_MESSAGE = (
    "nvtop printed invalid JSON (missing commas, a known nvtop 3.3.0/3.3.1 bug); "
    "it was read after adding them back. Upgrading nvtop to 3.3.2 or later fixes this."
)
#: Where Homebrew (Apple silicon, then Intel Macs), MacPorts and snap install nvtop.
EXTRA_NVTOP_DIRS = ("/opt/homebrew/bin", "/usr/local/bin", "/opt/local/bin", "/snap/bin")
# What ``nvtop -s`` prints (on stdout, exit 0) when it finds no device at all.
_NVTOP_NO_GPU_TEXT = "No GPU to monitor."

# Figures nvtop's snapshot never prints, whatever its version.
_NEVER_REPORTED: dict[str, str] = {
    name: NOT_REPORTED
    for name in (
        "uuid",
        "pci_bus_id",
        "serial",
        "vbios",
        "architecture",
        "memory_reserved",
        "temperature_memory",
        "temperature_slowdown",
        "temperature_shutdown",
        "power_limit",
        "power_limit_enforced",
        "performance_state",
        "clock_event_reasons",
        "mig_mode",
        "persistence_mode",
        "compute_mode",
        "energy_joules",
        "clocks.sm",
        "clocks.video",
        "clocks.graphics_max",
        "clocks.sm_max",
        "clocks.memory_max",
        "pcie.gen_current",
        "pcie.gen_max",
        "pcie.width_current",
        "pcie.width_max",
        "pcie.tx_bytes_per_s",
        "pcie.rx_bytes_per_s",
        "pcie.replay_counter",
        "ecc.enabled",
        "ecc.volatile_corrected",
        "ecc.volatile_uncorrected",
        "ecc.aggregate_corrected",
        "ecc.aggregate_uncorrected",
    )
}
_NEVER_REPORTED["memory_utilization"] = MEMORY_UTILIZATION_REASON

_PROCESS_KINDS = {
    "compute": "compute",
    "graphic": "graphics",
    "graphic & compute": "compute+graphics",
}

# 3.3.0/3.3.1: a value ends a line and the next line starts a key, with no comma between.
_MISSING_COMMA = re.compile(r'("|null)[ \t]*\n([ \t]*")')


# --- parsing ------------------------------------------------------------------------------


def parse_nvtop_snapshot(text: str, origin: str = "nvtop -s") -> GpuReading:
    """Normalise one ``nvtop -s`` output. Raises only :class:`ParseError`.

    Every device nvtop lists is kept, whatever its vendor (nvtop also lists AMD, Intel,
    Apple … GPUs): the schema is vendor-neutral and the user asked nvtop what it sees.
    Each GPU's ``vendor`` comes from its name (:mod:`vendor`), nvtop printing none.
    ``index`` is the position in nvtop's list, which for NVIDIA-only hosts is NVML order.
    A pid nvtop lists twice on one device is one process (:func:`merge_processes`).
    """
    stripped = text.strip()
    if stripped == _NVTOP_NO_GPU_TEXT:
        return _no_gpu()
    data, repaired = _load(stripped, origin)
    if not isinstance(data, list):
        raise ParseError(origin, f"expected a JSON array of devices, got {type(data).__name__}")
    gpus = [_gpu(index, device, origin) for index, device in enumerate(data)]
    if not gpus:
        return _no_gpu()
    messages = [REPAIRED_JSON_MESSAGE] if repaired else []
    driver = DriverInfo(source=SOURCE_NVTOP, status=STATUS_OK)
    return GpuReading(driver=driver, gpus=gpus, messages=messages)


def _no_gpu() -> GpuReading:
    return GpuReading(
        driver=DriverInfo(source=SOURCE_NVTOP, status=STATUS_NO_GPU, message=NO_GPU_MESSAGE)
    )


def _load(text: str, origin: str) -> tuple[object, bool]:
    if not text:
        raise ParseError(origin, "empty output")
    # strict=False: a control character inside a string (a command line) costs nothing
    try:
        return json.loads(text, strict=False), False
    except ValueError as exc:
        error: Exception | str = exc
    except RecursionError:
        raise ParseError(origin, f"invalid JSON: {TOO_DEEP}") from None
    repaired = _MISSING_COMMA.sub(r"\1,\n\2", text)
    if repaired != text:
        try:
            return json.loads(repaired, strict=False), True
        except (ValueError, RecursionError):
            pass
    raise ParseError(origin, f"invalid JSON: {error}")


def _field(device: dict, key: str, where: str, origin: str) -> str | Missing | None:
    """A raw figure: its text, None for JSON null, or Missing when the key is absent."""
    if key not in device:
        return Missing(NOT_REPORTED)
    raw = device[key]
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return str(raw)
    raise ParseError(origin, f"{where}: {key!r} is {type(raw).__name__}, not a string")


class _Figures:
    """Reads the figures of one device (or process), noting why each missing one is missing."""

    __slots__ = ("device", "origin", "unsupported", "where")

    def __init__(self, device: dict, unsupported: dict[str, str], where: str, origin: str):
        self.device = device
        self.unsupported = unsupported
        self.where = where
        self.origin = origin

    def raw(self, field: str, key: str) -> str | None:
        """The text of ``key``, or None with the reason recorded under ``field``."""
        raw = _field(self.device, key, self.where, self.origin)
        if isinstance(raw, Missing):
            self.unsupported[field] = raw.reason
            return None
        if raw is None:
            self.unsupported[field] = NULL_REASON
            return None
        return raw

    def read(self, field: str, key: str, conv: Callable[[str | None], object]) -> object | None:
        raw = self.raw(field, key)
        if raw is None:
            return None
        try:
            value = conv(raw)
        except (ValueError, OverflowError):
            self.unsupported[field] = f"unreadable value {raw!r}"
            return None
        if isinstance(value, Missing):
            self.unsupported[field] = value.reason
            return None
        return value


def _bytes_to_mib(text: str | None) -> int | Missing:
    return values.mebibytes(text, default_unit="b")


def _celsius(text: str | None) -> int | Missing:
    """``"69C"``; ``"156F"`` when nvtop was run with -f (we never ask for it, a file might)."""
    value = values.number(text)
    if isinstance(value, Missing) or text is None:
        return value
    if text.strip().upper().endswith("F"):
        return round((value - 32) / 1.8)
    return round(value)


def _gpu(index: int, device: object, origin: str) -> GpuSample:
    where = f"device {index}"
    if not isinstance(device, dict):
        raise ParseError(origin, f"{where} is {type(device).__name__}, not an object")
    gpu = GpuSample(index=index, unsupported=dict(_NEVER_REPORTED))
    f = _Figures(device, gpu.unsupported, where, origin)
    gpu.name = f.raw("name", "device_name")
    gpu.vendor = vendor_from_name(gpu.name)
    if gpu.vendor is None:
        gpu.unsupported["vendor"] = UNKNOWN_REASON
    gpu.clocks.graphics = f.read("clocks.graphics", "gpu_clock", values.integer)
    gpu.clocks.memory = f.read("clocks.memory", "mem_clock", values.integer)
    gpu.temperature = f.read("temperature", "temp", _celsius)
    power = f.read("power_usage", "power_draw", values.number)
    gpu.power_usage = None if power is None else float(power)
    gpu.utilization = f.read("utilization", "gpu_util", values.integer)
    _codecs(gpu, f)
    gpu.memory_total = f.read("memory_total", "mem_total", _bytes_to_mib)
    gpu.memory_used = f.read("memory_used", "mem_used", _bytes_to_mib)
    gpu.memory_free = f.read("memory_free", "mem_free", _bytes_to_mib)
    _fans(gpu, f)
    _processes(gpu, device, origin)
    return gpu


def _codecs(gpu: GpuSample, f: _Figures) -> None:
    if "encode_decode" in f.device:
        # One engine does both (AMD VCN): its busy % is the encoder's and the decoder's.
        shared = f.read("encoder_utilization", "encode_decode", values.integer)
        gpu.encoder_utilization = gpu.decoder_utilization = shared
        if shared is None:
            gpu.unsupported["decoder_utilization"] = gpu.unsupported["encoder_utilization"]
        return
    gpu.encoder_utilization = f.read("encoder_utilization", "encode", values.integer)
    gpu.decoder_utilization = f.read("decoder_utilization", "decode", values.integer)


def _fans(gpu: GpuSample, f: _Figures) -> None:
    """``"35%"`` is one fan at 35 %; RPM, "CPU Fan" and null carry no percentage."""
    raw = f.raw("fans", "fan_speed")
    if raw is None:
        return
    text = raw.strip()
    if text.lower() == "cpu fan":
        gpu.unsupported["fans"] = INTEGRATED_FAN_REASON
        return
    if text.upper().endswith("RPM"):
        gpu.unsupported["fans"] = f"nvtop reports this fan in RPM only ({text}), not in %"
        return
    speed = f.read("fans", "fan_speed", values.integer)
    if speed is not None:
        gpu.fans = [speed]


def _processes(gpu: GpuSample, device: dict, origin: str) -> None:
    listed = device.get("processes")
    if "processes" not in device or listed is None:
        gpu.processes_note = PROCESSES_NOTE
        return
    if not isinstance(listed, list):
        raise ParseError(origin, f"device {gpu.index}: 'processes' is not an array")
    rows = (_process(gpu.index, i, proc, origin) for i, proc in enumerate(listed))
    gpu.processes = merge_processes(row for row in rows if row is not None)


def _process(gpu_index: int, position: int, proc: object, origin: str) -> GpuProcess | None:
    where = f"device {gpu_index} process {position}"
    if not isinstance(proc, dict):
        raise ParseError(origin, f"{where} is {type(proc).__name__}, not an object")
    pid_text = _field(proc, "pid", where, origin)
    if not isinstance(pid_text, str):
        raise ParseError(origin, f"{where}: no pid")
    try:
        pid = values.integer(pid_text)
    except (ValueError, OverflowError):
        return None  # a damaged pid names nothing a user can act on: that row alone goes
    if not isinstance(pid, int):
        return None
    out = GpuProcess(pid=pid, gpu_index=gpu_index, gpu_uuid=None)
    f = _Figures(proc, out.unsupported, where, origin)
    kind = f.raw("type", "kind")
    if kind is not None:
        out.type = _PROCESS_KINDS.get(kind.strip(), out.type)
    # Only the program name is kept: the command line itself is left to the sampler's
    # attribution from /proc, which redacts secrets.
    cmdline = f.raw("name", "cmdline")
    if cmdline and cmdline.split():
        out.name = os.path.basename(cmdline.split()[0])
    elif proc.get("cmdline", "") is None:
        out.unsupported["name"] = NO_CMDLINE_REASON
    out.user = f.raw("user", "user")
    out.sm_utilization = f.read("sm_utilization", "gpu_usage", values.integer)
    out.used_memory_mib = f.read("used_memory_mib", "gpu_mem_bytes_alloc", _bytes_to_mib)
    out.unsupported["memory_utilization"] = MEMORY_UTILIZATION_REASON
    if "encode_decode" in proc:
        shared = f.read("encoder_utilization", "encode_decode", values.integer)
        out.encoder_utilization = out.decoder_utilization = shared
    else:
        out.encoder_utilization = f.read("encoder_utilization", "encode", values.integer)
        out.decoder_utilization = f.read("decoder_utilization", "decode", values.integer)
    return out


# --- the source ---------------------------------------------------------------------------


class NvtopSource:
    """GpuSource over ``nvtop -s``: one nvtop process per reading, at most every 2 s.

    nvtop 3.3.2+ also has ``-l`` (loop to stdout), but older nvtop has not, and a reading
    every ``min_interval_s`` is plenty for a last resort; a read sooner than that returns
    the previous reading. A later failure (timeout, non-zero exit, garbage) becomes a
    reading with status "error", never an exception.
    """

    name = SOURCE_NVTOP
    attributes_processes = False

    def __init__(
        self,
        binary: str = "nvtop",
        timeout_s: float = 5.0,
        min_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        path = find_nvtop(binary)
        if path is None:
            raise SourceUnavailable(f"nvtop not found ({binary!r} is not an executable on PATH)")
        self.path = path
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._closed = False
        first = self._run()
        if first.driver.status == STATUS_ERROR:
            raise SourceUnavailable(first.driver.message or "nvtop -s failed")
        if not first.gpus:
            raise SourceUnavailable(NO_GPU_MESSAGE)
        self._last = first
        self._last_at = self._clock()

    def _run(self) -> GpuReading:
        command = f"{self.path} -s"
        try:
            done = subprocess.run(
                [self.path, "-s"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _error(f"{command} did not answer within {self.timeout_s:g} s")
        except OSError as exc:
            return _error(f"{command} could not be started: {exc}")
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = f": {detail[-1]}" if detail else ""
            return _error(f"{command} exited with status {done.returncode}{why}")
        try:
            return parse_nvtop_snapshot(done.stdout.decode("utf-8", "replace"), origin=command)
        except ParseError as exc:
            return _error(str(exc))

    def read(self, *, processes: bool = True, slow: bool = True) -> GpuReading:
        now = self._clock()
        if now - self._last_at >= self.min_interval_s:
            self._last = self._run()
            self._last_at = now
        if processes:
            return self._last
        return _without_processes(self._last)

    def close(self) -> None:
        """nvtop runs only while a reading is taken: nothing stays open."""
        self._closed = True


def find_nvtop(binary: str = "nvtop") -> str | None:
    """``binary`` on PATH, else where package managers put it: a service started by launchd
    or systemd has a short PATH without Homebrew's /opt/homebrew/bin (Apple silicon Macs,
    where nvtop is the only source) or /usr/local/bin."""
    path = shutil.which(binary)
    if path is not None or os.sep in binary:
        return path
    return shutil.which(binary, path=os.pathsep.join(EXTRA_NVTOP_DIRS))


def _error(message: str) -> GpuReading:
    return GpuReading(driver=DriverInfo(source=SOURCE_NVTOP, status=STATUS_ERROR, message=message))


def _without_processes(reading: GpuReading) -> GpuReading:
    gpus = []
    for gpu in reading.gpus:
        bare = copy.copy(gpu)
        bare.processes = []
        gpus.append(bare)
    return GpuReading(driver=reading.driver, gpus=gpus, messages=list(reading.messages))
