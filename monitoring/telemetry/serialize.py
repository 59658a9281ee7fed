"""Turn schema objects into JSON-ready dicts with camelCase keys, and back.

One serializer for the CLI, the API, the channel layer and the fragments' data
attributes. Key names follow the user's spec (``usedMemoryMiB`` via field metadata);
derived figures the spec names (``fanSpeed``, ``driverVersion``, …) are added here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import datetime
from typing import Any

from monitoring.telemetry import schema

# Derived properties that belong in the JSON next to the stored fields.
_EXTRA_PROPERTIES: dict[type, tuple[str, ...]] = {
    schema.GpuSample: ("identity", "fan_speed", "memory_percent"),
    schema.Snapshot: ("driver_version", "cuda_version", "processes"),
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("json") or camel(f.name)


#: Field names whose JSON key is not their camelCase (``usedMemoryMiB``): a reason in
#: ``unsupported`` is keyed like the figure it explains.
_JSON_NAMES = {
    f.name: f.metadata["json"]
    for cls in vars(schema).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls)
    for f in dataclasses.fields(cls)
    if "json" in f.metadata
}
_FIELD_NAMES = {key: name for name, key in _JSON_NAMES.items()}


@functools.lru_cache(maxsize=1024)  # reason keys are field names: few, the same every tick
def _reason_key(name: str) -> str:
    return _JSON_NAMES.get(name) or camel(name)


#: Per dataclass: (attribute, JSON key, is the ``unsupported`` map) for each field, then
#: (property, JSON key) for each derived figure; None for a type that is no dataclass.
#: Worked out once per type: the live message is built every tick, and reading the field
#: list and camel-casing each name was half of building it.
_Plan = tuple[tuple[tuple[str, str, bool], ...], tuple[tuple[str, str], ...]]
_PLANS: dict[type, _Plan | None] = {}


def _plan(cls: type) -> _Plan | None:
    try:
        return _PLANS[cls]
    except KeyError:
        pass
    plan = None
    if dataclasses.is_dataclass(cls):
        plan = (
            tuple((f.name, _json_key(f), f.name == "unsupported") for f in dataclasses.fields(cls)),
            tuple((prop, camel(prop)) for prop in _EXTRA_PROPERTIES.get(cls, ())),
        )
    _PLANS[cls] = plan
    return plan


def to_data(value: Any) -> Any:
    """Schema object (or list/dict of them) -> plain JSON-compatible data."""
    cls = type(value)
    if value is None or cls is str or cls is int or cls is bool:
        return value
    if cls is float:
        return round(value, 3)
    plan = _plan(cls)
    if plan is not None:
        fields, extras = plan
        out: dict[str, Any] = {}
        for name, key, unsupported in fields:
            item = getattr(value, name)
            kind = type(item)
            # plain figures inline: most fields are, and a call each is most of the cost
            if item is None or kind is int or kind is str or kind is bool:
                out[key] = item
            elif kind is float:
                out[key] = round(item, 3)
            elif unsupported:
                out["unsupported"] = {_reason_key(k): reason for k, reason in item.items()}
            else:
                out[key] = to_data(item)
        for prop, key in extras:
            out[key] = to_data(getattr(value, prop))
        return out
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return [to_data(item) for item in value]
    if isinstance(value, dict):
        return {key: to_data(item) for key, item in value.items()}
    if isinstance(value, float):
        return round(value, 3)
    return value


def to_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(to_data(value), indent=indent, ensure_ascii=False)


# --- back from data (channel layer and storage hand plain dicts around) ---------------------

_NESTED = {
    (schema.Snapshot, "host"): schema.HostInfo,
    (schema.Snapshot, "driver"): schema.DriverInfo,
    (schema.Snapshot, "system"): schema.SystemSample,
    (schema.GpuSample, "clocks"): schema.Clocks,
    (schema.GpuSample, "pcie"): schema.PcieLink,
    (schema.GpuSample, "ecc"): schema.EccErrors,
    (schema.GpuProcess, "container"): schema.Container,
}
_LISTS = {
    (schema.Snapshot, "gpus"): schema.GpuSample,
    (schema.GpuSample, "processes"): schema.GpuProcess,
    (schema.GpuSample, "mig_instances"): schema.MigInstance,
    (schema.SystemSample, "disks"): schema.DiskUsage,
    (schema.SystemSample, "temperatures"): schema.TemperatureReading,
    (schema.SystemSample, "fans"): schema.FanReading,
    (schema.SystemSample, "top_processes"): schema.HostProcess,
}
_DATETIMES = {"timestamp", "boot_time", "start_time", "first_seen"}


#: The JSON key a field had before it was renamed, still read: replay captures, stored
#: LatestSnapshot rows and API clients' saved output keep the old name.
_FORMER_KEYS = {(schema.GpuSample, "clock_event_reasons"): "throttleReasons"}
#: The same renames among the keys of ``unsupported`` (field names, snake_case).
_FORMER_FIELDS = {"throttle_reasons": "clock_event_reasons"}


def _snake(name: str) -> str:
    if name in _FIELD_NAMES:
        return _FIELD_NAMES[name]
    snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)
    return _FORMER_FIELDS.get(snake, snake)


def from_data(cls: type, data: dict[str, Any]) -> Any:
    """Plain data from :func:`to_data` -> the schema object of ``cls``; a renamed field's
    former key (:data:`_FORMER_KEYS`) is read too."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = _json_key(f)
        if key not in data:
            key = _FORMER_KEYS.get((cls, f.name), "")
            if key not in data:
                continue
        item = data[key]
        if item is None:
            kwargs[f.name] = None
        elif f.name == "unsupported":
            kwargs[f.name] = {_snake(k): v for k, v in item.items()}
        elif (cls, f.name) in _NESTED:
            kwargs[f.name] = from_data(_NESTED[cls, f.name], item)
        elif (cls, f.name) in _LISTS:
            kwargs[f.name] = [from_data(_LISTS[cls, f.name], entry) for entry in item]
        elif f.name in _DATETIMES:
            kwargs[f.name] = datetime.fromisoformat(item.replace("Z", "+00:00"))
        elif f.name == "load_average":
            kwargs[f.name] = tuple(item)
        else:
            kwargs[f.name] = item
    return cls(**kwargs)


def snapshot_from_data(data: dict[str, Any]) -> schema.Snapshot:
    return from_data(schema.Snapshot, data)
