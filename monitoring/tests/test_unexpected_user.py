"""The "unexpected GPU user" rule on the real load capture: two root ``python3`` processes
holding 3.5 GiB and 1.1 GiB of the H100, played tick by tick by the replay source."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.alerting.evaluator import AlertEvaluator
from monitoring.alerting.rules import AllowList, RuleSet, UnexpectedUserConfig
from monitoring.alerting.unexpected import UnexpectedUserTracker
from monitoring.records import AlertRecord
from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.schema import GPU_LOST, Container, Snapshot
from monitoring.tests.conftest import H100

HOST = "gpu-box"
T0 = datetime(2026, 1, 5, 3, 0, 0, tzinfo=UTC)
CONFIG = UnexpectedUserConfig(enabled=True, busy_for_s=600, min_memory_mib=1024)
DOCKER_ID = "3f4e5d6c7b8a" + "0" * 52


@pytest.fixture(scope="module")
def ticks() -> list[Snapshot]:
    """Twenty minutes of the load capture, one snapshot every 10 s (process list on each)."""
    sampler = build_sampler("replay", replay_dir=H100, replay_state="load", hostname=HOST)
    try:
        return [sampler.sample(now=T0 + timedelta(seconds=s)) for s in range(0, 1201, 10)]
    finally:
        sampler.close()


def play(tracker: UnexpectedUserTracker, snaps: list[Snapshot]) -> list[AlertRecord]:
    return [change for snap in snaps for change in tracker.evaluate(snap, snap.timestamp)]


def second(snap: Snapshot) -> int:
    return int((snap.timestamp - T0).total_seconds())


def in_docker(snap: Snapshot) -> Snapshot:
    snap = copy.deepcopy(snap)
    for proc in snap.processes:
        proc.container = Container(runtime="docker", id=DOCKER_ID)
    return snap


def test_the_capture_has_two_root_python3_processes_holding_the_gpu(ticks):
    procs = ticks[0].processes
    assert sorted((p.pid, p.name, p.user) for p in procs) == [
        (447, "python3", "root"),
        (448, "python3", "root"),
    ]
    assert all(p.used_memory_mib >= CONFIG.min_memory_mib for p in procs)


def test_it_alerts_on_both_after_busy_for_s(ticks):
    tracker = UnexpectedUserTracker(AllowList(), CONFIG)
    before = [t for t in ticks if second(t) < 600]
    assert play(tracker, before) == []
    opened = play(tracker, [t for t in ticks if second(t) == 600])
    assert sorted(a.pid for a in opened) == [447, 448]
    by_pid = {a.pid: a for a in opened}
    alert = by_pid[448]
    assert alert.rule == "unexpected_user" and alert.severity == "warning"
    assert alert.gpu_uuid == ticks[0].gpus[0].uuid and alert.value == 3590
    assert alert.started_at == T0 + timedelta(seconds=600) and alert.ended_at is None
    assert alert.message == (
        "Unexpected GPU user on GPU 0 (NVIDIA H100 80GB HBM3) on gpu-box: pid 448 python3, "
        "user root, no container, holding 3.5 GiB of GPU memory for 10m 0s"
    )
    assert "at 100 % SM" in by_pid[447].message
    assert by_pid[447].key != alert.key
    # steady afterwards: nothing more to say
    assert play(tracker, [t for t in ticks if second(t) > 600]) == []
    assert sorted(a.pid for a in tracker.active) == [447, 448]


@pytest.mark.parametrize(
    "allow",
    [
        AllowList(processes=("python*",)),
        AllowList(users=("root",)),
        AllowList(containers=("docker 3f4e*",)),
        AllowList(containers=("3f4e5d6c7b8a",)),
    ],
    ids=["process", "user", "container-label", "container-id"],
)
def test_an_allow_listed_process_never_alerts(ticks, allow):
    tracker = UnexpectedUserTracker(allow, CONFIG)
    assert play(tracker, [in_docker(t) for t in ticks]) == []


def test_a_pattern_that_does_not_match_still_alerts(ticks):
    allow = AllowList(processes=("jupyter*",), users=("alice",), containers=("podman *",))
    tracker = UnexpectedUserTracker(allow, CONFIG)
    opened = play(tracker, [in_docker(t) for t in ticks])
    assert sorted(a.pid for a in opened) == [447, 448]
    assert "container docker 3f4e5d6c7b8a" in opened[0].message


def test_it_clears_when_the_process_leaves(ticks):
    tracker = UnexpectedUserTracker(AllowList(), CONFIG)
    play(tracker, [t for t in ticks if second(t) <= 700])
    gone = copy.deepcopy(ticks[-1])
    gone.gpus[0].processes = [p for p in gone.gpus[0].processes if p.pid != 448]
    (cleared,) = tracker.evaluate(gone, gone.timestamp)
    assert cleared.pid == 448 and cleared.ended_at == gone.timestamp
    assert cleared.started_at == T0 + timedelta(seconds=600)
    assert cleared.message == (
        "Unexpected GPU user on GPU 0 (NVIDIA H100 80GB HBM3) on gpu-box cleared: pid 448 "
        "python3, user root, no container; left after 20m 0s (peak 3.5 GiB of GPU memory)"
    )
    assert [a.pid for a in tracker.active] == [447]


def test_a_gpu_that_says_nothing_this_tick_clears_nothing(ticks):
    tracker = UnexpectedUserTracker(AllowList(), CONFIG)
    play(tracker, [t for t in ticks if second(t) <= 700])
    lost = copy.deepcopy(ticks[-1])
    lost.gpus[0].state, lost.gpus[0].processes = GPU_LOST, []
    unsupported = copy.deepcopy(ticks[-1])
    unsupported.gpus[0].processes = []
    unsupported.gpus[0].unsupported["processes"] = "not supported"
    down = copy.deepcopy(ticks[-1])
    down.gpus, down.driver.status = [], "error"
    for snap in (lost, unsupported, down):
        assert tracker.evaluate(snap, snap.timestamp) == []
    assert len(tracker.active) == 2


def test_idling_before_the_time_is_up_restarts_the_clock(ticks):
    tracker = UnexpectedUserTracker(AllowList(), CONFIG)
    snaps = [copy.deepcopy(t) for t in ticks]
    for snap in snaps:
        if second(snap) == 300:  # both let go of the GPU for one reading
            for proc in snap.processes:
                proc.used_memory_mib, proc.sm_utilization = 200, 0
    opened = play(tracker, snaps)
    assert {a.started_at for a in opened} == {T0 + timedelta(seconds=910)}


def test_the_same_pid_with_another_start_time_is_another_process(ticks):
    tracker = UnexpectedUserTracker(AllowList(), CONFIG)
    play(tracker, [t for t in ticks if second(t) <= 700])
    reused = copy.deepcopy(ticks[-1])
    for proc in reused.processes:
        proc.start_time = T0 + timedelta(seconds=1000)
    cleared = tracker.evaluate(reused, reused.timestamp)
    assert sorted(a.pid for a in cleared) == [447, 448]
    assert all(a.ended_at is not None for a in cleared)
    assert tracker.active == []


def test_allow_listing_or_turning_the_rule_off_clears_through_the_evaluator(ticks):
    ev = AlertEvaluator(RuleSet(unexpected=CONFIG))
    opened = [c for t in ticks if second(t) <= 700 for c in ev.evaluate(t)]
    assert sorted(a.pid for a in opened) == [447, 448]
    ev.update_rules(RuleSet(allow=AllowList(processes=("python3",)), unexpected=CONFIG))
    cleared = ev.evaluate(ticks[-1])
    assert sorted(a.pid for a in cleared) == [447, 448]
    assert all("is now allow-listed" in a.message for a in cleared)
    assert ev.active == []

    ev = AlertEvaluator(RuleSet(unexpected=CONFIG))
    [ev.evaluate(t) for t in ticks if second(t) <= 700]
    ev.update_rules(RuleSet(unexpected=UnexpectedUserConfig(enabled=False)))
    cleared = ev.evaluate(ticks[-1])
    assert len(cleared) == 2 and all("the rule was turned off" in a.message for a in cleared)


def test_it_sends_a_growing_peak_at_most_every_30_seconds(ticks):
    tracker = UnexpectedUserTracker(AllowList(), CONFIG)
    play(tracker, [t for t in ticks if second(t) <= 600])
    sent: list[tuple[int, AlertRecord]] = []
    for t in ticks:
        if second(t) <= 600:
            continue
        snap = copy.deepcopy(t)
        leaking = next(p for p in snap.processes if p.pid == 448)
        leaking.used_memory_mib += second(t) - 600  # 1 MiB more every second
        sent += [(second(t), change) for change in tracker.evaluate(snap, snap.timestamp)]
    assert [s for s, _ in sent] == list(range(630, 1201, 30))
    assert {a.pid for _, a in sent} == {448}
    assert [a.peak_value for _, a in sent] == [3590 + s - 600 for s in range(630, 1201, 30)]
    assert all(a.ended_at is None for _, a in sent)
