"""Events from pairs of snapshots read through the real NVML source from the H100 capture."""

from __future__ import annotations

from datetime import timedelta

from monitoring.events import EventTracker, detect_events, gpu_key
from monitoring.records import EventKind
from monitoring.telemetry.nvml_capture import (
    CapturedNvml,
    capture_with_value,
    load_capture,
    multi_gpu,
)
from monitoring.telemetry.nvml_source import BACKOFF_FIRST_S, NvmlSource
from monitoring.telemetry.schema import (
    STATUS_ERROR,
    DriverInfo,
    Snapshot,
)
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import BOX, T0, read, snapshot


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def kinds(events) -> list[str]:
    return [event.kind for event in events]


def test_the_first_snapshot_and_a_steady_multi_gpu_host_make_no_events():
    capture = multi_gpu(load_capture(H100, "load"), 4)
    first, second = read(capture, 0), read(capture, 1)
    assert len({gpu_key(gpu) for gpu in second.gpus}) == 4
    assert detect_events(None, first) == []
    assert detect_events(first, second) == []


def test_a_gpu_falling_off_the_bus_and_coming_back_is_lost_then_found():
    clock = Clock()
    nvml = CapturedNvml(multi_gpu(load_capture(H100, "load"), 2))
    source = NvmlSource(nvml, clock=clock)
    before = snapshot(source.read(), 0)
    nvml.fail(1)  # NVMLError_GpuIsLost on every call to GPU 1
    clock.t += 1
    lost = snapshot(source.read(), 1)
    clock.t += 1
    still_lost = snapshot(source.read(), 2)
    nvml.heal(1)
    clock.t += BACKOFF_FIRST_S * 4  # past the source's retry backoff
    back = snapshot(source.read(), 6)
    source.close()

    (event,) = detect_events(before, lost)
    assert event.kind == EventKind.GPU_LOST
    assert event.gpu_uuid == before.gpus[1].uuid
    assert event.time == lost.timestamp
    assert "GPU 1 (NVIDIA H100 80GB HBM3) stopped answering" in event.message
    assert "GpuIsLost" in event.data["reason"]
    assert detect_events(lost, still_lost) == []  # once, not every tick
    (found,) = detect_events(still_lost, back)
    assert found.kind == EventKind.GPU_FOUND
    assert found.gpu_uuid == before.gpus[1].uuid


def test_a_new_gpu_appearing_and_one_removed_are_recorded_by_uuid():
    one = read(load_capture(H100, "load"), 0)
    two = read(multi_gpu(load_capture(H100, "load"), 2), 1)
    (added,) = detect_events(one, two)
    assert added.kind == EventKind.GPU_ADDED
    assert added.gpu_uuid == two.gpus[1].uuid != one.gpus[0].uuid
    assert added.data["index"] == 1
    (removed,) = detect_events(two, one)
    assert removed.kind == EventKind.GPU_REMOVED
    assert removed.gpu_uuid == two.gpus[1].uuid


def test_gpus_reordered_after_a_reboot_are_the_same_gpus():
    two = read(multi_gpu(load_capture(H100, "load"), 2), 0)
    swapped = read(multi_gpu(load_capture(H100, "load"), 2), 1)
    swapped.gpus.reverse()
    for index, gpu in enumerate(swapped.gpus):
        gpu.index = index
    assert detect_events(two, swapped) == []


def test_a_driver_upgrade_is_one_event_with_both_versions():
    capture = load_capture(H100, "load")
    old = read(capture, 0)
    new = read(capture_with_value(capture, key="driver", value="590.44.01", gpu=None), 1)
    (event,) = detect_events(old, new)
    assert event.kind == EventKind.DRIVER_CHANGED
    assert event.data["from"] == "580.159.04"
    assert event.data["to"] == "590.44.01"
    assert "580.159.04 to 590.44.01" in event.message


def test_a_broken_source_is_one_event_and_its_recovery_announces_no_phantom_gpus():
    capture = multi_gpu(load_capture(H100, "load"), 2)
    good = read(capture, 0)
    broken = Snapshot(
        timestamp=T0 + timedelta(seconds=1),
        host=BOX,
        driver=DriverInfo(
            source="nvml",
            status=STATUS_ERROR,
            message="Failed to initialize NVML: Driver/library version mismatch",
        ),
    )
    tracker = EventTracker()
    assert tracker.update(good) == []
    (event,) = tracker.update(broken)
    assert event.kind == EventKind.SOURCE_ERROR
    assert "version mismatch" in event.message
    assert tracker.update(broken) == []
    # back, after a driver reload to a new version: the same GPUs, a new driver
    after = read(capture_with_value(capture, key="driver", value="590.44.01", gpu=None), 9)
    assert kinds(tracker.update(after)) == [EventKind.DRIVER_CHANGED]


def test_a_gpu_without_uuid_is_keyed_by_its_pci_bus_id_then_its_index():
    reading = read(load_capture(H100, "load"), 0)
    gpu = reading.gpus[0]
    gpu.uuid = None
    assert gpu_key(gpu) == f"pci:{gpu.pci_bus_id}"
    gpu.pci_bus_id = None
    assert gpu_key(gpu) == "index:0"
