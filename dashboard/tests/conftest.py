"""Fixtures shared by the dashboard's tests."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from dashboard.hub import reset_hub
from monitoring.storage.writer import SnapshotStore
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import gpu_rows, host_rows, make_host, replay_sampler
from monitoring.worker.loop import CollectWorker, WorkerConfig


@pytest.fixture
def live_layer(settings, transactional_db):
    """The real Redis layer when the test command started Redis, else the in-memory one;
    a group of this test's own, a fresh hub, and the live tests' host known (it reported
    before)."""
    from monitoring.models import Host

    Host.objects.get_or_create(name="live-test")
    port = os.environ.get("TEST_REDIS_PORT")
    if port:
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]},
            }
        }
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.TELEMETRY_GROUP = f"telemetry-test-{uuid.uuid4().hex[:8]}"
    reset_hub()
    yield
    reset_hub()


@pytest.fixture
def rig():
    """A host with two GPUs and the last ten minutes of samples (every 5 s)."""
    host, gpus = make_host("rig")
    start = timezone.now() - timedelta(minutes=10)
    gpu_rows(gpus[0], start, 120, step_s=5, utilization=lambda i: i % 100)
    gpu_rows(gpus[1], start, 120, step_s=5, utilization=lambda i: 50)
    host_rows(host, start, 120, step_s=5, cpu_percent=lambda i: 25.0)
    return host, gpus


#: A process name and command line an attacker controls (they name their own processes):
#: a spreadsheet formula, HTML, a Prometheus label breaker and a newline.
HOSTILE_NAME = '=HYPERLINK("http://x")<script>alert("name")</script>"} 1\nevil{x="'
HOSTILE_ARGV = ["<img src=x onerror=alert(1)>", "--password=hunter2", 'a"b\\c\nd']


def hostile_capture(directory: Path) -> Path:
    """The real H100 load capture, its GPU process renamed by an attacker: a replay directory."""
    capture = json.loads((H100 / "nvml_load.json").read_text())
    for proc in capture["gpus"][0]["compute_procs"]["value"]:
        proc["resolved"] = {"name": HOSTILE_NAME, "user": "mallory", "cmd": HOSTILE_ARGV}
    (directory / "nvml_load.json").write_text(json.dumps(capture))
    return directory


def collect(host: str, directory: Path = H100, ticks: int = 2) -> CollectWorker:
    """A real worker on a replayed capture: ``ticks`` ticks then a flush, as ``collect`` does."""
    worker = CollectWorker(
        replay_sampler(directory=directory, hostname=host),
        SnapshotStore(host),
        WorkerConfig(host_name=host),
    )
    for n in range(ticks):
        worker.tick(worker.schedule.tiers(n))
    result = worker.flush()
    assert result.error is None
    return worker


@pytest.fixture
def h100_host(db):
    """Host ``h100`` with the latest snapshot its worker wrote from the real H100 under load."""
    return collect("h100")


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, one per test module (see ``browser.chromium``)."""
    from dashboard.tests.browser import chromium

    with chromium() as launched:
        yield launched
