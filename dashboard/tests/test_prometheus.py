"""``/metrics`` on a real worker's latest snapshot of the H100 capture: Prometheus names in
base units with host/gpu/uuid/name labels, the worker's own health, stale hosts left out,
and a hostile process name escaped so the exposition still parses to exactly that name."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashboard.tests.conftest import HOSTILE_NAME, collect, hostile_capture
from dashboard.tests.test_operations_api import UUID, age
from monitoring.tests.helpers import another_board_dir

MIB = 1024 * 1024
GPU0 = {"host": "h100", "gpu": "0", "uuid": UUID, "name": "NVIDIA H100 80GB HBM3"}


def scrape(client) -> dict[str, list]:
    """Every sample of ``/metrics`` by name: [(labels, value)], parsed as Prometheus does."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list], metric: str, **labels: str) -> float:
    (found,) = [v for got, v in samples[metric] if all(got.get(k) == x for k, x in labels.items())]
    return found


def test_gpu_figures_come_in_base_units_with_the_gpus_labels(client, h100_host):
    samples = scrape(client)
    assert value(samples, "hoofhearted_gpu_utilization_ratio", **GPU0) == 1.0
    assert value(samples, "hoofhearted_gpu_memory_utilization_ratio", **GPU0) == 0.33
    assert value(samples, "hoofhearted_gpu_memory_used_bytes", **GPU0) == 4734 * MIB
    assert value(samples, "hoofhearted_gpu_memory_total_bytes", **GPU0) == 81559 * MIB
    assert value(samples, "hoofhearted_gpu_temperature_celsius", **GPU0) == 69
    assert value(samples, "hoofhearted_gpu_power_usage_watts", **GPU0) == 696.797
    assert value(samples, "hoofhearted_gpu_power_limit_watts", **GPU0) == 700
    assert value(samples, "hoofhearted_gpu_sm_clock_hertz", **GPU0) == 1350e6
    assert value(samples, "hoofhearted_gpu_performance_state", **GPU0) == 0
    assert value(samples, "hoofhearted_gpu_energy_joules_total", **GPU0) > 0
    assert value(samples, "hoofhearted_gpu_lost", **GPU0) == 0
    active = set(h100_host.last_snapshot.gpus[0].clock_event_reasons or ())
    shown = {labels["reason"] for labels, _ in samples.get("hoofhearted_gpu_throttle_reason", ())}
    assert shown == active  # each reason the snapshot holds, as 1
    # the H100 has no fan of its own: no series, never a fake 0
    assert "hoofhearted_gpu_fan_speed_ratio" not in samples


def test_each_gpu_process_has_its_memory_with_pid_name_and_user(client, h100_host):
    samples = scrape(client)
    memory = {
        labels["pid"]: v for labels, v in samples["hoofhearted_gpu_process_memory_used_bytes"]
    }
    assert memory == {"448": 3590 * MIB, "447": 1130 * MIB}
    (labels, _) = samples["hoofhearted_gpu_process_memory_used_bytes"][0]
    assert (labels["process"], labels["user"], labels["uuid"]) == ("python3", "root", UUID)


def test_host_figures_and_the_workers_own_health_are_there(client, h100_host):
    samples = scrape(client)
    assert 0 <= value(samples, "hoofhearted_host_cpu_usage_ratio", host="h100") <= 1
    assert value(samples, "hoofhearted_host_memory_total_bytes", host="h100") > 0
    assert "hoofhearted_host_load1" in samples
    assert value(samples, "hoofhearted_host_up", host="h100") == 1
    info = value(samples, "hoofhearted_host_info", host="h100", driver_version="580.159.04")
    assert info == 1
    assert value(samples, "hoofhearted_worker_ticks_total", host="h100") == 2
    assert value(samples, "hoofhearted_worker_snapshots_dropped_total", host="h100") == 0
    assert value(samples, "hoofhearted_worker_buffer_capacity", host="h100") == 3600
    assert value(samples, "hoofhearted_build_info", version="0.1.0") == 1
    sampled = value(samples, "hoofhearted_snapshot_timestamp_seconds", host="h100")
    assert sampled == h100_host.last_snapshot.timestamp.timestamp()


def test_a_stale_host_keeps_its_timestamp_and_counters_but_no_figures(client, h100_host, tmp_path):
    collect("rig-b", another_board_dir(tmp_path))  # a machine of its own GPU
    age("h100", 600)
    samples = scrape(client)
    assert value(samples, "hoofhearted_host_up", host="h100") == 0
    assert value(samples, "hoofhearted_host_up", host="rig-b") == 1
    assert {labels["host"] for labels, _ in samples["hoofhearted_gpu_utilization_ratio"]} == {
        "rig-b"
    }
    assert value(samples, "hoofhearted_worker_ticks_total", host="h100") == 2
    assert value(samples, "hoofhearted_snapshot_timestamp_seconds", host="h100") > 0


def test_open_alerts_are_counted_per_host_severity_rule_and_metric(client, h100_host):
    from datetime import UTC, datetime

    from monitoring.models import Alert, Host

    now = datetime.now(UTC)
    host = Host.objects.get(name="h100")
    for severity, ended in (("warning", None), ("warning", None), ("critical", now)):
        Alert.objects.create(
            host=host, severity=severity, rule="threshold", metric="temperature",
            started_at=now, ended_at=ended, message="GPU 0: temperature 69 °C ≥ 60 °C",
        )  # fmt: skip
    (series,) = scrape(client)["hoofhearted_alerts_open"]  # the cleared one is not counted
    labels = {"host": "h100", "severity": "warning", "rule": "threshold", "metric": "temperature"}
    assert series == (labels, 2)


@pytest.mark.django_db
def test_with_nothing_collected_yet_the_scrape_still_answers(client):
    samples = scrape(client)
    assert value(samples, "hoofhearted_build_info", version="0.1.0") == 1
    assert "hoofhearted_gpu_utilization_ratio" not in samples


@pytest.mark.django_db
def test_a_hostile_process_name_is_escaped_in_the_labels(client, tmp_path):
    collect("h100", hostile_capture(tmp_path))
    body = client.get("/metrics").content.decode()
    samples = scrape(client)
    names = {
        labels["process"] for labels, _ in samples["hoofhearted_gpu_process_memory_used_bytes"]
    }
    assert names == {HOSTILE_NAME}  # the exact name, read back through the escaping
    lines = [line for line in body.splitlines() if "process_memory_used_bytes{" in line]
    assert len(lines) == 2  # its newline did not start a line of its own
    assert all('evil{x=\\"' in line for line in lines)
    assert "hunter2" not in body


@pytest.mark.django_db
def test_the_web_process_counts_its_viewers_and_the_websocket_messages_it_ignored(client):
    from dashboard.consumers import Counters

    before = scrape(client)
    Counters.oversized += 1
    after = scrape(client)
    name = "hoofhearted_web_websocket_messages_ignored_total"
    grew = value(after, name, reason="oversized") - value(before, name, reason="oversized")
    assert grew == 1
    assert value(after, "hoofhearted_web_live_viewers") >= 0
