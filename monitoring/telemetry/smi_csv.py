"""Parse ``nvidia-smi --query-gpu=… --format=csv`` and ``--query-compute-apps=…``.

The CSV query is what scripts and other monitors save, so ``--from-file`` must read it
whether it has a header and units or not. nvidia-smi prints header names that differ from
the names asked for (``clocks.sm`` comes back as ``clocks.current.sm [MHz]``), so columns are
matched through an alias table built from ``nvidia-smi --help-query-gpu``. Values go through
:mod:`values`; a figure it cannot read becomes ``None`` with a reason, while a file whose
shape is wrong (column count, no header and no field list, a non-numeric index or pid)
raises :class:`ParseError` naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from monitoring.telemetry import codes, schema, smi_errors, values
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.processes import merge_processes
from monitoring.telemetry.values import Missing
from monitoring.telemetry.vendor import NVIDIA

#: The query the project's capture (and the fallback CLI) uses; also what a headerless
#: file with this many columns is assumed to hold.
QUERY_GPU_FIELDS: tuple[str, ...] = (
    "index", "uuid", "name", "driver_version", "pci.bus_id", "utilization.gpu",
    "utilization.memory", "memory.total", "memory.used", "memory.free", "temperature.gpu",
    "power.draw", "power.limit", "fan.speed", "clocks.sm", "clocks.mem", "pstate",
)  # fmt: skip
#: Figures worth asking for next to the default query (the capture's ``smi_csv_extra``).
EXTRA_FIELDS: tuple[str, ...] = (
    "temperature.memory", "utilization.encoder", "utilization.decoder",
    "enforced.power.limit", "clocks.max.sm", "clocks_throttle_reasons.active",
)  # fmt: skip
QUERY_APPS_FIELDS: tuple[str, ...] = ("pid", "process_name", "used_gpu_memory", "gpu_uuid")

NO_DEVICES = "No devices were found"

# Alternative spellings (from --help-query-gpu / --help-query-compute-apps, and the header
# names nvidia-smi prints back) -> the one name this module uses.
_ALIASES: dict[str, str] = {
    "gpu_name": "name",
    "gpu_serial": "serial",
    "gpu_uuid": "uuid",
    "gpu_bus_id": "pci.bus_id",
    "clocks.gr": "clocks.current.graphics",
    "clocks.sm": "clocks.current.sm",
    "clocks.mem": "clocks.current.memory",
    "clocks.video": "clocks.current.video",
    "clocks.max.gr": "clocks.max.graphics",
    "clocks.max.mem": "clocks.max.memory",
    "clocks_throttle_reasons.active": "clocks_event_reasons.active",
    "gpu.power.draw.average": "power.draw.average",
    "gpu.power.draw.instant": "power.draw.instant",
    "gpu.power.requested_limit": "power.limit",
    "gpu.power.current_limit": "enforced.power.limit",
}
_APPS_ALIASES: dict[str, str] = {
    "name": "process_name",
    "used_memory": "used_gpu_memory",
    "uuid": "gpu_uuid",
    "gpu_bus_id": "gpu_bus_id",
}

_HEADER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _without_unit(field: str) -> str:
    """``memory.used [MiB]`` -> ``memory.used``: the header's unit suffix off, and spaces.

    Not the regex ``\\s*\\[[^\\]]*\\]\\s*$``: searched from every "[" it is quadratic,
    and a 100 KB line of them took 36 s.
    """
    text = field.rstrip()
    start = text.rfind("[") if text.endswith("]") else -1
    if start < 0 or "]" in text[start + 1 : -1]:
        return field.strip()
    return text[:start].strip()


def canonical(field: str) -> str:
    """Any accepted spelling of a --query-gpu field (header units stripped) -> one name."""
    name = _without_unit(field)
    return _ALIASES.get(name, name)


# --- --query-gpu --------------------------------------------------------------------------


def _setter(attr: str, conv: Callable[[str | None], Any]) -> Callable[..., None]:
    def set_value(gpu: schema.GpuSample, reading: _Draft, raw: str) -> None:
        setattr(gpu, attr, _get(gpu.unsupported, attr, raw, conv))

    return set_value


def _nested(part: str, attr: str, conv: Callable[[str | None], Any],
            scale: float = 1.0) -> Callable[..., None]:  # fmt: skip
    def set_value(gpu: schema.GpuSample, reading: _Draft, raw: str) -> None:
        value = _get(gpu.unsupported, f"{part}.{attr}", raw, conv)
        setattr(getattr(gpu, part), attr, value if value is None or scale == 1.0 else value * scale)

    return set_value


def _fan(gpu: schema.GpuSample, reading: _Draft, raw: str) -> None:
    if values.missing_reason(raw) in (schema.NOT_REPORTED, schema.NOT_SUPPORTED):
        gpu.fans = []
        gpu.unsupported["fans"] = schema.NO_FANS
        return
    speed = _get(gpu.unsupported, "fans", raw, values.integer)
    gpu.fans = [] if speed is None else [speed]


def _reasons(gpu: schema.GpuSample, reading: _Draft, raw: str) -> None:
    mask = _get(gpu.unsupported, "clock_event_reasons", raw, values.hex_mask)
    gpu.clock_event_reasons = None if mask is None else codes.decode_clock_events(mask)


def _pstate(gpu: schema.GpuSample, reading: _Draft, raw: str) -> None:
    value = _get(gpu.unsupported, "performance_state", raw, values.text_value)
    if value is not None and not value.startswith("P"):
        gpu.unsupported["performance_state"] = f"unreadable value {value!r}"
        value = None
    gpu.performance_state = value


def _driver(gpu: schema.GpuSample, reading: _Draft, raw: str) -> None:
    version = values.text_value(raw)
    if not isinstance(version, Missing):
        reading.driver_version = version


def _power_draw(fallback: bool) -> Callable[..., None]:
    """power.draw / power.draw.average match NVML's power usage; .instant only fills a gap."""

    def set_value(gpu: schema.GpuSample, reading: _Draft, raw: str) -> None:
        why: dict[str, str] = {}
        value = _get(why, "power_usage", raw, values.number)
        if value is not None:
            if not (fallback and gpu.power_usage is not None):
                gpu.power_usage = value
                gpu.unsupported.pop("power_usage", None)
        elif gpu.power_usage is None:
            gpu.unsupported.update(why)

    return set_value


_GPU_FIELDS: dict[str, Callable[[schema.GpuSample, _Draft, str], None]] = {
    "name": _setter("name", values.text_value),
    "uuid": _setter("uuid", values.text_value),
    "serial": _setter("serial", values.text_value),
    "pci.bus_id": _setter("pci_bus_id", values.text_value),
    "vbios_version": _setter("vbios", values.text_value),
    "driver_version": _driver,
    "utilization.gpu": _setter("utilization", values.integer),
    "utilization.memory": _setter("memory_utilization", values.integer),
    "utilization.encoder": _setter("encoder_utilization", values.integer),
    "utilization.decoder": _setter("decoder_utilization", values.integer),
    "memory.total": _setter("memory_total", values.mebibytes),
    "memory.used": _setter("memory_used", values.mebibytes),
    "memory.free": _setter("memory_free", values.mebibytes),
    "memory.reserved": _setter("memory_reserved", values.mebibytes),
    "temperature.gpu": _setter("temperature", values.integer),
    "temperature.memory": _setter("temperature_memory", values.integer),
    "power.draw": _power_draw(fallback=False),
    "power.draw.average": _power_draw(fallback=False),
    "power.draw.instant": _power_draw(fallback=True),
    "power.limit": _setter("power_limit", values.number),
    "enforced.power.limit": _setter("power_limit_enforced", values.number),
    "fan.speed": _fan,
    "pstate": _pstate,
    "clocks_event_reasons.active": _reasons,
    "clocks.current.graphics": _nested("clocks", "graphics", values.integer),
    "clocks.current.sm": _nested("clocks", "sm", values.integer),
    "clocks.current.memory": _nested("clocks", "memory", values.integer),
    "clocks.current.video": _nested("clocks", "video", values.integer),
    "clocks.max.graphics": _nested("clocks", "graphics_max", values.integer),
    "clocks.max.sm": _nested("clocks", "sm_max", values.integer),
    "clocks.max.memory": _nested("clocks", "memory_max", values.integer),
    "pcie.link.gen.current": _nested("pcie", "gen_current", values.integer),
    "pcie.link.gen.max": _nested("pcie", "gen_max", values.integer),
    "pcie.link.width.current": _nested("pcie", "width_current", values.integer),
    "pcie.link.width.max": _nested("pcie", "width_max", values.integer),
    "ecc.mode.current": _nested("ecc", "enabled", values.flag),
    "ecc.mode.pending": _nested("ecc", "pending_enabled", values.flag),
    "ecc.errors.corrected.volatile.total": _nested("ecc", "volatile_corrected", values.integer),
    "ecc.errors.uncorrected.volatile.total": _nested("ecc", "volatile_uncorrected",
                                                     values.integer),
    "ecc.errors.corrected.aggregate.total": _nested("ecc", "aggregate_corrected",
                                                    values.integer),
    "ecc.errors.uncorrected.aggregate.total": _nested("ecc", "aggregate_uncorrected",
                                                      values.integer),
    "retired_pages.pending": _nested("ecc", "retired_pages_pending", values.flag),
    "mig.mode.current": _setter("mig_mode", values.flag),
    "persistence_mode": _setter("persistence_mode", values.flag),
    "compute_mode": _setter("compute_mode", values.text_value),
}  # fmt: skip
KNOWN_GPU_FIELDS = frozenset(_GPU_FIELDS) | {"index"}


class _Draft:
    """What a file says about the driver, gathered while reading rows."""

    __slots__ = ("driver_version",)

    def __init__(self) -> None:
        self.driver_version: str | None = None


def _get(unsupported: dict[str, str], key: str, raw: str | None,
         conv: Callable[[str | None], Any]) -> Any:  # fmt: skip
    try:
        value = conv(raw)
    except (ValueError, TypeError):
        unsupported[key] = f"unreadable value {(raw or '').strip()!r}"
        return None
    if isinstance(value, Missing):
        unsupported[key] = value.reason
        return None
    return value


def parse_query_gpu_csv(
    text: str,
    origin: str = "nvidia-smi --query-gpu",
    fields: Sequence[str] | None = None,
) -> schema.GpuReading:
    """``--query-gpu`` CSV -> GpuReading. Raises ParseError only.

    With a header the columns are matched by name (``fields`` is then ignored). Without one,
    ``fields`` is the query list in order; when omitted, :data:`QUERY_GPU_FIELDS` is assumed
    if the column count matches it.
    """
    lines = _lines(text, origin)
    errors = smi_errors.only_errors(text)
    if errors:
        no_gpu = all(error.kind == smi_errors.NO_GPU for error in errors)
        return _no_gpu_reading(None) if no_gpu else _error_reading(errors)
    columns, rows = _columns(lines, origin, fields, QUERY_GPU_FIELDS, canonical)
    if "pid" in columns or "process_name" in columns:
        raise ParseError(origin, "this is --query-compute-apps output, not --query-gpu")
    draft = _Draft()
    gpus: list[schema.GpuSample] = []
    handlers = [_GPU_FIELDS.get(column) for column in columns]
    index_at = columns.index("index") if "index" in columns else None
    for position, (number, line) in enumerate(rows):
        cells = _cells(line, len(columns), origin, number, columns)
        index, unreadable = position, None  # rows come in index order
        if index_at is not None:
            try:
                index = int(cells[index_at])
            except ValueError:  # the row is still a GPU: its place says which
                unreadable = f"unreadable value {cells[index_at]!r}; row {position} used"
        gpu = schema.GpuSample(index=index, vendor=NVIDIA)
        if unreadable:
            gpu.unsupported["index"] = unreadable
        for handler, raw in zip(handlers, cells, strict=True):
            if handler is not None:
                handler(gpu, draft, raw)
        values.note_unified_memory(gpu)
        gpus.append(gpu)
    if not gpus:
        return _no_gpu_reading(draft.driver_version)
    driver = schema.DriverInfo(
        source=schema.SOURCE_NVIDIA_SMI, status=schema.STATUS_OK,
        driver_version=draft.driver_version,
    )  # fmt: skip
    return schema.GpuReading(driver=driver, gpus=gpus)


def _error_reading(errors: list[smi_errors.SmiError]) -> schema.GpuReading:
    message = smi_errors.summary(errors)
    return schema.GpuReading(
        driver=schema.DriverInfo(
            source=schema.SOURCE_NVIDIA_SMI, status=schema.STATUS_ERROR, message=message
        ),
        messages=[message],
    )


def _no_gpu_reading(driver_version: str | None) -> schema.GpuReading:
    return schema.GpuReading(driver=schema.DriverInfo(
        source=schema.SOURCE_NVIDIA_SMI, status=schema.STATUS_NO_GPU,
        driver_version=driver_version, message="No NVIDIA GPU found",
    ))  # fmt: skip


# --- --query-compute-apps -----------------------------------------------------------------


def parse_compute_apps_csv(
    text: str,
    origin: str = "nvidia-smi --query-compute-apps",
    fields: Sequence[str] | None = None,
    uuid_to_index: dict[str, int] | None = None,
) -> list[schema.GpuProcess]:
    """``--query-compute-apps`` CSV -> processes. Empty or header-only = no processes.

    The CSV names the GPU only by UUID: ``gpu_index`` is -1 until :func:`attach_processes`
    (or ``uuid_to_index`` here) resolves it.
    """
    if not isinstance(text, str):
        raise ParseError(origin, f"expected text, got {type(text).__name__}")
    if not text.strip() or text.strip() == "No running processes found":
        return []
    lines = _lines(text, origin)
    columns, rows = _columns(lines, origin, fields, QUERY_APPS_FIELDS, _apps_canonical)
    if "pid" not in columns:
        raise ParseError(origin, "no pid column")
    at = {name: i for i, name in enumerate(columns)}
    out: list[schema.GpuProcess] = []
    for number, line in rows:
        cells = _cells(line, len(columns), origin, number, columns)
        try:
            pid = int(cells[at["pid"]])
        except ValueError:
            raise ParseError(origin, f"line {number}: pid {cells[at['pid']]!r} "
                                     "is not a number") from None  # fmt: skip
        uuid = cells[at["gpu_uuid"]] if "gpu_uuid" in at else None
        if uuid is not None and values.missing_reason(uuid) is not None:
            uuid = None
        index = (uuid_to_index or {}).get(uuid or "", -1)
        proc = schema.GpuProcess(pid=pid, gpu_index=index, gpu_uuid=uuid)
        if "process_name" in at:
            proc.name = _get(proc.unsupported, "name", cells[at["process_name"]], values.text_value)
        if "used_gpu_memory" in at:
            raw = cells[at["used_gpu_memory"]]
            proc.used_memory_mib = _get(proc.unsupported, "used_memory_mib", raw, values.mebibytes)
            if values.missing_reason(raw) == schema.NOT_REPORTED:
                # nvidia-smi's own help: not available on Windows under WDDM.
                proc.unsupported["used_memory_mib"] = schema.WDDM_NO_MEMORY
        out.append(proc)
    return merge_processes(out)


def _apps_canonical(field: str) -> str:
    name = _without_unit(field)
    return _APPS_ALIASES.get(name, name)


def attach_processes(reading: schema.GpuReading, processes: Iterable[schema.GpuProcess]) -> None:
    """Give each GPU of ``reading`` its processes, matched by UUID (sets ``gpu_index``).

    Replaces each GPU's process list; a process naming a GPU the reading lacks is dropped
    with a message rather than pinned on the wrong GPU.
    """
    by_uuid = {gpu.uuid: gpu for gpu in reading.gpus if gpu.uuid}
    lists: dict[int, list[schema.GpuProcess]] = {id(gpu): [] for gpu in reading.gpus}
    orphans: list[int] = []
    for proc in processes:
        gpu = by_uuid.get(proc.gpu_uuid) if proc.gpu_uuid else None
        if gpu is None and proc.gpu_uuid is None and len(reading.gpus) == 1:
            gpu = reading.gpus[0]
        if gpu is None:
            orphans.append(proc.pid)
            continue
        proc.gpu_index = gpu.index
        proc.gpu_uuid = gpu.uuid
        lists[id(gpu)].append(proc)
    for gpu in reading.gpus:
        gpu.processes = merge_processes(lists[id(gpu)])
    if orphans:
        reading.messages.append(
            "processes on a GPU this reading does not list were left out: pid "
            + ", ".join(str(pid) for pid in orphans)
        )


# --- shared -------------------------------------------------------------------------------


def _lines(text: str, origin: str) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers."""
    if not isinstance(text, str):
        raise ParseError(origin, f"expected text, got {type(text).__name__}")
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    if not lines:
        raise ParseError(origin, "empty output")
    return lines


def _split(line: str) -> list[str]:
    return [cell.strip() for cell in line.split(",")]


def _is_header(cells: list[str], known: Callable[[str], bool]) -> bool:
    names = [_without_unit(cell) for cell in cells]
    return all(_HEADER_NAME.match(name) for name in names) and any(known(n) for n in names)


def _columns(
    lines: list[tuple[int, str]],
    origin: str,
    fields: Sequence[str] | None,
    default: Sequence[str],
    canon: Callable[[str], str],
) -> tuple[list[str], list[tuple[int, str]]]:
    first = _split(lines[0][1])
    known = KNOWN_GPU_FIELDS if default is QUERY_GPU_FIELDS else frozenset(QUERY_APPS_FIELDS)
    if _is_header(first, lambda name: canon(name) in known):
        return [canon(cell) for cell in first], lines[1:]
    if fields is None:
        if len(first) != len(default):
            raise ParseError(origin, f"line {lines[0][0]}: no header, and {len(first)} "
                                     "columns do not match the default query: pass the "
                                     "field list")  # fmt: skip
        fields = default
    return [canon(field) for field in fields], lines


# Free-text columns that may themselves contain ", " (a process or product name).
_FREE_TEXT = ("process_name", "name")


def _cells(line: str, count: int, origin: str, number: int, columns: list[str]) -> list[str]:
    cells = _split(line)
    if len(cells) > count:
        free = next((columns.index(c) for c in _FREE_TEXT if c in columns), None)
        if free is not None:
            extra = len(cells) - count
            cells[free : free + extra + 1] = [", ".join(cells[free : free + extra + 1])]
    if len(cells) != count:
        raise ParseError(origin, f"line {number}: {len(cells)} columns, expected {count}")
    return cells


# --- detection ----------------------------------------------------------------------------


def looks_like_query_gpu_csv(text: str) -> bool:
    """True if ``text`` reads as --query-gpu output (for a ``--from-file`` detector).

    A header naming known --query-gpu fields is enough, whichever fields it names (a
    DGX Spark script asks for no name or uuid); a headerless file must match the default
    query and name its GPUs.
    """
    if not isinstance(text, str):
        return False
    try:
        reading = parse_query_gpu_csv(text, origin="detector")
    except ParseError:
        return False
    if not reading.gpus:
        return False
    first = _split(text.strip().split("\n", 1)[0])
    if _is_header(first, lambda name: canonical(name) in KNOWN_GPU_FIELDS):
        return True
    return all(gpu.uuid or gpu.name for gpu in reading.gpus)


def looks_like_compute_apps_csv(text: str) -> bool:
    """True if ``text`` reads as non-empty --query-compute-apps output."""
    if not isinstance(text, str) or not text.strip():
        return False
    first = _split(text.strip().split("\n", 1)[0])
    if _is_header(first, lambda name: _apps_canonical(name) in QUERY_APPS_FIELDS):
        return "pid" in {_apps_canonical(c) for c in first}
    try:
        return bool(parse_compute_apps_csv(text, origin="detector"))
    except ParseError:
        return False
