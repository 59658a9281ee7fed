"""Thresholds -> alerts, on real snapshots of the captured H100 (values changed where a test
needs a hot GPU or a loaded host), driven by a fake clock: the snapshots' own timestamps."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.alerting.evaluator import AlertEvaluator
from monitoring.alerting.rules import (
    METRIC_GPU_LOST,
    METRIC_LOAD_PER_CORE,
    SCOPE_ALL_GPUS,
    SCOPE_GPU,
    SCOPE_HOST,
    RuleSet,
    ThresholdRule,
)
from monitoring.records import AlertRecord
from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.nvml_capture import CapturedNvml, load_capture, multi_gpu
from monitoring.telemetry.nvml_source import NvmlSource
from monitoring.telemetry.replay import attribute_from_capture
from monitoring.telemetry.schema import GPU_LOST, Snapshot
from monitoring.tests.conftest import H100

HOST = "gpu-box"
T0 = datetime(2026, 1, 5, 3, 0, 0, tzinfo=UTC)
H100_NAME = "NVIDIA H100 80GB HBM3"


@pytest.fixture(scope="module")
def base() -> Snapshot:
    """One real snapshot of the H100 under load, played by the replay source."""
    sampler = build_sampler("replay", replay_dir=H100, replay_state="load", hostname=HOST)
    try:
        return sampler.sample(now=T0)
    finally:
        sampler.close()


def at(base: Snapshot, second: float, *, gpu: int = 0, **values) -> Snapshot:
    """``base`` at T0 + ``second``, with GPU ``gpu``'s fields set to ``values``."""
    snap = copy.deepcopy(base)
    snap.timestamp = T0 + timedelta(seconds=second)
    for name, value in values.items():
        setattr(snap.gpus[gpu], name, value)
    return snap


def rule(metric: str = "temperature", warning=75.0, critical=85.0, **fields) -> ThresholdRule:
    values = {
        "id": 1,
        "name": f"{metric} rule",
        "metric": metric,
        "scope": SCOPE_HOST if metric in ("cpu_percent", METRIC_LOAD_PER_CORE) else SCOPE_ALL_GPUS,
        "host_name": None,
        "gpu_uuid": None,
        "warning": warning,
        "critical": critical,
        "duration_s": 30.0,
        "hysteresis": 3.0,
    }
    values.update(fields)
    return ThresholdRule(**values)


def evaluator(*rules: ThresholdRule) -> AlertEvaluator:
    return AlertEvaluator(RuleSet(thresholds=rules))


def run(ev: AlertEvaluator, base: Snapshot, seconds, **values) -> list[AlertRecord]:
    """Evaluate one snapshot per second in ``seconds``; every change returned."""
    out: list[AlertRecord] = []
    for second in seconds:
        out.extend(ev.evaluate(at(base, second, **values)))
    return out


def test_it_opens_only_after_the_level_held_for_the_duration(base):
    ev = evaluator(rule())
    assert run(ev, base, range(0, 20), temperature=80) == []
    assert run(ev, base, [20], temperature=74) == []  # a dip below the level restarts the clock
    assert run(ev, base, range(21, 51), temperature=80) == []
    (opened,) = run(ev, base, [51], temperature=80)
    assert opened.severity == "warning" and opened.ended_at is None
    assert opened.started_at == T0 + timedelta(seconds=51)
    assert opened.message == f"GPU 0 ({H100_NAME}) on {HOST}: temperature 80 °C ≥ 75 °C for 30s"
    assert (opened.rule, opened.metric, opened.threshold_id) == ("threshold", "temperature", 1)
    assert opened.gpu_uuid == base.gpus[0].uuid and opened.value == 80
    assert [a.key for a in ev.active] == [opened.key]


def test_it_opens_as_critical_when_the_critical_level_held(base):
    ev = evaluator(rule())
    (opened,) = run(ev, base, range(0, 31), temperature=86)
    assert opened.severity == "critical"
    assert opened.message.endswith("temperature 86 °C ≥ 85 °C for 30s")


def test_it_does_not_flap_for_values_oscillating_around_the_level(base):
    ev = evaluator(rule())
    # ±1 around the level before it ever held: never continuously above, never opens
    wobble = [
        change
        for s in range(300)
        for change in ev.evaluate(at(base, s, temperature=75 + (1 if s % 2 else -1)))
    ]
    assert wobble == [] and ev.active == []
    # held, opened; then ±1 around the level for ten minutes: open the whole time, no change
    (opened,) = run(ev, base, range(300, 331), temperature=76)
    wobble = [
        change
        for s in range(331, 931)
        for change in ev.evaluate(at(base, s, temperature=75 + (1 if s % 2 else -1)))
    ]
    assert wobble == []
    assert [a.key for a in ev.active] == [opened.key]


def test_it_clears_only_below_the_level_minus_hysteresis_for_the_clear_period(base):
    ev = evaluator(rule())
    (opened,) = run(ev, base, range(0, 31), temperature=80)
    assert run(ev, base, range(31, 331), temperature=73) == []  # below 75, not below 72
    assert run(ev, base, range(331, 340), temperature=71) == []  # not for 10 s yet
    (cleared,) = run(ev, base, [341], temperature=71)
    assert cleared.key == opened.key and cleared.started_at == opened.started_at
    assert cleared.ended_at == T0 + timedelta(seconds=341)
    assert cleared.message == (
        f"GPU 0 ({H100_NAME}) on {HOST}: temperature back to 71 °C, below 72 °C; "
        "cleared after 5m 11s (peak 80 °C)"
    )
    assert ev.active == []
    # a new occurrence is a new alert (new start), with the same key for storage
    (again,) = run(ev, base, range(400, 431), temperature=80)
    assert again.key == opened.key and again.started_at == T0 + timedelta(seconds=430)


def test_a_short_calm_spell_does_not_clear(base):
    ev = evaluator(rule())
    run(ev, base, range(0, 31), temperature=80)
    for start in range(31, 331, 10):  # 5 s well below, 5 s back at the level, repeatedly
        assert run(ev, base, range(start, start + 5), temperature=60) == []
        assert run(ev, base, range(start + 5, start + 10), temperature=76) == []
    assert len(ev.active) == 1


def test_it_escalates_to_critical_and_steps_back_to_warning(base):
    ev = evaluator(rule())
    (opened,) = run(ev, base, range(0, 31), temperature=80)
    assert run(ev, base, range(31, 60), temperature=86) == []  # critical level, not 30 s yet
    (escalated,) = run(ev, base, [61], temperature=86)
    assert escalated.key == opened.key and escalated.started_at == opened.started_at
    assert escalated.severity == "critical" and escalated.peak_value == 86
    assert escalated.message.endswith("temperature 86 °C ≥ 85 °C for 30s")
    assert run(ev, base, range(62, 200), temperature=83) == []  # not below 85 - 3
    assert run(ev, base, range(200, 209), temperature=81) == []
    (calmer,) = run(ev, base, [210], temperature=81)
    assert calmer.severity == "warning" and calmer.ended_at is None
    assert calmer.message == (
        f"GPU 0 ({H100_NAME}) on {HOST}: temperature 81 °C, back below the critical 85 °C; "
        "still at warning level (75 °C)"
    )
    (cleared,) = run(ev, base, range(211, 222), temperature=60)
    assert cleared.ended_at is not None and cleared.peak_value == 86


def test_it_sends_a_rising_peak_at_most_every_30_seconds(base):
    ev = evaluator(rule(critical=None))
    run(ev, base, range(0, 31), temperature=76)
    updates = [c for s in range(31, 151) for c in ev.evaluate(at(base, s, temperature=76 + s))]
    assert [u.peak_value for u in updates] == [76 + 60, 76 + 90, 76 + 120, 76 + 150]
    assert all(u.severity == "warning" and u.ended_at is None for u in updates)
    # a steady value sends nothing more
    assert run(ev, base, range(151, 400), temperature=100) == []


@pytest.fixture
def two_gpus(base, tmp_path) -> Snapshot:
    """A real 2-GPU reading (the capture's H100 and a clone with its own UUID)."""
    nvml = CapturedNvml(multi_gpu(load_capture(H100, "load"), 2))
    source = NvmlSource(nvml, clock=lambda: 1000.0)
    reading = source.read(processes=True, slow=True)
    attribute_from_capture(reading.gpus, nvml)
    snap = copy.deepcopy(base)
    snap.gpus, snap.driver = reading.gpus, reading.driver
    return snap


def test_it_keeps_one_alert_per_gpu(two_gpus):
    assert [g.index for g in two_gpus.gpus] == [0, 1]
    ev = evaluator(rule())
    changes = []
    for s in range(0, 31):
        snap = at(two_gpus, s, gpu=1, temperature=80)
        snap.gpus[0].temperature = 60
        changes += ev.evaluate(snap)
    (opened,) = changes
    assert opened.gpu_uuid == two_gpus.gpus[1].uuid != two_gpus.gpus[0].uuid
    assert opened.message.startswith(f"GPU 1 ({H100_NAME}) on {HOST}: temperature 80 °C")
    both = []
    for s in range(31, 62):
        snap = at(two_gpus, s, gpu=1, temperature=80)
        snap.gpus[0].temperature = 90
        both += ev.evaluate(snap)
    (gpu0,) = both
    assert gpu0.gpu_uuid == two_gpus.gpus[0].uuid and gpu0.severity == "critical"
    assert gpu0.key != opened.key
    assert {a.gpu_uuid for a in ev.active} == {g.uuid for g in two_gpus.gpus}


def test_a_one_gpu_threshold_watches_only_that_gpu(two_gpus):
    first = two_gpus.gpus[0].uuid
    ev = evaluator(rule(scope=SCOPE_GPU, gpu_uuid=first))
    assert run(ev, two_gpus, range(0, 100), gpu=1, temperature=95) == []
    (opened,) = run(ev, two_gpus, range(100, 131), gpu=0, temperature=95)
    assert opened.gpu_uuid == first


def test_a_lost_gpu_opens_at_once_as_critical_and_clears_when_found(base):
    clock = [1000.0]
    nvml = CapturedNvml(multi_gpu(load_capture(H100, "load"), 2))
    source = NvmlSource(nvml, clock=lambda: clock[0])
    ev = evaluator(rule(METRIC_GPU_LOST, warning=None, critical=None, duration_s=0, hysteresis=0))

    def tick(second: int) -> list[AlertRecord]:
        clock[0] = 1000.0 + second
        snap = copy.deepcopy(base)
        reading = source.read(processes=True, slow=True)
        snap.gpus, snap.driver = reading.gpus, reading.driver
        snap.timestamp = T0 + timedelta(seconds=second)
        return ev.evaluate(snap)

    assert tick(0) == []
    nvml.fail(1, error="NVMLError_GpuIsLost")  # fell off the bus
    (lost,) = tick(1)
    assert lost.severity == "critical" and lost.metric == "gpu_lost"
    assert lost.message.startswith(f"GPU 1 ({H100_NAME}) on {HOST} is lost: ")
    assert "GPU is lost" in lost.message
    assert [tick(s) for s in range(2, 30)] == [[]] * 28  # still lost: no repeats
    nvml.heal(1)
    found = [c for s in range(30, 200) for c in tick(s)]  # found at the next retry
    (cleared,) = found
    assert cleared.key == lost.key and cleared.ended_at is not None
    assert cleared.message.startswith(f"GPU 1 ({H100_NAME}) on {HOST} is back after ")


def test_a_lost_gpu_neither_opens_nor_clears_its_other_thresholds(base):
    ev = evaluator(rule())
    run(ev, base, range(0, 31), temperature=90)
    lost = [
        c
        for s in range(31, 300)
        for c in ev.evaluate(at(base, s, state=GPU_LOST, temperature=None))
    ]
    assert lost == [] and len(ev.active) == 1


def test_it_watches_load_per_core(base):
    ev = evaluator(rule(METRIC_LOAD_PER_CORE, warning=1.0, critical=1.5, hysteresis=0.1))
    changes = []
    for s in range(0, 31):
        snap = at(base, s)
        snap.host.cores = 4
        snap.system.load_average = (4.8, 3.0, 2.0)  # 1.2 per core: above the core count
        changes += ev.evaluate(snap)
    (opened,) = changes
    assert opened.severity == "warning" and opened.gpu_uuid is None
    assert opened.value == pytest.approx(1.2)
    assert opened.message == f"{HOST}: load per core 1.20 ≥ 1.00 for 30s"
    snap = at(base, 40)
    snap.system.load_average = None  # no load average on this platform: ignored
    assert ev.evaluate(snap) == []


def test_it_watches_gpu_memory_percent(base):
    total = base.gpus[0].memory_total
    ev = evaluator(rule("memory_percent", warning=90, critical=95))
    (opened,) = run(ev, base, range(0, 31), memory_used=int(total * 0.96))
    assert opened.severity == "critical" and opened.value == pytest.approx(96, abs=0.01)
    assert "memory used 96 % ≥ 95 % for 30s" in opened.message


def test_it_watches_host_metrics(base):
    ev = evaluator(rule("cpu_percent", warning=80, critical=90, duration_s=60))
    changes = []
    for s in range(0, 61):
        snap = at(base, s)
        snap.system.cpu_usage = 85.5
        changes += ev.evaluate(snap)
    (opened,) = changes
    assert opened.message == f"{HOST}: CPU 85.5 % ≥ 80 % for 1m 0s"


def test_missing_values_neither_open_nor_clear(base):
    ev = evaluator(rule())
    assert run(ev, base, range(0, 100), temperature=None) == []
    run(ev, base, range(100, 131), temperature=80)
    assert run(ev, base, range(131, 1000), temperature=None) == []
    assert len(ev.active) == 1


def test_a_threshold_of_another_host_is_ignored(base):
    ev = evaluator(rule(host_name="other-box"))
    assert run(ev, base, range(0, 100), temperature=99) == []
    ev = evaluator(rule(host_name=HOST))
    assert len(run(ev, base, range(0, 100), temperature=99)) == 1


def test_update_rules_keeps_the_state_of_rules_that_still_exist(base):
    original = rule()
    ev = evaluator(original)
    (opened,) = run(ev, base, range(0, 31), temperature=80)
    run(ev, base, range(31, 50), temperature=86)  # critical level held 19 s so far
    # levels edited in admin: the alert stays open, timers go on, the new level applies
    ev.update_rules(RuleSet(thresholds=(rule(critical=86.0, name="renamed"),)))
    assert [a.key for a in ev.active] == [opened.key]
    *_peak_update, escalated = run(ev, base, range(50, 62), temperature=86)
    assert escalated.key == opened.key and escalated.started_at == opened.started_at
    assert escalated.severity == "critical"
    assert escalated.message.endswith("86 °C ≥ 86 °C for 30s")
    # removed (or disabled): cleared on the next tick, whatever the value
    ev.update_rules(RuleSet())
    (closed,) = run(ev, base, [62], temperature=90)
    assert closed.key == opened.key and closed.ended_at == T0 + timedelta(seconds=62)
    assert closed.severity == "critical"
    assert "its threshold 'renamed' was removed or disabled" in closed.message
    assert ev.active == [] and run(ev, base, range(63, 200), temperature=90) == []


def test_update_rules_restarts_a_rule_that_watches_something_else(base):
    ev = evaluator(rule())
    (opened,) = run(ev, base, range(0, 31), temperature=80)
    ev.update_rules(RuleSet(thresholds=(rule("power_w", warning=100, critical=None),)))
    changes = run(ev, base, [31], temperature=80)
    assert [(c.key, c.ended_at is not None) for c in changes] == [(opened.key, True)]
    assert "now watches something else" in changes[0].message


def test_the_records_returned_are_copies(base):
    ev = evaluator(rule())
    (opened,) = run(ev, base, range(0, 31), temperature=80)
    run(ev, base, range(31, 62), temperature=90)
    assert opened.severity == "warning"  # the evaluator did not change what it handed out
