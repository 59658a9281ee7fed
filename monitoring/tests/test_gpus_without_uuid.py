"""GPUs whose source gives no UUID keep their history: real outputs (a DGX Spark's
``--query-gpu`` CSV without ``uuid``, nvtop on an Apple M2 Max and on AMD) written through the
real storage path on SQLite and PostgreSQL. Such a GPU is keyed by its host and PCI bus id,
else its host and index, stable across flushes and worker restarts, and never mixed with
another host's GPU 0; GPUs with a UUID keep it as their key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitoring.models import Gpu, GpuSample, ProcessSession
from monitoring.storage.registry import gpu_storage_key
from monitoring.storage.writer import SnapshotStore
from monitoring.telemetry.capture_file import read_capture_file
from monitoring.telemetry.host import HostSampler, read_host_info
from monitoring.telemetry.sampler import Sampler
from monitoring.telemetry.schema import STATUS_NO_GPU, DriverInfo, GpuReading, Snapshot
from monitoring.tests.conftest import FIELD
from monitoring.tests.helpers import T0

pytestmark = pytest.mark.django_db

DGX_SPARK = FIELD / "gb10-unified-memory-na.csv"
M2_MAX = FIELD / "nvtop-apple-m2-max.json"
AMD = FIELD / "nvtop-3.2-amd-ryzen-igpu-rx7900xtx.json"


class CaptureFileSource:
    """A GPU source answering every read with one real capture file, read afresh each time
    as a live source parses each tick's output."""

    attributes_processes = True  # the capture's own (no /proc lookup of foreign pids)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = read_capture_file(path).driver.source

    def read(self, *, processes: bool = True, slow: bool = True) -> GpuReading:
        return read_capture_file(self.path)

    def close(self) -> None:
        pass


def readings(path: Path, host: str, count: int = 3, start=T0) -> list[Snapshot]:
    """``count`` snapshots of the capture, one a second, as the worker samples them."""
    host_info = read_host_info()
    host_info.hostname = host
    sampler = Sampler(
        CaptureFileSource(path),
        host_info=host_info,
        host_sampler=HostSampler(),
        no_source=DriverInfo("nvidia-smi", STATUS_NO_GPU),
    )
    return [sampler.sample(now=start + timedelta(seconds=n)) for n in range(count)]


def stored(path: Path, host: str, count: int = 3, start=T0) -> SnapshotStore:
    """``count`` snapshots of the capture, one a second, flushed by the real store."""
    store = SnapshotStore(host)
    for snapshot in readings(path, host, count, start):
        store.add(snapshot)
    result = store.flush()
    assert result.error is None
    return store


def test_a_dgx_spark_csv_without_uuid_is_stored_under_its_host_and_index():
    result_store = stored(DGX_SPARK, "spark")
    gpu = Gpu.objects.get(host__name="spark")
    assert (gpu.uuid, gpu.index, gpu.reported_uuid) == ("spark/index:0", 0, None)
    rows = GpuSample.objects.filter(gpu=gpu).order_by("time")
    assert [(r.utilization, r.power_w, r.temperature) for r in rows] == [(0, 11.17, 35)] * 3
    assert {r.memory_used_mib for r in rows} == {None}  # unified memory: null, not 0
    assert result_store.last_error is None


def test_its_key_is_stable_across_flushes_and_a_worker_restart():
    stored(DGX_SPARK, "spark")
    stored(DGX_SPARK, "spark", start=T0 + timedelta(minutes=1))  # a new worker, same GPU
    assert Gpu.objects.filter(host__name="spark").count() == 1
    assert GpuSample.objects.filter(gpu__host__name="spark").count() == 6


def test_two_hosts_with_a_gpu_0_without_uuid_keep_two_histories():
    stored(DGX_SPARK, "spark-a")
    stored(DGX_SPARK, "spark-b")
    assert sorted(Gpu.objects.values_list("uuid", flat=True)) == [
        "spark-a/index:0",
        "spark-b/index:0",
    ]


def test_processes_on_an_apple_gpu_read_through_nvtop_get_their_sessions():
    stored(M2_MAX, "mac")
    gpu = Gpu.objects.get(host__name="mac")
    assert (gpu.uuid, gpu.name) == ("mac/index:0", "Apple M2 Max")
    sessions = ProcessSession.objects.filter(gpu=gpu).order_by("pid")
    assert [(s.pid, s.user, s.samples) for s in sessions] == [(609, "root", 3), (610, "_windowserver", 3)]  # fmt: skip


def test_every_gpu_of_an_amd_host_is_stored_and_its_history_is_served(client):
    stored(AMD, "ryzen")
    assert list(Gpu.objects.filter(host__name="ryzen").values_list("uuid", "index")) == [
        ("ryzen/index:0", 0),
        ("ryzen/index:1", 1),
    ]
    (utilization,) = {row.utilization for row in GpuSample.objects.filter(gpu__index=1)}
    response = client.get(
        "/api/history",
        {
            "host": "ryzen",
            "gpu": "1",
            "metric": "utilization",
            "from": "2026-01-05T02:59:00Z",
            "to": "2026-01-05T03:01:00Z",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["gpu"] == 1 and body["gpu_uuid"] is None  # no UUID reported: none made up
    assert body["points"] and {p["avg"] for p in body["points"]} == {utilization}


def test_a_bus_id_is_preferred_to_the_index_and_a_uuid_to_both():
    # no real output without a UUID gives a bus id: the DGX Spark's reading with one set
    (gpu,) = read_capture_file(DGX_SPARK).gpus
    assert gpu_storage_key("spark", gpu) == "spark/index:0"
    gpu.pci_bus_id = "0000000F:01:00.0"
    assert gpu_storage_key("spark", gpu) == "spark/pci:0000000F:01:00.0"
    gpu.uuid = "GPU-5c2e3d1a-0000-0000-0000-000000000000"
    assert gpu_storage_key("spark", gpu) == gpu.uuid


def test_an_event_about_a_gpu_without_uuid_is_linked_to_it_and_a_removed_one_marked_gone():
    import copy

    from monitoring.events import detect_events
    from monitoring.models import Event
    from monitoring.records import EventKind

    first, later = readings(AMD, "ryzen", 2)
    later = copy.deepcopy(later)
    del later.gpus[1]  # the discrete GPU is no longer reported
    store = SnapshotStore("ryzen")
    store.add(first)
    store.add(later)
    for event in detect_events(first, later):
        store.add_event(event)
    assert store.flush().error is None
    (event,) = Event.objects.filter(kind=EventKind.GPU_REMOVED)
    assert event.gpu.uuid == "ryzen/index:1"
    assert event.gpu.state == Gpu.STATE_GONE


def test_a_lost_gpu_that_no_longer_says_its_uuid_is_its_row_marked_lost_not_a_new_gpu():
    # nvidia-smi reads "[GPU requires reset]" for every field of a GPU that fell off the bus
    from monitoring.telemetry.schema import GPU_LOST
    from monitoring.tests.helpers import replay_sampler, ticks

    first, lost = ticks(replay_sampler("load", hostname="rig"), 2)
    lost.gpus[0].uuid, lost.gpus[0].state = None, GPU_LOST
    store = SnapshotStore("rig")
    store.add(first)
    assert store.flush().error is None
    store.add(lost)
    assert store.flush().error is None
    (gpu,) = Gpu.objects.filter(host__name="rig")
    assert gpu.uuid == first.gpus[0].uuid and gpu.state == Gpu.STATE_LOST


def test_a_threshold_on_a_gpu_without_uuid_fires_and_its_alert_is_linked_to_it():
    from monitoring.models import Alert, Threshold
    from monitoring.worker.setup import alerting_hooks

    first, *later = readings(DGX_SPARK, "spark", 3)
    store = SnapshotStore("spark")
    store.add(first)
    assert store.flush().error is None
    gpu = Gpu.objects.get(uuid="spark/index:0")
    # the DGX Spark reads 35 °C: a one-GPU threshold at 30 °C, held 1 s
    Threshold.objects.create(
        name="spark hot", metric="temperature", scope=Threshold.SCOPE_GPU, gpu=gpu,
        warning=30, critical=90, duration_s=1,
    )  # fmt: skip
    load_rules, make_evaluator = alerting_hooks("spark")
    evaluator = make_evaluator(load_rules())
    changes = [change for snapshot in later for change in evaluator.evaluate(snapshot)]
    (opened,) = changes
    assert opened.severity == "warning" and opened.gpu_uuid == "spark/index:0"
    store.add_alert(opened)
    assert store.flush().error is None
    (alert,) = Alert.objects.all()
    assert alert.gpu == gpu and alert.threshold.name == "spark hot"
