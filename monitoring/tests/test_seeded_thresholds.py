"""The seeded default rules, the loader that hands them to the worker, and the names the
Django-free evaluator shares with the models."""

from __future__ import annotations

import copy
import importlib
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection

from monitoring.alerting import rules
from monitoring.alerting.checks import threshold_mistakes
from monitoring.alerting.evaluator import AlertEvaluator
from monitoring.alerting.rules import load_rules, metric_target
from monitoring.models import AllowedGpuUser, Gpu, Host, Threshold, UnexpectedUserRule
from monitoring.telemetry.factory import build_sampler
from monitoring.tests.conftest import H100

seed_migration = importlib.import_module("monitoring.migrations.0003_seed_default_thresholds")
rename_migration = importlib.import_module("monitoring.migrations.0007_metric_names_carry_units")

HOST = "gpu-box"
T0 = datetime(2026, 1, 5, 3, 0, 0, tzinfo=UTC)
SEEDED = {
    # metric: (scope, warning, critical)
    "temperature": ("all_gpus", 75, 85),
    "memory_percent": ("all_gpus", 90, 95),
    "cpu_percent": ("host", 80, 90),
    "ram_percent": ("host", 90, 95),
    "load_per_core": ("host", 1.0, 1.5),
    "gpu_lost": ("all_gpus", None, None),
}


def seeded() -> dict[str, tuple]:
    return {t.metric: (t.scope, t.warning, t.critical) for t in Threshold.objects.all()}


def run_seed(function) -> None:
    function(apps, SimpleNamespace(connection=connection))


def test_the_names_shared_with_the_models_agree():
    assert (rules.SCOPE_ALL_GPUS, rules.SCOPE_GPU, rules.SCOPE_HOST) == (
        Threshold.SCOPE_ALL_GPUS,
        Threshold.SCOPE_GPU,
        Threshold.SCOPE_HOST,
    )
    assert rules.METRIC_GPU_LOST == Threshold.GPU_LOST_METRIC
    assert rules.METRIC_LOAD_PER_CORE == Threshold.LOAD_PER_CORE_METRIC
    assert all(metric_target(key) for key, _label in Threshold.METRIC_CHOICES)
    defaults = rules.UnexpectedUserConfig()
    for name in ("enabled", "busy_for_s", "min_memory_mib", "min_sm_utilization"):
        assert getattr(defaults, name) == UnexpectedUserRule._meta.get_field(name).default


@pytest.mark.django_db
def test_the_defaults_are_seeded():
    assert seeded() == SEEDED
    assert all(t.enabled and t.host is None for t in Threshold.objects.all())
    rule = UnexpectedUserRule.objects.get()
    assert (rule.enabled, rule.busy_for_s, rule.min_memory_mib) == (True, 600, 1024)


@pytest.mark.django_db
def test_the_seeded_defaults_pass_the_checks_the_admin_makes():
    for t in Threshold.objects.all():
        found = threshold_mistakes(
            metric=t.metric,
            scope=t.scope,
            warning=t.warning,
            critical=t.critical,
            hysteresis=t.hysteresis,
        )
        assert found == {}, t.name


@pytest.mark.django_db
def test_seeding_is_idempotent_keeps_edits_and_reverses():
    """Replayed as ``migrate`` runs it: on the metric names before 0007 renamed them."""
    Threshold.objects.filter(metric="temperature").update(warning=70)
    run_seed(rename_migration.backwards)
    run_seed(seed_migration.seed)
    assert Threshold.objects.count() == len(SEEDED) and UnexpectedUserRule.objects.count() == 1
    assert Threshold.objects.get(metric="temperature").warning == 70  # an admin's edit stays
    mine = Threshold.objects.create(name="mine", metric="power_usage", warning=600)
    run_seed(seed_migration.unseed)
    assert list(Threshold.objects.all()) == [mine]
    assert not UnexpectedUserRule.objects.exists()
    run_seed(seed_migration.seed)
    run_seed(rename_migration.forwards)
    assert seeded() == {**SEEDED, "power_w": ("all_gpus", 600, None)}


@pytest.mark.django_db
def test_load_rules_gives_the_worker_what_applies_to_its_host(caplog):
    box = Host.objects.create(name=HOST)
    other = Host.objects.create(name="other-box")
    gpu = Gpu.objects.create(host=box, uuid="GPU-1", index=1)
    Threshold.objects.create(name="mine", metric="power_w", scope="gpu", gpu=gpu, warning=1)
    Threshold.objects.create(name="here", metric="fan_speed", host=box, warning=90)
    Threshold.objects.create(name="there", metric="fan_speed", host=other, warning=90)
    Threshold.objects.create(name="off", metric="fan_speed", warning=90, enabled=False)
    Threshold.objects.create(name="broken", metric="cpu_percent", scope="all_gpus", warning=1)
    AllowedGpuUser.objects.create(kind="process", pattern="jupyter*")
    AllowedGpuUser.objects.create(kind="user", pattern="alice")
    AllowedGpuUser.objects.create(kind="container", pattern="docker 1a2b*")

    with caplog.at_level(logging.WARNING, logger="monitoring.alerting.rules"):
        loaded = load_rules(HOST)
    by_name = {t.name: t for t in loaded.thresholds}
    assert set(by_name) == {*(t.name for t in Threshold.objects.filter(host=None)), "here"} - {
        "off",
        "broken",
    }
    assert by_name["mine"].gpu_uuid == "GPU-1" and by_name["mine"].scope == "gpu"
    assert by_name["here"].host_name == HOST
    temperature = by_name["GPU temperature"]
    assert (temperature.warning, temperature.critical, temperature.duration_s) == (75, 85, 60)
    assert temperature.hysteresis == 3 and temperature.direction == "above"
    assert "'broken'" in caplog.text and "host metric" in caplog.text
    assert loaded.allow == rules.AllowList(("jupyter*",), ("alice",), ("docker 1a2b*",))
    assert loaded.unexpected == rules.UnexpectedUserConfig(True, 600, 1024, 10)

    UnexpectedUserRule.objects.all().delete()
    assert load_rules(HOST).unexpected.enabled is False  # no row: the rule is off


@pytest.mark.django_db
def test_the_seeded_rules_alert_on_a_hot_h100():
    """Loaded from the database, evaluated on the real capture: the idle H100 at 46 °C is
    fine; driven to 90 °C for a minute it opens a critical temperature alert."""
    sampler = build_sampler("replay", replay_dir=H100, replay_state="idle", hostname=HOST)
    try:
        base = sampler.sample(now=T0)
    finally:
        sampler.close()
    base.system.cpu_usage, base.system.memory_usage = 5.0, 20.0
    base.system.load_average = (0.1, 0.1, 0.1)
    ev = AlertEvaluator(load_rules(HOST))
    changes = []
    for second in range(0, 130):
        snap = copy.deepcopy(base)
        snap.timestamp = T0 + timedelta(seconds=second)
        if second >= 60:
            snap.gpus[0].temperature = 90
        changes += ev.evaluate(snap)
    (alert,) = changes
    assert alert.severity == "critical" and alert.metric == "temperature"
    assert alert.started_at == T0 + timedelta(seconds=120)
    assert alert.threshold_id == Threshold.objects.get(metric="temperature").pk
    assert alert.message.endswith("temperature 90 °C ≥ 85 °C for 1m 0s")
