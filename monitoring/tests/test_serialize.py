"""JSON keeps the user's names, nulls keep their reasons, and data round-trips."""

from __future__ import annotations

from monitoring.telemetry import serialize
from monitoring.telemetry.replay import ReplaySource
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.schema import DriverInfo, HostInfo, SystemSample
from monitoring.tests.conftest import H100


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


def test_it_round_trips_through_plain_data():
    snapshot = replayed_snapshot()
    data = serialize.to_data(snapshot)
    again = serialize.snapshot_from_data(data)
    assert serialize.to_data(again) == data
    assert again.gpus[0].processes[0].pid == snapshot.gpus[0].processes[0].pid
    assert again.timestamp == snapshot.timestamp
