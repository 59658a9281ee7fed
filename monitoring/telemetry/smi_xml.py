"""Parse ``nvidia-smi -q -x`` into the schema.

The XML is the richest thing nvidia-smi prints and the one a long-running ``-lms`` loop
emits, so the nvidia-smi source lives on it. Its element names moved between drivers
(``power_readings`` -> ``gpu_power_readings``, ``clocks_throttle_reasons`` ->
``clocks_event_reasons``, ``power_draw`` -> ``average_power_draw``/``instant_power_draw`` …)
and any value may be ``N/A``, ``[Not Supported]``, ``ERR!`` or a deprecation notice: every
lookup below tries the known spellings and reads figures through :mod:`values`, and a value
it cannot read becomes ``None`` with a reason rather than failing the whole reading.
Only input that is not an nvidia-smi XML document at all raises :class:`ParseError`.

Generations of the schema (``nvsmi_device_v4.dtd`` … ``v13``, surveyed on real outputs in
monitoring/captures/field/README.md) are read into the same fields: processes under
``<processes>`` or, up to DTD v6 (driver 340), under ``<compute_processes>`` and
``<graphics_processes>``; memory under ``<fb_memory_usage>`` or the older ``<memory_usage>``.
A document that is not well-formed (an unescaped ``&`` or bytes that are not text in a
process name) is read leniently (:mod:`lenient_xml`) rather than rejected.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from monitoring.telemetry import codes, schema, values
from monitoring.telemetry.decoding import xml_safe
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.lenient_xml import parse_lenient
from monitoring.telemetry.processes import merge_processes
from monitoring.telemetry.values import Missing
from monitoring.telemetry.vendor import NVIDIA

ROOT_TAG = "nvidia_smi_log"
#: nvidia-smi writes PCIe throughput in KB/s, NVML's unit, which is KiB (1024 bytes).
KB = 1024
TLIMIT_ONLY = "given only relative to the thermal limit (T.Limit), which this reading lacks"
_LOST_REASONS = {"the GPU is lost", "the GPU requires a reset"}
# The supported-clocks table is ~60 % of a document and nothing here reads it: cut it before
# parsing (saves ~300 us per document on an H100).
_SKIP_OPEN, _SKIP_CLOSE = "<supported_clocks>", "</supported_clocks>"

REPAIRED_MESSAGE = (
    "nvidia-smi's XML was not well-formed ({error}); it was read leniently: a value "
    "holding the damage may be cut short or shown as unreadable"
)
# Where each generation lists processes, and the type a row without <type> has there.
_PROCESS_LISTS = (
    ("processes/process_info", "compute"),
    ("compute_processes/process_info", "compute"),  # DTD v6 and before (driver 340)
    ("graphics_processes/process_info", "graphics"),
)

_PROCESS_TYPES = {
    "C": "compute",
    "G": "graphics",
    "C+G": "compute+graphics",
    "M": "compute",
    "M+C": "compute",
}


def parse_smi_xml(text: str, origin: str = "nvidia-smi -q -x") -> schema.GpuReading:
    """One ``nvidia-smi -q -x`` document -> GpuReading. Raises ParseError, nothing else."""
    root, repaired = _parse_root(text, origin)
    try:
        reading = _reading(root)
    except Exception as exc:  # a shape no driver writes: still only a ParseError for callers
        raise ParseError(origin, f"unexpected document structure: {exc!r}") from exc
    if repaired:
        reading.messages.insert(0, REPAIRED_MESSAGE.format(error=repaired))
    return reading


def _parse_root(text: str, origin: str) -> tuple[ET.Element, str | None]:
    """The root, and why the strict parser refused the document (None when it did not)."""
    if not isinstance(text, str):
        raise ParseError(origin, f"expected text, got {type(text).__name__}")
    if not text.strip():
        raise ParseError(origin, "empty document")
    text = _without_supported_clocks(text)
    repaired = None
    try:
        root = ET.fromstring(text)
    except Exception as exc:  # ET.ParseError, and ValueError for odd encodings declarations
        # Only a whole document is read leniently: a cut one would lose figures silently.
        root = None
        if text.rstrip().endswith(f"</{ROOT_TAG}>"):
            repaired = str(exc)
            root = parse_lenient(xml_safe(text))
        if root is None:
            raise ParseError(origin, f"not well-formed XML: {exc}") from exc
    if root.tag != ROOT_TAG:
        raise ParseError(origin, f"root element is <{root.tag}>, not <{ROOT_TAG}>")
    return root, repaired


def _without_supported_clocks(text: str) -> str:
    start = text.find(_SKIP_OPEN)
    if start < 0:
        return text
    parts: list[str] = []
    pos = 0
    while start >= 0:
        end = text.find(_SKIP_CLOSE, start)
        if end < 0:
            break  # truncated inside the table: let the XML parser report it
        parts.append(text[pos:start])
        pos = end + len(_SKIP_CLOSE)
        start = text.find(_SKIP_OPEN, pos)
    parts.append(text[pos:])
    return "".join(parts)


# --- small readers ------------------------------------------------------------------------


def _raw(parent: ET.Element | None, *paths: str) -> str | None:
    """Text of the first of ``paths`` present under ``parent`` (renamed elements), or None."""
    if parent is None:
        return None
    for path in paths:
        element = parent.find(path)
        if element is not None:
            return element.text or ""
    return None


class _Reader:
    """Reads figures for one owner, noting why each missing one is missing."""

    __slots__ = ("lost", "prefix", "unsupported")

    def __init__(self, unsupported: dict[str, str], prefix: str = "") -> None:
        self.unsupported = unsupported
        self.prefix = prefix
        self.lost: str | None = None

    def get(self, field: str, raw: str | None, conv: Callable[[str | None], Any]) -> Any:
        try:
            value = conv(raw)
        except (ValueError, TypeError):
            self.unsupported[self.prefix + field] = f"unreadable value {(raw or '').strip()!r}"
            return None
        if isinstance(value, Missing):
            self.unsupported[self.prefix + field] = value.reason
            if value.reason in _LOST_REASONS:
                self.lost = value.reason
            return None
        return value

    def missing(self, field: str, reason: str) -> None:
        self.unsupported[self.prefix + field] = reason

    def nested(self, prefix: str) -> _Reader:
        """A reader for a sub-object (clocks, pcie, ecc): keys become ``clocks.sm`` …"""
        return _Reader(self.unsupported, prefix)


# --- document -----------------------------------------------------------------------------


def _reading(root: ET.Element) -> schema.GpuReading:
    driver_version = values.text_value(_raw(root, "driver_version"))
    cuda_version = values.text_value(_raw(root, "cuda_version"))
    gpus = [_gpu(index, element) for index, element in enumerate(root.findall("gpu"))]
    messages: list[str] = []
    attached = _opt_int(_raw(root, "attached_gpus"))
    if isinstance(attached, int) and attached != len(gpus):
        messages.append(
            f"nvidia-smi says {attached} GPU(s) are attached but describes {len(gpus)}; "
            f"showing the {len(gpus)} it describes (a GPU it cannot query is left out)"
        )
    status = schema.STATUS_OK if gpus else schema.STATUS_NO_GPU
    driver = schema.DriverInfo(
        source=schema.SOURCE_NVIDIA_SMI,
        status=status,
        driver_version=None if isinstance(driver_version, Missing) else driver_version,
        cuda_version=_cuda(cuda_version),
        message=None if gpus else "No NVIDIA GPU found",
    )
    for gpu in gpus:
        if gpu.state == schema.GPU_LOST:
            messages.append(
                f"GPU {gpu.index} ({gpu.pci_bus_id or 'unknown bus'}): {gpu.lost_reason}"
            )
    return schema.GpuReading(driver=driver, gpus=gpus, messages=messages)


def _cuda(value: str | Missing) -> str | None:
    if isinstance(value, Missing) or value.lower() == "not found":
        return None
    return value


def _gpu(index: int, el: ET.Element) -> schema.GpuSample:
    gpu = schema.GpuSample(index=index, vendor=NVIDIA)
    r = _Reader(gpu.unsupported)
    gpu.name = r.get("name", _raw(el, "product_name"), values.text_value)
    gpu.uuid = r.get("uuid", _raw(el, "uuid"), values.text_value)
    gpu.pci_bus_id = r.get(
        "pci_bus_id", _raw(el, "pci/pci_bus_id") or el.get("id"), values.text_value
    )
    gpu.serial = r.get("serial", _raw(el, "serial"), values.text_value)
    gpu.vbios = r.get("vbios", _raw(el, "vbios_version"), values.text_value)
    gpu.architecture = r.get("architecture", _raw(el, "product_architecture"), values.text_value)
    gpu.persistence_mode = r.get("persistence_mode", _raw(el, "persistence_mode"), values.flag)
    gpu.compute_mode = r.get("compute_mode", _raw(el, "compute_mode"), values.text_value)
    pstate = r.get("performance_state", _raw(el, "performance_state"), values.text_value)
    gpu.performance_state = pstate if pstate and pstate[:1] == "P" else None
    if pstate and gpu.performance_state is None:
        r.missing("performance_state", f"unreadable value {pstate!r}")
    gpu.mig_mode = r.get("mig_mode", _raw(el, "mig_mode/current_mig"), values.flag)

    _memory(gpu, r, el)
    _utilization(gpu, r, el)
    _temperature(gpu, r, el)
    _power(gpu, r, el)
    _fans(gpu, r, el)
    _clocks(gpu, r.nested("clocks."), el)
    _clock_events(gpu, r, el)
    _pcie(gpu, r.nested("pcie."), el)
    _ecc(gpu, r.nested("ecc."), el)
    # Listed slices are read even if the mode itself is unreadable (without MIG the list
    # is "None", which holds no <mig_device>).
    gpu.mig_instances = [_mig(m) for m in el.iterfind("mig_devices/mig_device")]
    gpu.processes = _processes(gpu, el)
    r.missing("energy_joules", schema.NOT_REPORTED)
    if r.lost is not None:
        gpu.state = schema.GPU_LOST
        gpu.lost_reason = r.lost
    return gpu


def _memory(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    fb = el.find("fb_memory_usage")
    if fb is None:
        fb = el.find("memory_usage")  # drivers before fb/bar1 were split
    gpu.memory_total = r.get("memory_total", _raw(fb, "total"), values.mebibytes)
    gpu.memory_used = r.get("memory_used", _raw(fb, "used"), values.mebibytes)
    gpu.memory_free = r.get("memory_free", _raw(fb, "free"), values.mebibytes)
    gpu.memory_reserved = r.get("memory_reserved", _raw(fb, "reserved"), values.mebibytes)
    values.note_unified_memory(gpu)


def _utilization(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    util = el.find("utilization")
    gpu.utilization = r.get("utilization", _raw(util, "gpu_util"), values.integer)
    gpu.memory_utilization = r.get("memory_utilization", _raw(util, "memory_util"), values.integer)
    gpu.encoder_utilization = r.get(
        "encoder_utilization", _raw(util, "encoder_util"), values.integer
    )
    gpu.decoder_utilization = r.get(
        "decoder_utilization", _raw(util, "decoder_util"), values.integer
    )
    if gpu.mig_mode:
        # Under MIG the parent reports N/A: say why, so the UI does not blame the board.
        for field in (
            "utilization",
            "memory_utilization",
            "encoder_utilization",
            "decoder_utilization",
        ):
            if getattr(gpu, field) is None:
                r.missing(field, schema.MIG_UNAVAILABLE)


def _temperature(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    temp = el.find("temperature")
    gpu.temperature = r.get("temperature", _raw(temp, "gpu_temp"), values.integer)
    gpu.temperature_memory = r.get("temperature_memory", _raw(temp, "memory_temp"), values.integer)
    for field, absolute, relative in (
        ("temperature_slowdown", "gpu_temp_slow_threshold", "gpu_temp_slow_tlimit_threshold"),
        ("temperature_shutdown", "gpu_temp_max_threshold", "gpu_temp_max_tlimit_threshold"),
    ):
        raw = _raw(temp, absolute)
        if raw is None and temp is not None and temp.find(relative) is not None:
            setattr(gpu, field, _from_tlimit(gpu, r, field, temp, relative))
        else:
            setattr(gpu, field, r.get(field, raw, values.integer))


def _from_tlimit(
    gpu: schema.GpuSample, r: _Reader, field: str, temp: ET.Element, relative: str
) -> int | None:
    """580+ drivers give thresholds as T.Limit margins, not °C: convert them back.

    ``gpu_temp_tlimit`` is the margin left now, so the limit sits at gpu_temp + margin and a
    threshold at that limit minus its own margin (H100: 68 + 19 - (-2) = 89 °C slowdown,
    68 + 19 - (-8) = 95 °C shutdown, the figures NVML gives).
    """
    margin = _count(_raw(temp, "gpu_temp_tlimit"))
    threshold = _count(_raw(temp, relative))
    if gpu.temperature is None or isinstance(margin, Missing) or isinstance(threshold, Missing):
        r.missing(field, TLIMIT_ONLY)
        return None
    return gpu.temperature + margin - threshold


def _power(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    power = el.find("gpu_power_readings")
    if power is None:
        power = el.find("power_readings")
    # NVML's power usage (and CSV power.draw) is the 1 s average on Ampere and later; older
    # drivers only have power_draw; instant_power_draw is the last resort.
    draw = None
    for path in ("average_power_draw", "power_draw", "instant_power_draw"):
        raw = _raw(power, path)
        if raw is not None and values.missing_reason(raw) is None:
            draw = raw
            break
    if draw is None:
        draw = _raw(power, "average_power_draw", "power_draw", "instant_power_draw")
    gpu.power_usage = r.get("power_usage", draw, values.number)
    gpu.power_limit = r.get(
        "power_limit",
        _raw(power, "power_limit", "requested_power_limit", "current_power_limit"),
        values.number,
    )
    gpu.power_limit_enforced = r.get(
        "power_limit_enforced",
        _raw(power, "enforced_power_limit", "current_power_limit"),
        values.number,
    )


def _fans(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    raw = _raw(el, "fan_speed")
    reason = values.missing_reason(raw)
    if reason in (schema.NOT_REPORTED, schema.NOT_SUPPORTED):
        gpu.fans = []
        r.missing("fans", schema.NO_FANS)
        return
    speed = r.get("fans", raw, values.integer)
    gpu.fans = [speed] if speed is not None else []


def _clocks(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    now, top = el.find("clocks"), el.find("max_clocks")
    c = gpu.clocks
    c.graphics = r.get("graphics", _raw(now, "graphics_clock"), values.integer)
    c.sm = r.get("sm", _raw(now, "sm_clock"), values.integer)
    c.memory = r.get("memory", _raw(now, "mem_clock"), values.integer)
    c.video = r.get("video", _raw(now, "video_clock"), values.integer)
    c.graphics_max = r.get("graphics_max", _raw(top, "graphics_clock"), values.integer)
    c.sm_max = r.get("sm_max", _raw(top, "sm_clock"), values.integer)
    c.memory_max = r.get("memory_max", _raw(top, "mem_clock"), values.integer)


def _clock_events(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    block = el.find("clocks_event_reasons")
    prefix = "clocks_event_reason_"
    if block is None:
        block, prefix = el.find("clocks_throttle_reasons"), "clocks_throttle_reason_"
    if block is None:
        r.missing("throttle_reasons", schema.NOT_REPORTED)
        return
    active: list[str] = []
    read_any = False
    for child in block:
        if not child.tag.startswith(prefix):
            continue
        try:
            state = values.flag(child.text)
        except ValueError:
            continue
        if isinstance(state, Missing):
            continue
        read_any = True
        if state:
            suffix = child.tag[len(prefix) :]
            name = codes.XML_REASON_NAMES.get(suffix, suffix)
            if name not in active:
                active.append(name)
    if read_any:
        gpu.throttle_reasons = active
    else:
        r.missing("throttle_reasons", schema.NOT_SUPPORTED)


def _pcie(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    pci = el.find("pci")
    link = pci.find("pci_gpu_link_info") if pci is not None else None
    p = gpu.pcie
    p.gen_current = r.get("gen_current", _raw(link, "pcie_gen/current_link_gen"), values.integer)
    p.gen_max = r.get("gen_max", _raw(link, "pcie_gen/max_link_gen"), values.integer)
    p.width_current = r.get(
        "width_current", _raw(link, "link_widths/current_link_width"), values.integer
    )
    p.width_max = r.get("width_max", _raw(link, "link_widths/max_link_width"), values.integer)
    tx = r.get("tx_bytes_per_s", _raw(pci, "tx_util"), values.number)
    rx = r.get("rx_bytes_per_s", _raw(pci, "rx_util"), values.number)
    p.tx_bytes_per_s = None if tx is None else tx * KB
    p.rx_bytes_per_s = None if rx is None else rx * KB
    p.replay_counter = r.get("replay_counter", _raw(pci, "replay_counter"), values.integer)


def _ecc(gpu: schema.GpuSample, r: _Reader, el: ET.Element) -> None:
    e = gpu.ecc
    e.enabled = r.get("enabled", _raw(el, "ecc_mode/current_ecc"), values.flag)
    e.pending_enabled = r.get("pending_enabled", _raw(el, "ecc_mode/pending_ecc"), values.flag)
    errors = el.find("ecc_errors")
    for scope in ("volatile", "aggregate"):
        block = errors.find(scope) if errors is not None else None
        corrected, uncorrected = _ecc_counts(block)
        for kind, count in (("corrected", corrected), ("uncorrected", uncorrected)):
            field = f"{scope}_{kind}"
            if isinstance(count, Missing):
                r.missing(field, count.reason)
            else:
                setattr(e, field, count)
    e.retired_pages_pending = r.get(
        "retired_pages_pending",
        _raw(el, "retired_pages/pending_retirement", "retired_pages/pending_blacklist"),
        values.flag,
    )


def _ecc_counts(block: ET.Element | None) -> tuple[int | Missing, int | Missing]:
    """(corrected, uncorrected) for one scope, from either layout drivers have used.

    Older: ``single_bit/total`` and ``double_bit/total``. Ampere and later: flat
    ``sram_correctable``, ``sram_uncorrectable[_parity|_secded]``, ``dram_*`` counts.
    """
    if block is None:
        return Missing(schema.NOT_REPORTED), Missing(schema.NOT_REPORTED)
    if block.find("single_bit") is not None or block.find("double_bit") is not None:
        return (_count(_raw(block, "single_bit/total")), _count(_raw(block, "double_bit/total")))
    corrected: list[str | None] = []
    uncorrected: list[str | None] = []
    for child in block:
        if child.tag.endswith("_uncorrectable") or "_uncorrectable_" in child.tag:
            uncorrected.append(child.text)
        elif child.tag.endswith("_correctable"):
            corrected.append(child.text)
    return _sum(corrected), _sum(uncorrected)


def _count(raw: str | None) -> int | Missing:
    try:
        return values.integer(raw)
    except ValueError:
        return Missing(f"unreadable value {(raw or '').strip()!r}")


def _sum(raws: list[str | None]) -> int | Missing:
    total: int | None = None
    reason = schema.NOT_REPORTED
    for raw in raws:
        count = _count(raw)
        if isinstance(count, Missing):
            reason = count.reason
        else:
            total = (total or 0) + count
    return Missing(reason) if total is None else total


def _mig(el: ET.Element) -> schema.MigInstance:
    unsupported: dict[str, str] = {}
    r = _Reader(unsupported)
    gi = r.get("gpu_instance_id", _raw(el, "gpu_instance_id"), values.integer)
    mig = schema.MigInstance(gpu_instance_id=-1 if gi is None else gi, unsupported=unsupported)
    mig.compute_instance_id = r.get(
        "compute_instance_id", _raw(el, "compute_instance_id"), values.integer
    )
    fb = el.find("fb_memory_usage")
    mig.memory_total = r.get("memory_total", _raw(fb, "total"), values.mebibytes)
    mig.memory_used = r.get("memory_used", _raw(fb, "used"), values.mebibytes)
    mig.memory_free = r.get("memory_free", _raw(fb, "free"), values.mebibytes)
    mig.sm_count = r.get(
        "sm_count", _raw(el, "device_attributes/shared/multiprocessor_count"), values.integer
    )
    r.missing("uuid", schema.NOT_REPORTED)  # nvidia-smi -L has it, -q -x does not
    return mig


def _processes(gpu: schema.GpuSample, el: ET.Element) -> list[schema.GpuProcess]:
    out: list[schema.GpuProcess] = []
    for path, default_type in _PROCESS_LISTS:
        for info in el.iterfind(path):
            proc = _process(gpu, info, default_type)
            if proc is not None:
                out.append(proc)
    if not out:
        _processes_missing(gpu, el)
    return merge_processes(out)


def _processes_missing(gpu: schema.GpuSample, el: ET.Element) -> None:
    """``<processes>N/A</processes>`` (older GeForce drivers) says the list is unknown, which
    is not the same as empty."""
    for path in ("processes", "compute_processes"):
        reason = values.missing_reason(_raw(el, path))
        text = (_raw(el, path) or "").strip()
        if text and reason is not None:
            gpu.unsupported["processes"] = reason
            return
        if text:
            gpu.unsupported["processes"] = f"unreadable value {text!r}"
            return


def _process(
    gpu: schema.GpuSample, info: ET.Element, default_type: str
) -> schema.GpuProcess | None:
    try:
        pid = int((_raw(info, "pid") or "").strip())
    except ValueError:
        return None  # a process row without a pid names nothing a user can act on
    proc = schema.GpuProcess(pid=pid, gpu_index=gpu.index, gpu_uuid=gpu.uuid)
    r = _Reader(proc.unsupported)
    proc.name = r.get("name", _raw(info, "process_name"), values.text_value)
    kind = _raw(info, "type")
    if kind is None:
        proc.type = default_type
    else:
        kind = kind.strip().upper()
        proc.type = _PROCESS_TYPES.get(
            kind,
            "compute+graphics"
            if "G" in kind and "C" in kind
            else "graphics"
            if "G" in kind
            else "compute",
        )
    raw_memory = _raw(info, "used_memory")
    proc.used_memory_mib = r.get("used_memory_mib", raw_memory, values.mebibytes)
    if proc.used_memory_mib is None and values.missing_reason(raw_memory) == schema.NOT_REPORTED:
        r.missing("used_memory_mib", schema.WDDM_NO_MEMORY)
    # N/A outside MIG is the normal case, not a missing figure: no reason recorded.
    proc.gpu_instance_id = _opt_int(_raw(info, "gpu_instance_id"))
    proc.compute_instance_id = _opt_int(_raw(info, "compute_instance_id"))
    return proc


def _opt_int(raw: str | None) -> int | None:
    if raw is None:
        return None
    raw = raw.strip()
    return int(raw) if raw.isdigit() else None
