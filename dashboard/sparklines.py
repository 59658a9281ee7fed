"""The last five minutes of a few figures per GPU and for the host, drawn as inline SVG.

Values go into one ring per series as they arrive; a sparkline shows the means of whole
5-second buckets (60 points), aligned to the clock, so it changes once per bucket rather
than every tick: a viewer is sent a new sparkline every five seconds, not every second.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from monitoring.telemetry.schema import Snapshot

WINDOW_S = 300
BUCKET_S = 5
POINTS = WINDOW_S // BUCKET_S
#: The SVG's drawing box, scaled by CSS: two units a bucket, so every point sits on a whole
#: unit and a path step is a few characters (a frame carries each sparkline anew).
STEP = 2
WIDTH, HEIGHT = STEP * (POINTS - 1), 28
VIEWBOX = f"0 0 {WIDTH} {HEIGHT}"

#: (key, label, unit, fixed maximum or None for the series' own, reader) per GPU series.
GPU_SERIES = (
    ("utilization", "utilization", "%", 100.0, lambda g: g.utilization),
    ("memory", "memory used", "%", 100.0, lambda g: g.memory_percent),
    ("temperature", "temperature", "°C", None, lambda g: g.temperature),
    ("power", "power", "W", None, lambda g: g.power_usage),
)
HOST_SERIES = (
    ("cpu", "CPU", "%", 100.0, lambda s: s.cpu_usage),
    ("memory", "memory", "%", 100.0, lambda s: s.memory_usage),
)


@dataclass(slots=True)
class Spark:
    """One drawn sparkline: SVG path data for the line and the filled area, and its words."""

    key: str
    line: str  # "M0 14l2-1 2 0 …": relative steps in whole units
    area: str  # the line, then down to the baseline and back
    label: str  # for aria-label: what, over which window, min / max / last
    empty: bool


class Ring:
    """Whole-bucket means of one series over the window, plus the bucket being filled."""

    __slots__ = ("buckets", "current", "current_n", "current_sum")

    def __init__(self) -> None:
        self.buckets: deque[tuple[int, float]] = deque(maxlen=POINTS)
        self.current: int | None = None
        self.current_sum = 0.0
        self.current_n = 0

    def add(self, bucket: int, value: float | None) -> None:
        if self.current is not None and bucket != self.current:
            if self.current_n:
                self.buckets.append((self.current, self.current_sum / self.current_n))
            self.current_sum, self.current_n = 0.0, 0
        self.current = bucket
        if value is not None:
            self.current_sum += value
            self.current_n += 1

    def values(self, now_bucket: int) -> list[float | None]:
        """One value (or None for a gap) per bucket of the window ending before ``now_bucket``."""
        by_bucket = dict(self.buckets)
        return [by_bucket.get(b) for b in range(now_bucket - POINTS, now_bucket)]


class Recent:
    """The rings of one host: per GPU (by index) and for the host."""

    def __init__(self) -> None:
        self.gpus: dict[int, dict[str, Ring]] = {}
        self.host: dict[str, Ring] = {}
        self.bucket = 0

    def add(self, snapshot: Snapshot) -> None:
        bucket = bucket_of(snapshot.timestamp)
        self.bucket = bucket
        for gpu in snapshot.gpus:
            rings = self.gpus.setdefault(gpu.index, {key: Ring() for key, *_ in GPU_SERIES})
            for key, _label, _unit, _top, read in GPU_SERIES:
                rings[key].add(bucket, _number(read(gpu)))
        if not self.host:
            self.host = {key: Ring() for key, *_ in HOST_SERIES}
        for key, _label, _unit, _top, read in HOST_SERIES:
            self.host[key].add(bucket, _number(read(snapshot.system)))

    def seed(self, rows: Iterable[tuple[int | None, str, datetime, float | None]]) -> None:
        """Fill from stored samples ``(gpu_index or None for the host, key, time, value)``."""
        for index, key, time, value in sorted(rows, key=lambda row: row[2]):
            rings = self.host if index is None else self.gpus.setdefault(index, {})
            ring = rings.setdefault(key, Ring())
            ring.add(bucket_of(time), value)

    def gpu_sparks(self, index: int, name: str) -> list[Spark]:
        rings = self.gpus.get(index, {})
        return [
            draw(rings.get(key), self.bucket, f"GPU {index} {label}", unit, top, key)
            for key, label, unit, top, _read in GPU_SERIES
        ]

    def host_sparks(self) -> list[Spark]:
        return [
            draw(self.host.get(key), self.bucket, f"host {label}", unit, top, key)
            for key, label, unit, top, _read in HOST_SERIES
        ]


def bucket_of(time: datetime) -> int:
    return int(time.timestamp()) // BUCKET_S


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def draw(
    ring: Ring | None, now_bucket: int, what: str, unit: str, top: float | None, key: str
) -> Spark:
    """The SVG points of one ring; a gap (no sample in a bucket) breaks nothing, it is skipped."""
    values = ring.values(now_bucket) if ring is not None else [None] * POINTS
    known = [v for v in values if v is not None]
    if not known:
        return Spark(key, "", "", f"{what}: no data in the last 5 minutes yet", True)
    high = top if top is not None else max(known) * 1.1 or 1.0
    # (x, y) in whole units, y down from the top, a unit of margin above and below
    coords = [
        (n * STEP, round(HEIGHT - 1 - min(max(value, 0.0), high) / high * (HEIGHT - 2)))
        for n, value in enumerate(values)
        if value is not None
    ]
    (x0, y0), steps = coords[0], []
    for (xa, ya), (xb, yb) in pairwise(coords):
        steps.append(f"{xb - xa} {yb - ya}" if yb >= ya else f"{xb - xa}{yb - ya}")
    line = f"M{x0} {y0}" + (f"l{' '.join(steps)}" if steps else "")
    area = f"{line}V{HEIGHT}H{x0}Z"
    label = (
        f"{what} over the last 5 minutes: low {min(known):.0f} {unit}, "
        f"high {max(known):.0f} {unit}, latest {known[-1]:.0f} {unit}"
    )
    return Spark(key, line, area, label, False)
