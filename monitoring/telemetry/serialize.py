"""Turn schema objects into JSON-ready dicts with camelCase keys, and back.

One serializer for the CLI, the API, the channel layer and the fragments' data
attributes. Key names follow the user's spec (``usedMemoryMiB`` via field metadata);
derived figures the spec names (``fanSpeed``, ``driverVersion``, …) are added here.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from monitoring.telemetry import schema

# Derived properties that belong in the JSON next to the stored fields.
_EXTRA_PROPERTIES: dict[type, tuple[str, ...]] = {
    schema.GpuSample: ("fan_speed", "memory_percent"),
    schema.Snapshot: ("driver_version", "cuda_version", "processes"),
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("json") or camel(f.name)


def to_data(value: Any) -> Any:
    """Schema object (or list/dict of them) -> plain JSON-compatible data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name == "unsupported":
                out["unsupported"] = {camel(key): reason for key, reason in item.items()}
            else:
                out[_json_key(f)] = to_data(item)
        for prop in _EXTRA_PROPERTIES.get(type(value), ()):
            out[camel(prop)] = to_data(getattr(value, prop))
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
_DATETIMES = {"timestamp", "boot_time", "start_time"}


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)


def from_data(cls: type, data: dict[str, Any]) -> Any:
    """Plain data from :func:`to_data` -> the schema object of ``cls``."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = _json_key(f)
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
