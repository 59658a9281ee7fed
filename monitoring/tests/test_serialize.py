"""JSON keeps the user's names, nulls keep their reasons, and data round-trips."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import pytest

from monitoring.records import AlertRecord, EventRecord
from monitoring.telemetry import serialize
from monitoring.telemetry.capture_file import read_capture_file
from monitoring.telemetry.host import HostSampler
from monitoring.telemetry.nvml_capture import (
    CapturedNvml,
    capture_with_error,
    load_capture,
    multi_gpu,
    with_mig,
)
from monitoring.telemetry.nvml_source import NvmlSource
from monitoring.telemetry.replay import ReplaySource
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.schema import DriverInfo, GpuProcess, HostInfo, SystemSample
from monitoring.tests.conftest import FIELD, H100


class StillHost:
    def sample(self, *, top_processes=False, slow=False):
        return SystemSample(
            cpu_usage=12.5, memory_usage=40.0, load_average=(1.0, 0.5, 0.25), uptime=99.0
        )


def replayed_snapshot():
    sampler = Sampler(
        ReplaySource(H100, "load"),
        host_info=HostInfo("gpu-box", "Ubuntu 24.04", "6.8", "EPYC", 16, 8, None),
        host_sampler=StillHost(),
        no_source=DriverInfo("none", "no-gpu"),
    )
    return sampler.sample()


def test_it_uses_the_names_of_the_users_spec():
    data = serialize.to_data(replayed_snapshot())
    for key in ("timestamp", "driverVersion", "cudaVersion", "gpus", "system", "processes"):
        assert key in data
    gpu = data["gpus"][0]
    for key in (
        "index", "name", "uuid", "utilization", "memoryUsed", "memoryTotal", "memoryFree",
        "temperature", "powerUsage", "powerLimit", "fanSpeed", "fans", "encoderUtilization",
        "decoderUtilization", "processes",
    ):  # fmt: skip
        assert key in gpu, key
    process = gpu["processes"][0]
    for key in ("pid", "name", "usedMemoryMiB", "user"):
        assert key in process
    for key in ("cpuUsage", "memoryUsage", "loadAverage", "uptime"):
        assert key in data["system"]


def test_a_missing_figure_is_null_with_its_reason_in_camel_case():
    gpu = serialize.to_data(replayed_snapshot())["gpus"][0]
    assert gpu["fanSpeed"] is None
    assert gpu["unsupported"]["fans"]


def test_a_reason_is_keyed_like_the_figure_it_explains():
    # nvtop on an Apple M2 Max gives its processes no memory figure
    (gpu,) = read_capture_file(FIELD / "nvtop-apple-m2-max.json").gpus
    process = serialize.to_data(gpu)["processes"][0]
    assert process["usedMemoryMiB"] is None
    assert process["unsupported"]["usedMemoryMiB"] == "not supported by this GPU"
    again = serialize.from_data(GpuProcess, process)
    assert again.unsupported["used_memory_mib"] == "not supported by this GPU"
    # what was stored before the key was fixed still reads
    process["unsupported"]["usedMemoryMib"] = process["unsupported"].pop("usedMemoryMiB")
    old = serialize.from_data(GpuProcess, process)
    assert old.unsupported["used_memory_mib"] == "not supported by this GPU"


def test_it_round_trips_through_plain_data():
    snapshot = replayed_snapshot()
    data = serialize.to_data(snapshot)
    again = serialize.snapshot_from_data(data)
    assert serialize.to_data(again) == data
    assert again.gpus[0].processes[0].pid == snapshot.gpus[0].processes[0].pid
    assert again.timestamp == snapshot.timestamp


def test_json_written_before_clock_event_reasons_were_named_so_still_reads():
    # "throttleReasons" is what stored LatestSnapshot rows and saved API output hold
    data = serialize.to_data(replayed_snapshot())
    gpu = data["gpus"][0]
    assert gpu["clockEventReasons"] == ["sw_power_cap"]
    gpu["throttleReasons"] = gpu.pop("clockEventReasons")
    old = serialize.snapshot_from_data(data)
    assert old.gpus[0].clock_event_reasons == ["sw_power_cap"]

    gpu["unsupported"] = {"throttleReasons": "Not Supported"}
    del gpu["throttleReasons"]
    unsupported = serialize.snapshot_from_data(data).gpus[0]
    assert unsupported.clock_event_reasons is None
    assert unsupported.unsupported == {"clock_event_reasons": "Not Supported"}


def _plain(value):
    """The straightforward conversion (fields looked up on every call): the reference the
    cached :func:`serialize.to_data` must match byte for byte."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name == "unsupported":
                names = {f.name: f.metadata.get("json") for f in dataclasses.fields(value)}
                out["unsupported"] = {
                    names.get(k) or serialize.camel(k): reason for k, reason in item.items()
                }
            else:
                out[f.metadata.get("json") or serialize.camel(f.name)] = _plain(item)
        for prop in serialize._EXTRA_PROPERTIES.get(type(value), ()):
            out[serialize.camel(prop)] = _plain(getattr(value, prop))
        return out
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, float):
        return round(value, 3)
    return value


def _sampled(gpu_source, host_sampler, ticks=3):
    sampler = Sampler(
        gpu_source,
        host_info=HostInfo("gpu-box", "Ubuntu 24.04", "6.8", "EPYC", 16, 8, None),
        host_sampler=host_sampler,
        no_source=DriverInfo("none", "no-gpu"),
    )
    return [sampler.sample() for _ in range(ticks)]  # later ticks carry rates and averages


@pytest.mark.parametrize(
    "make_source",
    [
        pytest.param(lambda: ReplaySource(H100, "idle"), id="h100-idle"),
        pytest.param(lambda: ReplaySource(H100, "load"), id="h100-load"),
        pytest.param(
            lambda: NvmlSource(CapturedNvml(multi_gpu(load_capture(H100, "load"), 8))),
            id="eight-gpus",
        ),
        pytest.param(
            lambda: NvmlSource(CapturedNvml(with_mig(load_capture(H100, "load")))), id="mig"
        ),
        pytest.param(
            lambda: NvmlSource(
                CapturedNvml(
                    capture_with_error(
                        multi_gpu(load_capture(H100, "idle"), 2),
                        key="temperature",
                        error="NVMLError_GpuIsLost",
                        gpu=1,
                    )
                )
            ),
            id="lost-gpu",
        ),
    ],
)
def test_the_cached_conversion_gives_exactly_the_straightforward_json(make_source):
    snapshots = _sampled(make_source(), HostSampler())  # this machine's real host figures
    alert = AlertRecord(
        key="threshold:1:GPU-x", rule="threshold", metric="temperature", severity="warning",
        started_at=snapshots[0].timestamp, message="hot", value=81.25, peak_value=83.0625,
    )  # fmt: skip
    event = EventRecord(
        time=snapshots[0].timestamp, kind="gpu_lost", message="lost", data={"index": 1.23456}
    )
    for snapshot in snapshots:
        message = {"snapshot": snapshot, "alerts": [alert], "events": [event]}
        assert json.dumps(serialize.to_data(message)) == json.dumps(_plain(message))
        assert serialize.to_json(snapshot, indent=2) == json.dumps(
            _plain(snapshot), indent=2, ensure_ascii=False
        )
