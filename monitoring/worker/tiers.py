"""When the worker samples, and what each tick reads. Pure: no I/O, clocks are passed in.

Two jobs, both about time:

* :class:`SteadyClock` keeps ticks on a fixed grid (tick k is due at ``start + k * interval``
  on the monotonic clock), so the time a sample takes never shifts the next one: no drift
  over months. A tick that overruns makes the clock skip the grid points already missed
  (and say how many), instead of firing them back to back to catch up; a burst of stale
  samples is worth less than a steady rate.
* :class:`TierSchedule` decides which tiers a tick reads. The cheap GPU and host figures
  every tick; the process list and its attribution (a /proc walk per process) every
  ``process_interval``; the expensive driver calls (PCIe throughput, energy, ECC, max
  clocks) every ``slow_interval``; the host's busiest processes (a walk over every process
  in /proc: the costliest read of all on a busy server) every ``top_interval``. Tiers are
  kept by elapsed ticks, not ``tick % n``, so a skipped tick never makes a tier miss its
  turn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Below this interval the worker warns about its own load (it still runs, down to 250 ms).
LOW_INTERVAL_WARNING_MS = 500
MIN_INTERVAL_MS = 250


@dataclass(frozen=True, slots=True)
class Tiers:
    """What one tick reads beyond the hot figures."""

    processes: bool
    slow: bool
    top_processes: bool = True


def ticks_per(tier_ms: int, interval_ms: int) -> int:
    """How many ticks apart a tier runs (at least every tick, rounded to the nearest)."""
    return max(1, round(tier_ms / interval_ms))


class TierSchedule:
    """Which tiers tick ``k`` wants; the first tick reads everything."""

    def __init__(
        self,
        interval_ms: int,
        process_interval_ms: int,
        slow_interval_ms: int,
        top_interval_ms: int | None = None,
    ) -> None:
        self.interval_ms = interval_ms
        self.every = {
            "processes": ticks_per(process_interval_ms, interval_ms),
            "slow": ticks_per(slow_interval_ms, interval_ms),
            "top_processes": ticks_per(top_interval_ms or process_interval_ms, interval_ms),
        }
        self._last: dict[str, int] = {}

    @property
    def process_every(self) -> int:
        return self.every["processes"]

    @property
    def slow_every(self) -> int:
        return self.every["slow"]

    def tiers(self, tick: int) -> Tiers:
        """The tiers due at ``tick`` (ticks only move forward), recording that they ran."""
        due = {}
        for name, every in self.every.items():
            last = self._last.get(name)
            due[name] = last is None or tick - last >= every
            if due[name]:
                self._last[name] = tick
        return Tiers(**due)

    def describe(self) -> str:
        ms = self.interval_ms
        return (
            f"hot every {ms} ms, processes every {self.every['processes'] * ms} ms, "
            f"slow figures every {self.every['slow'] * ms} ms, "
            f"host top processes every {self.every['top_processes'] * ms} ms"
        )


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick the clock hands out: its number, when it was due, what was skipped before it."""

    number: int
    due: float  # monotonic seconds
    skipped: int  # grid points missed since the previous tick


class SteadyClock:
    """Ticks on a fixed monotonic grid; waits with ``sleep`` (which may return early on stop).

    ``late_after`` is how far past its due time a tick may start and still run (late, not
    skipped): by default half an interval, so scheduler jitter never costs a sample.
    """

    def __init__(
        self,
        interval_s: float,
        *,
        now: Callable[[], float] = time.monotonic,
        late_after: float | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval must be positive, not {interval_s}")
        self.interval = interval_s
        self.now = now
        self.late_after = interval_s / 2 if late_after is None else late_after
        self.start = now()
        self._next = 0
        self.skipped_total = 0

    def due(self, number: int) -> float:
        return self.start + number * self.interval

    def next_tick(self) -> Tick:
        """The next tick to run: the next grid point, or a later one if those were missed."""
        number = self._next
        now = self.now()
        if now - self.due(number) > self.late_after:
            number = max(number, math.floor((now - self.start) / self.interval))
            if now - self.due(number) > self.late_after:
                number += 1
        skipped = number - self._next
        self.skipped_total += skipped
        self._next = number + 1
        return Tick(number=number, due=self.due(number), skipped=skipped)

    def wait(self, tick: Tick, sleep: Callable[[float], object]) -> None:
        """Sleep until ``tick`` is due (returns at once if it already is)."""
        delay = tick.due - self.now()
        if delay > 0:
            sleep(delay)
