"""Metric names carry their unit where two could be confused (issue 9), the old names keep
working, and an existing database comes through the rename with its samples and rules."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from monitoring.alerting.rules import load_rules
from monitoring.metrics import ALL_METRICS, GPU_METRICS, HOST_METRICS, RENAMED, canonical
from monitoring.models import Threshold

rename_migration = importlib.import_module("monitoring.migrations.0007_metric_names_carry_units")

BEFORE = [("monitoring", "0006_gpu_key_without_uuid")]
AFTER = [("monitoring", "0007_metric_names_carry_units")]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_gpu_and_host_metrics_share_one_namespace_without_a_collision():
    assert len(ALL_METRICS) == len(GPU_METRICS) + len(HOST_METRICS)


def test_the_figures_a_newcomer_could_confuse_say_their_unit():
    said = {key: (m.scope, m.unit) for key, m in ALL_METRICS.items()}
    assert said["memory_used_mib"] == ("gpu", "MiB") and said["memory_percent"] == ("gpu", "%")
    assert said["ram_percent"] == said["swap_percent"] == said["cpu_percent"] == ("host", "%")
    assert said["power_w"] == ("gpu", "W")


def test_every_old_name_leads_to_a_metric_of_the_same_scope_and_none_is_still_in_use():
    assert RENAMED == {
        "memory_used": "memory_used_mib",
        "power_usage": "power_w",
        "cpu_usage": "cpu_percent",
        "memory_usage": "ram_percent",
        "swap_usage": "swap_percent",
    }
    assert all(new in ALL_METRICS and old not in ALL_METRICS for old, new in RENAMED.items())


def test_a_name_is_made_current_and_anything_else_is_left_for_the_caller_to_refuse():
    assert canonical("memory_used") == "memory_used_mib"
    assert canonical("memory_used_mib") == "memory_used_mib"
    assert canonical("temperature") == "temperature"
    assert canonical("watts") == "watts"


def test_the_migration_renames_what_the_registry_renames():
    assert rename_migration.RENAMED == RENAMED
    assert {*rename_migration.GPU_RENAMED, *rename_migration.HOST_RENAMED} == set(RENAMED)
    assert all(ALL_METRICS[RENAMED[old]].scope == "gpu" for old in rename_migration.GPU_RENAMED)
    assert all(ALL_METRICS[RENAMED[old]].scope == "host" for old in rename_migration.HOST_RENAMED)


@pytest.mark.django_db
def test_a_threshold_stored_under_an_old_name_is_watched_under_the_new_one():
    Threshold.objects.create(name="scripted", metric="swap_usage", scope="host", warning=50)
    (rule,) = [t for t in load_rules("any-host").thresholds if t.name == "scripted"]
    assert rule.metric == "swap_percent"


def _migrate(targets: list[tuple[str, str]]):
    """Migrate the test database to ``targets``; the models as they were there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()  # the applied set changed
    return executor.loader.project_state(targets).apps


def _old_database(apps) -> dict[str, int]:
    """What a user had before the rename: samples, roll-ups, their own threshold, alerts."""
    host = apps.get_model("monitoring", "Host").objects.create(name="old-rig")
    gpu = apps.get_model("monitoring", "Gpu").objects.create(host=host, uuid="GPU-old", index=0)
    gpu_sample = apps.get_model("monitoring", "GpuSample").objects.create(
        gpu=gpu, time=T0, utilization=100, memory_used=4734, power_usage=696.797
    )
    gpu_rollup = apps.get_model("monitoring", "GpuRollup").objects.create(
        gpu=gpu, resolution=60, bucket=T0, samples=60, memory_used_max=4800.0,
        power_usage_min=80.5, power_usage_avg=400.25, power_usage_max=700.0,
    )  # fmt: skip
    host_sample = apps.get_model("monitoring", "HostSample").objects.create(
        host=host, time=T0, cpu_usage=12.5, memory_usage=40.25, swap_usage=1.5, load_1=0.75
    )
    host_rollup = apps.get_model("monitoring", "HostRollup").objects.create(
        host=host, resolution=3600, bucket=T0, samples=3600, cpu_usage_avg=30.5,
        memory_usage_max=88.0, swap_usage_min=0.0,
    )  # fmt: skip
    threshold = apps.get_model("monitoring", "Threshold").objects.create(
        name="hungry GPU", metric="power_usage", scope="all_gpus", warning=600, critical=690
    )
    alerts = apps.get_model("monitoring", "Alert").objects
    hot = alerts.create(
        host=host, threshold=threshold, metric="power_usage", severity="warning",
        started_at=T0, message="GPU 0: power 650 W ≥ 600 W for 30s",
    )  # fmt: skip
    squatter = alerts.create(
        host=host, rule="unexpected_user", metric="memory_used", severity="warning",
        started_at=T0, message="Unexpected GPU user", pid=448,
    )  # fmt: skip
    return {
        "gpu_sample": gpu_sample.pk,
        "gpu_rollup": gpu_rollup.pk,
        "host_sample": host_sample.pk,
        "host_rollup": host_rollup.pk,
        "threshold": threshold.pk,
        "hot": hot.pk,
        "squatter": squatter.pk,
    }


@pytest.mark.django_db(transaction=True)
def test_an_existing_database_keeps_its_samples_and_rules_through_the_rename_and_back():
    try:
        pks = _old_database(_migrate(BEFORE))

        apps = _migrate(AFTER)
        model = lambda name: apps.get_model("monitoring", name).objects  # noqa: E731
        gpu_sample = model("GpuSample").get(pk=pks["gpu_sample"])
        assert (gpu_sample.utilization, gpu_sample.memory_used_mib) == (100, 4734)
        assert gpu_sample.power_w == pytest.approx(696.797)
        gpu_rollup = model("GpuRollup").get(pk=pks["gpu_rollup"])
        assert gpu_rollup.memory_used_mib_max == 4800.0
        assert (gpu_rollup.power_w_min, gpu_rollup.power_w_avg, gpu_rollup.power_w_max) == (
            80.5, 400.25, 700.0,
        )  # fmt: skip
        host_sample = model("HostSample").get(pk=pks["host_sample"])
        assert (host_sample.cpu_percent, host_sample.ram_percent) == (12.5, 40.25)
        assert (host_sample.swap_percent, host_sample.load_1) == (1.5, 0.75)
        host_rollup = model("HostRollup").get(pk=pks["host_rollup"])
        assert (host_rollup.cpu_percent_avg, host_rollup.ram_percent_max) == (30.5, 88.0)
        assert host_rollup.swap_percent_min == 0.0
        threshold = model("Threshold").get(pk=pks["threshold"])
        assert (threshold.name, threshold.metric, threshold.warning) == (
            "hungry GPU",
            "power_w",
            600,
        )
        assert model("Alert").get(pk=pks["hot"]).metric == "power_w"
        assert model("Alert").get(pk=pks["squatter"]).metric == "memory_used_mib"

        apps = _migrate(BEFORE)  # and back: every column and stored name as it was
        model = lambda name: apps.get_model("monitoring", name).objects  # noqa: E731
        assert model("GpuSample").get(pk=pks["gpu_sample"]).memory_used == 4734
        assert model("HostRollup").get(pk=pks["host_rollup"]).memory_usage_max == 88.0
        assert model("Threshold").get(pk=pks["threshold"]).metric == "power_usage"
        assert model("Alert").get(pk=pks["squatter"]).metric == "memory_used"
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
