"""History charts and the process-session lane, laid out on the server: pure geometry.

WHY on the server: the page stays hypermedia (no chart library, no JSON round trip), and
the same numbers give the SVG, its text summary and its tooltips. Each chart is an SVG of
``WIDTH`` by ``HEIGHT`` user units stretched over its box (``preserveAspectRatio="none"``,
strokes not scaled); axis labels are HTML placed in percent of the box, so they stay crisp
and readable from a phone to a wide screen. Where there is no data the line stops: a run of
empty buckets longer than the data's own spacing is a gap, never a line across it.

No Django, no database: :mod:`dashboard.history_page` feeds these from ``read_series``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from monitoring.storage.history import Point
from monitoring.telemetry import format as fmt

#: The SVG's drawing box (user units); the element is scaled by CSS.
WIDTH, HEIGHT = 1000.0, 200.0
#: Clickable columns over each chart and the session lane (each links to ``?at=``).
COLUMNS = 60
#: Time tick steps (seconds), finest first; the first that gives at most MAX_TICKS is used.
TIME_STEPS = (
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 345600, 604800,
)  # fmt: skip
MAX_TICKS = 7
#: Most lanes (rows) of session bars; sessions beyond are only in the table.
MAX_LANES = 10
#: Narrowest session bar, in percent of the width.
MIN_BAR = 0.4
#: Height of one lane and the padding above the first, in rem.
LANE_REM, LANE_PAD_REM = 1.75, 0.25


# -- time axis ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float  # percent of the width (x) or of the height from the top (y)
    label: str
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class TimeAxis:
    """The shared x axis of one page: the window and where a time falls on it."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def x(self, time: datetime) -> float:
        """Position in drawing units (0..WIDTH), not clamped."""
        return (time - self.start).total_seconds() / self.seconds * WIDTH

    def percent(self, time: datetime) -> float:
        """Position in percent of the width, clamped to 0..100."""
        return max(0.0, min(100.0, self.x(time) / WIDTH * 100))

    def contains(self, time: datetime | None) -> bool:
        return time is not None and self.start <= time <= self.end

    def ticks(self, local: Callable[[datetime], datetime]) -> list[Tick]:
        """Round times (in the viewer's zone, ``local``) across the window, labelled."""
        step = next((s for s in TIME_STEPS if self.seconds / s <= MAX_TICKS), TIME_STEPS[-1])
        first = local(self.start)
        # Round up to a multiple of the step in local time (days start at local midnight).
        wall = (first.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()
        at = first + timedelta(seconds=math.ceil(wall / step) * step - wall)
        ticks = []
        while at <= self.end:
            ticks.append(Tick(self.percent(at), time_label(local(at), step, self.seconds), at))
            at += timedelta(seconds=step)
        return ticks

    def columns(self, count: int = COLUMNS) -> list[tuple[float, datetime, datetime]]:
        """``count`` equal slices of the window: (width percent, start, middle)."""
        width = self.seconds / count
        return [
            (
                100.0 / count,
                self.start + timedelta(seconds=n * width),
                self.start + timedelta(seconds=(n + 0.5) * width),
            )
            for n in range(count)
        ]


def time_label(time: datetime, step: float, span: float) -> str:
    """``'03:00'``; ``'30 Nov'`` for day steps; ``'30 Nov 06:00'`` across days."""
    if step >= 86400:
        return f"{time.day} {time:%b}"
    if span > 86400:
        return f"{time.day} {time:%b} {time:%H:%M}"
    return f"{time:%H:%M}"


# -- value axis ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scale:
    """How a chart's values are shown: divided by ``divisor`` and written with ``unit``."""

    unit: str
    divisor: float = 1.0
    digits: int = 0

    def text(self, value: float | None, digits: int | None = None) -> str:
        """The value in this scale's unit; ``digits`` fixed (axis labels) or as it needs."""
        if value is None:
            return fmt.DASH
        shown = value / self.divisor
        if digits is None:
            digits = self.digits if abs(shown) < 10 and shown != int(shown) else 0
        return f"{shown:.{digits}f} {self.unit}".rstrip()


#: The least full scale of a chart per kind of figure, so an idle network reads
#: "0 to 1 KiB/s", not a scale of fractions of a byte.
LEAST_TOP = {"B/s": 1024.0, "MiB": 1024.0, "": 1.0, "°C": 10.0, "W": 10.0, "%": 1.0}


def scale_for(kind: str, high: float) -> Scale:
    """The display scale of a kind of figure for values up to ``high``.

    ``kind``: ``'%'``, ``'°C'``, ``'W'``, ``'MiB'`` (GiB from 1 GiB), ``'B/s'`` (KiB/s, MiB/s,
    GiB/s as the values grow) or ``''`` (a plain number such as the load average).
    """
    if kind == "MiB":
        return Scale("GiB", 1024.0, 1) if high >= 1024 else Scale("MiB")
    if kind == "B/s":
        for power, unit in ((3, "GiB/s"), (2, "MiB/s"), (1, "KiB/s")):
            if high >= 1024**power:
                return Scale(unit, 1024.0**power, 1)
        return Scale("B/s")
    if kind == "":
        return Scale("", 1.0, 2)
    return Scale(kind)


def nice_top(high: float) -> tuple[float, float]:
    """A round top at or above ``high`` and the step between 3 to 6 ticks below it."""
    if high <= 0:
        return 1.0, 0.25
    magnitude = 10 ** math.floor(math.log10(high))
    for factor in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0):
        step = factor * magnitude
        if high / step <= 5:
            return math.ceil(high / step - 1e-9) * step, step
    return 10 * magnitude, 2 * magnitude  # pragma: no cover - the loop always returns


# -- series -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Line:
    """One series of a chart, drawn: its runs of points (each run a polyline) and words."""

    key: str
    label: str
    colour: str  # a chart-* class of app.css
    paths: list[str]  # SVG path data of the mean, one subpath per run
    bands: list[str]  # polygons of min..max, one per run of two or more points
    dots: list[str]  # single-point runs, as path data of a dot
    low: float | None
    mean: float | None
    high: float | None
    latest: float | None
    latest_time: datetime | None
    csv_url: str = ""


@dataclass(slots=True)
class Column:
    """A clickable slice of a chart: where it links and what it says on hover."""

    left: float
    width: float
    href: str
    title: str


@dataclass(slots=True)
class Chart:
    key: str
    title: str
    lines: list[Line]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    summary: str  # for aria-label and the caption: what, low / mean / high / latest, gaps
    empty: bool
    columns: list[Column] = field(default_factory=list)
    marker: float | None = None  # percent of the width of ``?at=``
    reference: Tick | None = None  # a level worth a line: the power limit, the memory


def runs(points: Sequence[Point], width_s: float, spacing_s: float) -> list[list[Point]]:
    """Split points into runs: a gap is more than the data's spacing without a point.

    ``width_s`` is the bucket width; ``spacing_s`` the spacing of the source rows (the
    sample interval or the roll-up resolution), so a 1-hour range read from minute roll-ups
    is one run although most of its 7-second buckets are empty.
    """
    allowed = max(2 * width_s, 1.5 * spacing_s + width_s)
    out: list[list[Point]] = []
    for point in points:
        if point.avg is None:
            if out and out[-1]:
                out.append([])
            continue
        if out and out[-1] and (point.t - out[-1][-1].t).total_seconds() <= allowed:
            out[-1].append(point)
        else:
            out.append([point])
    return [run for run in out if run]


def draw_line(
    key: str,
    label: str,
    colour: str,
    points: Sequence[Point],
    axis: TimeAxis,
    top: float,
    width_s: float,
    spacing_s: float,
) -> Line:
    """The SVG of one series on ``axis`` with values 0..``top`` (drawn at bucket middles)."""
    half = timedelta(seconds=width_s / 2)

    def y(value: float) -> float:
        return HEIGHT - min(max(value, 0.0), top) / top * HEIGHT

    paths, bands, dots = [], [], []
    for run in runs(points, width_s, spacing_s):
        xs = [axis.x(p.t + half) for p in run]  # 1000 units: whole ones are ~1 px
        if len(run) == 1:
            dots.append(f"M{xs[0]:.0f} {y(run[0].avg):.1f}h0.1")
            continue
        paths.append(
            "M" + " L".join(f"{x:.0f} {y(p.avg):.1f}" for x, p in zip(xs, run, strict=True))
        )
        if any(_v(p.min, p.avg) != _v(p.max, p.avg) for p in run):  # else the band is the line
            upper = [f"{x:.0f},{y(_v(p.max, p.avg)):.1f}" for x, p in zip(xs, run, strict=True)]
            lower = [f"{x:.0f},{y(_v(p.min, p.avg)):.1f}" for x, p in zip(xs, run, strict=True)]
            bands.append(" ".join(upper + lower[::-1]))
    known = [p for p in points if p.avg is not None]
    return Line(
        key=key,
        label=label,
        colour=colour,
        paths=paths,
        bands=bands,
        dots=dots,
        low=min((_v(p.min, p.avg) for p in known), default=None),
        mean=sum(p.avg for p in known) / len(known) if known else None,
        high=max((_v(p.max, p.avg) for p in known), default=None),
        latest=known[-1].avg if known else None,
        latest_time=known[-1].t if known else None,
    )


def _v(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def value_ticks(top: float, step: float, scale: Scale) -> list[Tick]:
    """Ticks from 0 every ``step`` up to ``top`` (raw units), labelled with the digits the
    step needs (0.25 GiB steps: two; 20 GiB: none), so no two labels read the same."""
    shown = step / scale.divisor
    digits = next((d for d in range(4) if abs(round(shown, d) - shown) < 1e-9), 3)
    ticks, n = [], 0
    while n * step <= top * (1 + 1e-9):
        value = n * step
        ticks.append(Tick(100.0 - value / top * 100.0, scale.text(value, digits)))
        n += 1
    return ticks


def gaps_text(
    points: Sequence[Point], axis: TimeAxis, width_s: float, spacing_s: float, local
) -> str:
    """``'no data 02:10 to 02:25'`` for the largest gaps in the window (``'29 Nov 19:30 to 30 Nov
    19:13'`` over a day or across midnight; at most three; gaps
    under a minute are drawn but not worth words, such as the seconds before the newest
    sample of a range ending now)."""
    found = [p for p in points if p.avg is not None]
    if not found:
        return ""
    allowed = max(2 * width_s, 1.5 * spacing_s + width_s)
    holes: list[tuple[datetime, datetime]] = []
    edges = [axis.start - timedelta(seconds=width_s), *[p.t for p in found]]
    ends = [*[p.t for p in found], axis.end]
    for before, after in zip(edges, ends, strict=True):
        if (after - before).total_seconds() > max(allowed, 60 + width_s):
            holes.append((before + timedelta(seconds=width_s), after))
    holes.sort(key=lambda h: h[1] - h[0], reverse=True)
    if not holes:
        return ""
    shown = [(local(a), local(b)) for a, b in sorted(holes[:3])]
    # over a day, or across midnight, a bare "19:30 to 19:13" would read backwards
    dated = (axis.end - axis.start).total_seconds() >= 86400 or any(
        a.date() != b.date() for a, b in shown
    )
    when = (lambda t: f"{t.day} {t:%b %H:%M}") if dated else (lambda t: f"{t:%H:%M}")
    words = [f"{when(a)} to {when(b)}" for a, b in shown]
    more = f" and {len(holes) - 3} more" if len(holes) > 3 else ""
    return "no data " + ", ".join(words) + more


# -- process sessions ---------------------------------------------------------------------------


@dataclass(slots=True)
class Bar:
    """One process session on the lane: where it sits and what it says."""

    left: float
    width: float
    lane: int
    label: str
    title: str
    href: str
    colour: str
    open: bool
    clipped_left: bool
    clipped_right: bool

    @property
    def narrow(self) -> bool:
        """Too narrow for its words on a phone: they are in its tooltip and for readers."""
        return self.width < 3.0

    @property
    def top(self) -> float:
        """Distance from the top of the lane box, in rem."""
        return self.lane * LANE_REM + LANE_PAD_REM


def lanes(
    spans: Sequence[tuple[float, float]], max_lanes: int = MAX_LANES, gap: float = 0.5
) -> list[int | None]:
    """Lane of each span (left %, width %), the first whose last bar ends ``gap`` before it;
    None when all ``max_lanes`` are taken there. Spans in order of their left edge."""
    ends: list[float] = []
    out: list[int | None] = []
    for left, width in spans:
        for lane, end in enumerate(ends):
            if end + gap <= left:
                ends[lane] = left + width
                out.append(lane)
                break
        else:
            if len(ends) < max_lanes:
                ends.append(left + width)
                out.append(len(ends) - 1)
            else:
                out.append(None)
    return out
