"""The tier schedule and the steady clock, on a fake clock (no sleeping, no threads)."""

from __future__ import annotations

import pytest

from monitoring.worker.tiers import SteadyClock, TierSchedule, ticks_per


class FakeClock:
    """Monotonic seconds that move only when the test (or a fake sample) says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def run(clock: SteadyClock, fake: FakeClock, work_s, ticks: int) -> list[tuple[int, float]]:
    """Run ``ticks`` ticks where tick n's work takes ``work_s(n)``; (number, start time)."""
    started = []
    for _ in range(ticks):
        tick = clock.next_tick()
        clock.wait(tick, fake.sleep)
        started.append((tick.number, fake.t))
        fake.t += work_s(tick.number)
    return started


def test_it_runs_every_tier_on_the_first_tick_then_each_at_its_own_rate():
    schedule = TierSchedule(1000, 2000, 10000)
    tiers = [schedule.tiers(n) for n in range(21)]
    assert [n for n, t in enumerate(tiers) if t.processes] == list(range(0, 21, 2))
    assert [n for n, t in enumerate(tiers) if t.slow] == [0, 10, 20]


def test_a_skipped_tick_does_not_make_a_tier_miss_its_turn():
    schedule = TierSchedule(1000, 2000, 10000)
    assert schedule.tiers(0).slow
    assert schedule.tiers(9).slow is False
    # tick 10 was skipped (an overrun): tick 11 reads the slow figures instead
    assert schedule.tiers(11).slow
    assert schedule.tiers(12).slow is False
    assert schedule.tiers(21).slow


@pytest.mark.parametrize(
    ("tier_ms", "interval_ms", "every"),
    [(2000, 1000, 2), (2000, 250, 8), (1000, 1000, 1), (500, 1000, 1), (10000, 3000, 3)],
)
def test_tier_intervals_round_to_whole_ticks_and_never_below_one(tier_ms, interval_ms, every):
    assert ticks_per(tier_ms, interval_ms) == every


def test_the_host_top_processes_have_their_own_tier_defaulting_to_the_process_tier():
    own = TierSchedule(1000, 2000, 10000, 5000)
    assert [n for n in range(11) if own.tiers(n).top_processes] == [0, 5, 10]
    default = TierSchedule(1000, 2000, 10000)
    assert [n for n in range(5) if default.tiers(n).top_processes] == [0, 2, 4]


def test_it_describes_the_schedule_in_milliseconds():
    assert TierSchedule(500, 2000, 10000, 10000).describe() == (
        "hot every 500 ms, processes every 2000 ms, slow figures every 10000 ms, "
        "host top processes every 10000 ms"
    )


def test_tick_times_do_not_drift_when_sampling_takes_time():
    fake = FakeClock()
    clock = SteadyClock(1.0, now=fake)
    started = run(clock, fake, lambda n: 0.3 + 0.05 * (n % 3), ticks=1000)
    assert [n for n, _ in started] == list(range(1000))
    for number, at in started:
        assert at == pytest.approx(1000.0 + number, abs=1e-6)  # on the grid, not 1000 * 0.35 late
    assert clock.skipped_total == 0


def test_an_overrun_skips_the_missed_ticks_instead_of_bursting():
    fake = FakeClock()
    clock = SteadyClock(1.0, now=fake)
    started = run(clock, fake, lambda n: 3.6 if n == 2 else 0.1, ticks=6)
    numbers = [n for n, _ in started]
    # tick 2 ran from 1002.0 to 1005.6: ticks 3, 4 and 5 are gone, 6 runs on its grid point
    assert numbers == [0, 1, 2, 6, 7, 8]
    assert started[3][1] == pytest.approx(1006.0)
    assert clock.skipped_total == 3


def test_a_tick_a_little_late_still_runs_rather_than_being_skipped():
    fake = FakeClock()
    clock = SteadyClock(1.0, now=fake)
    started = run(clock, fake, lambda n: 1.2 if n == 0 else 0.1, ticks=3)
    assert [n for n, _ in started] == [0, 1, 2]
    assert started[1][1] == pytest.approx(1001.2)  # late, not skipped
    assert started[2][1] == pytest.approx(1002.0)  # and back on the grid at once
    assert clock.skipped_total == 0


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError):
        SteadyClock(0)
