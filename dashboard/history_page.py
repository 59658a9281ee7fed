"""The history page of a host or one of its GPUs: what its query string means and what it shows.

``/history/?host=NAME[&gpu=INDEX_OR_UUID][&range=1h|24h|7d|30d|custom&from=…&to=…][&at=…]``

* ``parse_window`` turns ``range`` / ``from`` / ``to`` / ``at`` into the window to show (pure);
  a bad value is a ``HistoryError`` naming the parameter, shown on the page with a 400.
* ``build_page`` reads what the page charts, in a fixed number of statements whatever the
  range (pinned by the tests): the hosts, the host's GPUs, the series of the GPU or host
  (``monitoring.storage.history.read_series``: one statement for every chart, plus the raw row
  count and the last roll-up buckets), the process sessions in the window, and with
  ``at=`` the sessions open at that moment.

Times are shown and read in the server's ``TIME_ZONE`` (UTC unless set), which the page
names; ``at``, ``from`` and ``to`` are what a ``datetime-local`` input sends
(``2026-11-30T03:00``), an ISO-8601 time with an offset, ``now`` or ``-30m`` / ``-2d``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Q
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from dashboard import charts
from dashboard.api import parse_time
from dashboard.hub import get_hub
from dashboard.present import human_duration, short_command
from dashboard.views import MAX_HOST, default_host
from monitoring.metrics import ALL_METRICS
from monitoring.models import Gpu, Host, ProcessSession
from monitoring.storage.history import (
    RESOLUTION_SECONDS,
    HistoryError,
    Series,
    pick_gpu,
    read_series,
)
from monitoring.storage.registry import MAX_GPU_KEY
from monitoring.telemetry import format as fmt

#: The preset ranges: key -> (span, label on the picker, words in a sentence).
RANGES: dict[str, tuple[timedelta, str, str]] = {
    "1h": (timedelta(hours=1), "1 h", "the last hour"),
    "24h": (timedelta(hours=24), "24 h", "the last 24 hours"),
    "7d": (timedelta(days=7), "7 d", "the last 7 days"),
    "30d": (timedelta(days=30), "30 d", "the last 30 days"),
}
DEFAULT_RANGE = "1h"
CUSTOM = "custom"
MIN_SPAN = timedelta(minutes=1)
#: Points per chart: a 1-hour range at 1 Hz stays on raw samples (7.2 s a point).
POINTS = 500
#: Most sessions drawn and listed (the newest); the page says when there were more.
SESSION_LIMIT = 200
#: Colours of session bars, one per user (by a hash of the name): who is who at a glance.
USER_COLOURS = ("violet", "cyan", "fuchsia", "amber", "emerald", "sky")


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """One chart: its metrics (key, label, colour class) and how its values are shown."""

    key: str
    title: str
    metrics: tuple[tuple[str, str, str], ...]
    kind: str  # charts.scale_for kind: "%", "MiB", "°C", "W", "B/s", ""
    top: str | None = None  # "100", or the Gpu field holding the chart's full scale


GPU_CHARTS = (
    ChartSpec("utilization", "Utilization", (("utilization", "utilization", "violet"),), "%", "100"),
    ChartSpec(
        "memory", "Memory used", (("memory_used_mib", "memory used", "fuchsia"),), "MiB",
        "memory_total_mib",
    ),
    ChartSpec("temperature", "Temperature", (("temperature", "temperature", "orange"),), "°C"),
    ChartSpec("power", "Power", (("power_w", "power", "cyan"),), "W", "power_limit_w"),
)  # fmt: skip
HOST_CHARTS = (
    ChartSpec("cpu", "CPU", (("cpu_percent", "CPU", "violet"),), "%", "100"),
    ChartSpec(
        "memory", "Memory and swap",
        (("ram_percent", "memory", "fuchsia"), ("swap_percent", "swap", "amber")), "%", "100",
    ),
    ChartSpec("load", "Load average", (("load_1", "1 min", "orange"), ("load_15", "15 min", "sky")), ""),
    ChartSpec(
        "network", "Network", (("net_recv", "in", "cyan"), ("net_sent", "out", "emerald")), "B/s"
    ),
    ChartSpec(
        "disk", "Disk", (("disk_read", "read", "sky"), ("disk_write", "write", "fuchsia")), "B/s"
    ),
)  # fmt: skip
RESOLUTION_WORDS = {
    "raw": "raw samples",
    "minute": "1-minute roll-ups",
    "10min": "10-minute roll-ups",
    "hour": "1-hour roll-ups",
}


# -- the window ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The time range shown, and the moment asked about."""

    range: str  # a RANGES key or "custom"
    start: datetime
    end: datetime
    live: bool  # a preset ending now (links keep it ending now)
    at: datetime | None = None
    moved: bool = False  # a preset moved to show ``at``, which lay before it

    @property
    def span(self) -> timedelta:
        return self.end - self.start


def parse_moment(text: str, now: datetime, param: str) -> datetime:
    """A time from the query string; one without an offset is in the server's time zone."""
    text = text.strip()
    if text == "now" or text.startswith("-"):
        return parse_time(text, now, param)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(
            param, f"{param}={text[:40]!r} is not a time like 2026-11-30T03:00 (or 'now', '-2h')"
        ) from None
    if timezone.is_naive(moment):
        try:
            moment = timezone.make_aware(moment, timezone.get_default_timezone())
        except (ValueError, OverflowError):  # a time that does not exist in the zone, or 0001
            raise HistoryError(param, f"{param}={text[:40]!r} is not a time here") from None
    return moment


def max_span() -> timedelta:
    """The longest range worth asking for: as far back as hourly roll-ups are kept."""
    return timedelta(days=settings.RETENTION_HOUR_DAYS)


def parse_window(params: Mapping[str, str], now: datetime) -> Window:
    """The window of ``range`` / ``from`` / ``to`` / ``at``. Pure; raises ``HistoryError``.

    A preset ends now; when ``at`` lies before it, the same span is moved to centre on
    ``at`` (so a link to "who was on GPU 1 at 03:00" shows 03:00). ``from``/``to`` without
    ``range`` mean a custom range; ``to`` defaults to now.
    """
    raw_from, raw_to = params.get("from", "").strip(), params.get("to", "").strip()
    key = params.get("range", "").strip() or (CUSTOM if raw_from or raw_to else DEFAULT_RANGE)
    if key not in RANGES and key != CUSTOM:
        choices = ", ".join([*RANGES, CUSTOM])
        raise HistoryError("range", f"range={key[:20]!r} is not one of: {choices}")
    raw_at = params.get("at", "").strip()
    at = parse_moment(raw_at, now, "at") if raw_at else None
    if key == CUSTOM:
        if not raw_from:
            raise HistoryError("from", "a custom range needs from= (its start)")
        start = parse_moment(raw_from, now, "from")
        end = parse_moment(raw_to, now, "to") if raw_to else now
        if start >= end:
            raise HistoryError("from", "from= must be before to=")
        if end - start < MIN_SPAN:
            raise HistoryError("to", "a custom range must be at least a minute long")
        if end - start > max_span():
            days = max_span().days
            raise HistoryError("from", f"a range can be at most {days} days (history kept)")
        return Window(CUSTOM, start, end, live=False, at=at)
    span = RANGES[key][0]
    if at is not None and at < now - span:
        try:
            start = at - span / 2
        except OverflowError:
            raise HistoryError("at", f"at={raw_at[:40]!r} is too early") from None
        return Window(key, start, min(now, start + span), live=False, at=at, moved=True)
    return Window(key, now - span, now, live=True, at=at)


# -- links --------------------------------------------------------------------------------------


def wall(moment: datetime) -> str:
    """A time as the query string and a datetime-local input take it, in the server's zone."""
    local = _local(moment)
    return local.strftime("%Y-%m-%dT%H:%M:%S" if local.second else "%Y-%m-%dT%H:%M")


@dataclass
class Links:
    """Builds the page's own URLs from its state: one place that knows the query string."""

    host: str
    gpu: str | None
    window: Window

    def base(self, **changes: str | None) -> dict[str, str]:
        params: dict[str, str | None] = {"host": self.host, "gpu": self.gpu}
        if self.window.live:
            params["range"] = self.window.range
        else:
            params.update(
                range=CUSTOM, **{"from": wall(self.window.start), "to": wall(self.window.end)}
            )
        if self.window.at is not None:
            params["at"] = wall(self.window.at)
        params.update(changes)
        return {k: v for k, v in params.items() if v is not None}

    def url(self, **changes: str | None) -> str:
        query = urlencode(self.base(**changes), safe=":")
        return f"{self.path}?{query}"

    @cached_property
    def path(self) -> str:
        return reverse("dashboard:history-page")

    @property
    def url_without_at(self) -> str:
        return self.url(at=None)

    @cached_property
    def _at_prefix(self) -> str:
        return self.url(at=None) + "&at="

    def at(self, moment: datetime) -> str:
        """This page asking who was on it at ``moment`` (hundreds a page: no reverse() each)."""
        return f"{self._at_prefix}{wall(moment)}#at"

    def csv(self, gpu_uuid: str | None, metric: str) -> str:
        params = {"host": self.host, "metric": metric, "points": str(POINTS), "format": "csv"}
        if gpu_uuid:
            params["gpu"] = gpu_uuid
        params["from"] = self.window.start.isoformat()
        params["to"] = self.window.end.isoformat()
        return f"{reverse('dashboard:history')}?{urlencode(params)}"


# -- the page -----------------------------------------------------------------------------------


@dataclass(slots=True)
class GpuChoice:
    label: str
    href: str
    current: bool
    state: str


@dataclass(slots=True)
class RangeChoice:
    key: str
    label: str
    href: str
    current: bool


@dataclass(slots=True)
class SessionRow:
    gpu: str
    pid: str  # a string: the template would localize a number (slowly, for nothing)
    user: str
    short: str
    command: str
    where: str
    since: str
    until: str
    duration: str
    peak: str
    mean: str
    sm: str
    running: bool
    href: str


@dataclass(slots=True)
class AtFigure:
    label: str
    value: str


@dataclass(slots=True)
class Page:
    host: str
    hosts: list[str]
    stored: bool  # the host has rows (a host only heard live has no history yet)
    subject: str  # "GPU 0 · NVIDIA H100 80GB HBM3" or the host name
    gpu: Gpu | None = None
    gpu_key: str | None = None
    gpu_choices: list[GpuChoice] = field(default_factory=list)
    range_choices: list[RangeChoice] = field(default_factory=list)
    window: Window | None = None
    window_text: str = ""
    error: HistoryError | None = None
    charts: list[charts.Chart] = field(default_factory=list)
    x_ticks: list[charts.Tick] = field(default_factory=list)
    resolution: str = ""
    bars: list[charts.Bar] = field(default_factory=list)
    lane_count: int = 0
    lane_columns: list[charts.Column] = field(default_factory=list)
    marker: float | None = None
    sessions: list[SessionRow] = field(default_factory=list)
    sessions_more: bool = False
    sessions_hidden: int = 0
    at_text: str = ""
    at_sessions: list[SessionRow] | None = None
    at_figures: list[AtFigure] = field(default_factory=list)
    earlier: str = ""
    later: str = ""
    now_href: str = ""
    custom_from: str = ""
    custom_to: str = ""
    at_value: str = ""
    tz: str = ""
    links: Links | None = None

    @property
    def lane_height(self) -> float:
        """Height of the session lane in rem (one empty lane when nobody was on a GPU)."""
        return max(self.lane_count, 1) * charts.LANE_REM + charts.LANE_PAD_REM


def _local(moment: datetime) -> datetime:
    """In the server's TIME_ZONE (hundreds of times a page: the default zone is cached)."""
    return moment.astimezone(timezone.get_default_timezone())


def _when(moment: datetime | None) -> str:
    if moment is None:
        return fmt.DASH
    return f"{_local(moment):%Y-%m-%d %H:%M:%S}"


def _resolve_host(hosts: list[Host], name: str | None) -> tuple[str, Host | None]:
    """The host to show and its row (None: known live but nothing stored yet). 404: unknown."""
    names = [h.name for h in hosts]
    if name is None:
        name = default_host(names)
    elif len(name) > MAX_HOST or not name.isprintable():
        raise Http404("No such host.")
    row = next((h for h in hosts if h.name == name), None)
    if row is None and name != settings.HOST_NAME and not get_hub().heard_live(name):
        raise Http404(f"No host named {name[:80]!r} reports to this Hoof Hearted.")
    return name, row


def _host_of_uuid(uuid: str) -> str:
    """The host of the GPU with this UUID (UUIDs are unique across hosts). 404: none."""
    if not uuid.isprintable():  # no UUID has control characters (PostgreSQL refuses NUL)
        raise Http404("No such GPU.")
    found = Gpu.objects.filter(uuid=uuid[:MAX_GPU_KEY]).values_list("host__name", flat=True)
    found = found.first()
    if found is None:
        raise Http404(f"No GPU {uuid[:40]!r} reports to this Hoof Hearted.")
    return found


def _gpu_key(gpus: list[Gpu], gpu: Gpu) -> str:
    """How links name a GPU: its index while that index means it, else its UUID."""
    try:
        if pick_gpu(gpus, str(gpu.index), "") is gpu:
            return str(gpu.index)
    except HistoryError:  # pragma: no cover - the GPU is in the list
        pass
    return gpu.uuid


def running_slack() -> timedelta:
    """How long after its last stored sighting an open session may still be running: its
    running figures are rewritten every SESSION_REFRESH_S of samples, a flush later."""
    return timedelta(
        seconds=settings.SESSION_REFRESH_S
        + settings.FLUSH_INTERVAL_MS / 1000
        + 2 * settings.PROCESS_INTERVAL_MS / 1000
    )


def _session_end(session: ProcessSession, now: datetime) -> tuple[datetime, bool]:
    """Where a session's bar ends, and whether it is still running."""
    if session.open and now - session.last_seen <= running_slack():
        return max(now, session.last_seen), True
    return session.last_seen, False


def _session_row(
    session: ProcessSession, index: dict[int, int], now: datetime, links: Links
) -> SessionRow:
    end, running = _session_end(session, now)
    return SessionRow(
        gpu=f"GPU {index.get(session.gpu_id, '?')}",
        pid=str(session.pid),
        user=session.user or "?",
        short=short_command(session),
        command=session.command or session.name or "",
        where=session.container or "host",
        since=_when(session.first_seen),
        until="running" if running else _when(session.last_seen),
        duration=human_duration((end - session.first_seen).total_seconds()),
        peak=fmt.mib(session.peak_memory_mib),
        mean=fmt.mib(session.mean_memory_mib),
        sm=fmt.percent(session.mean_sm_utilization),
        running=running,
        href=links.at(session.first_seen),
    )


def _colour(user: str) -> str:
    return USER_COLOURS[zlib.crc32(user.encode()) % len(USER_COLOURS)]


def build_page(params: Mapping[str, str], now: datetime | None = None) -> Page:
    """Everything the history page shows. Raises ``Http404`` for an unknown host or GPU;
    a bad range is ``Page.error`` (the view answers 400 with the page and the message)."""
    now = now or timezone.now()
    hosts = list(Host.objects.order_by("name"))
    asked_host = params.get("host", "").strip() or None
    asked_gpu = params.get("gpu", "").strip() or None
    if asked_host is None and asked_gpu is not None and not asked_gpu.isdecimal():
        asked_host = _host_of_uuid(asked_gpu)  # a GPU's UUID names its host too
    host_name, host = _resolve_host(hosts, asked_host)
    gpus = sorted(Gpu.objects.filter(host=host), key=lambda g: (g.index, g.id)) if host else []
    gpu = None
    if asked_gpu is not None:
        try:
            gpu = pick_gpu(gpus, asked_gpu, host_name)
        except HistoryError:
            raise Http404(f"No GPU {asked_gpu[:40]!r} on host {host_name[:80]!r}.") from None
    gpu_key = _gpu_key(gpus, gpu) if gpu else None
    page = Page(
        host=host_name,
        hosts=sorted({h.name for h in hosts} | {host_name}),
        stored=host is not None,
        subject=f"GPU {gpu.index} · {gpu.name}" if gpu else host_name,
        gpu=gpu,
        gpu_key=gpu_key,
        tz=timezone.get_default_timezone_name(),
    )
    try:
        window = parse_window(params, now)
    except HistoryError as error:
        page.error = error
        fallback = Window(DEFAULT_RANGE, now - RANGES[DEFAULT_RANGE][0], now, live=True)
        _choices(page, gpus, Links(host_name, gpu_key, fallback), fallback, now)
        return page
    links = Links(host_name, gpu_key, window)
    page.window, page.links = window, links
    _choices(page, gpus, links, window, now)
    if host is None:
        return page
    axis = charts.TimeAxis(window.start, window.end)
    page.x_ticks = axis.ticks(_local)
    page.marker = axis.percent(window.at) if axis.contains(window.at) else None
    _read_charts(page, host, gpu, axis, links, now)
    _read_sessions(page, gpus, gpu, axis, links, now)
    return page


def _choices(page: Page, gpus: list[Gpu], links: Links, window: Window, now: datetime) -> None:
    """The pickers (range, GPU), the custom form's values and earlier / later / now links."""
    page.range_choices = [
        RangeChoice(key, label, links.url(range=key, **{"from": None, "to": None}),
                    window.live and window.range == key)
        for key, (_span, label, _words) in RANGES.items()
    ]  # fmt: skip
    page.gpu_choices = [
        GpuChoice(page.host, links.url(gpu=None), page.gpu is None, "host"),
        *[
            GpuChoice(
                f"GPU {g.index}" + ("" if g.state == Gpu.STATE_OK else f" ({g.state})"),
                links.url(gpu=_gpu_key(gpus, g)),
                g == page.gpu,
                g.state,
            )
            for g in gpus
        ],
    ]
    page.custom_from = wall(window.start)
    page.custom_to = wall(window.end)
    page.at_value = wall(window.at) if window.at else ""
    if window.live:
        page.window_text = f"{RANGES[window.range][2]}, to {_when(window.end)}"
    else:
        page.window_text = f"{_when(window.start)} to {_when(window.end)}"
        if window.moved:
            page.window_text += f" ({RANGES[window.range][1]} around the moment asked about)"
    span = window.span
    earlier_end = window.start
    page.earlier = links.url(
        range=CUSTOM, at=None, **{"from": wall(earlier_end - span), "to": wall(earlier_end)}
    )
    if window.end < now:
        later_start = window.end
        later_end = later_start + span
        page.later = links.url(
            range=CUSTOM, at=None, **{"from": wall(later_start), "to": wall(later_end)}
        )
    if not window.live:
        page.now_href = links.url(
            range=window.range if window.range in RANGES else DEFAULT_RANGE,
            at=None,
            **{"from": None, "to": None},
        )


@dataclass(frozen=True, slots=True)
class Canvas:
    """What every chart of one page shares: the axis, its links and the data's spacing."""

    axis: charts.TimeAxis
    links: Links
    width_s: float  # one point's bucket
    spacing_s: float  # the source rows' spacing (sample interval or roll-up)
    what: str  # "GPU 0" / "host rig"
    window_text: str
    x_ticks: list[charts.Tick]
    marker: float | None


def _read_charts(
    page: Page, host: Host, gpu: Gpu | None, axis: charts.TimeAxis, links: Links, now: datetime
) -> None:
    specs = GPU_CHARTS if gpu else HOST_CHARTS
    metrics = [key for spec in specs for key, _label, _colour in spec.metrics]
    series = read_series(host, gpu, metrics, axis.start, axis.end, POINTS, now=now)
    first = series[metrics[0]]
    page.resolution = RESOLUTION_WORDS.get(first.resolution, first.resolution)
    canvas = Canvas(
        axis=axis,
        links=links,
        width_s=axis.seconds / POINTS,
        spacing_s=max(settings.POLL_INTERVAL_MS / 1000, RESOLUTION_SECONDS[first.resolution]),
        what=f"GPU {gpu.index}" if gpu else f"host {host.name}",
        window_text=page.window_text,
        x_ticks=page.x_ticks,
        marker=page.marker,
    )
    page.charts = [_chart(spec, series, gpu, canvas) for spec in specs]
    at = page.window.at if page.window else None
    if at is not None and axis.contains(at):
        page.at_figures = _figures_at(specs, series, at, canvas.width_s)


def _full_scale(spec: ChartSpec, gpu: Gpu | None) -> float | None:
    if spec.top == "100":
        return 100.0
    if spec.top and gpu is not None:
        return getattr(gpu, spec.top, None)
    return None


def _chart(spec: ChartSpec, series: dict[str, Series], gpu: Gpu | None, canvas: Canvas):
    """One chart: 0 to the full scale (100 %, the memory, the power limit) or a round top."""
    known = [p for key, _l, _c in spec.metrics for p in series[key].points if p.avg is not None]
    high = max((charts._v(p.max, p.avg) for p in known), default=0.0)
    fixed = _full_scale(spec, gpu)
    least = charts.LEAST_TOP.get(spec.kind, 1.0)
    scale = charts.scale_for(spec.kind, max(high, fixed or 0.0, least))
    if fixed:
        top = max(fixed, high)
        step = charts.nice_top(top / scale.divisor)[1] * scale.divisor
    else:
        wanted = max(high * 1.05, least) / scale.divisor
        top, step = (v * scale.divisor for v in charts.nice_top(wanted))
    lines = []
    for key, label, colour in spec.metrics:
        line = charts.draw_line(
            key, label, f"chart-{colour}", series[key].points, canvas.axis, top,
            canvas.width_s, canvas.spacing_s,
        )  # fmt: skip
        line.csv_url = canvas.links.csv(gpu.uuid if gpu else None, key)
        lines.append(line)
    reference = None
    if fixed and spec.top != "100":  # the board's memory, the power limit: drawn as a line
        word = "limit" if spec.kind == "W" else "total"
        digits = 1 if (fixed / scale.divisor) % 1 else 0  # 79.6 GiB, not 80
        reference = charts.Tick(100.0 - fixed / top * 100, f"{word} {scale.text(fixed, digits)}")
    return charts.Chart(
        key=spec.key,
        reference=reference,
        title=spec.title,
        lines=lines,
        y_ticks=charts.value_ticks(top, step, scale),
        x_ticks=canvas.x_ticks,
        summary=_summary(spec, lines, scale, series, canvas),
        empty=all(not (line.paths or line.dots) for line in lines),
        columns=_columns(spec, series, scale, canvas),
        marker=canvas.marker,
    )


def _summary(spec: ChartSpec, lines, scale: charts.Scale, series, canvas: Canvas) -> str:
    """The chart in words (its aria-label and caption): low, mean, high, latest, gaps."""
    parts = []
    for line in lines:
        if line.mean is None:
            parts.append(f"{line.label}: no data")
            continue
        parts.append(
            f"{line.label}: low {scale.text(line.low)}, mean {scale.text(line.mean)}, "
            f"high {scale.text(line.high)}, latest {scale.text(line.latest)} "
            f"at {_local(line.latest_time):%H:%M}"
        )
    points = series[spec.metrics[0][0]].points
    gaps = charts.gaps_text(points, canvas.axis, canvas.width_s, canvas.spacing_s, _local)
    text = f"{spec.title} of {canvas.what}, {canvas.window_text}: " + "; ".join(parts)
    return f"{text}; {gaps}." if gaps else f"{text}."


def _columns(spec: ChartSpec, series, scale: charts.Scale, canvas: Canvas) -> list[charts.Column]:
    """Each slice of the chart: its figures on hover, and a link to who was on it then."""
    out = []
    cursors = {key: 0 for key, _l, _c in spec.metrics}
    for n, (width, start, middle) in enumerate(canvas.axis.columns()):
        end = start + timedelta(seconds=canvas.axis.seconds * width / 100)
        words = []
        for key, label, _colour in spec.metrics:
            points, i, found = series[key].points, cursors[key], []
            while i < len(points) and points[i].t < end:
                if points[i].avg is not None:
                    found.append(points[i].avg)
                i += 1
            cursors[key] = i
            value = scale.text(sum(found) / len(found)) if found else "no data"
            words.append(f"{label} {value}")
        title = f"{_local(middle):%H:%M} · {', '.join(words)} · who was on {canvas.what} then"
        out.append(charts.Column(n * width, width, canvas.links.at(middle), title))
    return out


def _figures_at(specs, series, at: datetime, width_s: float) -> list[AtFigure]:
    """The figures of the bucket holding ``at``, as the charts show them."""
    out = []
    for spec in specs:
        for key, _label, _colour in spec.metrics:
            point = next(
                (
                    p
                    for p in series[key].points
                    if p.t <= at < p.t + timedelta(seconds=width_s) and p.avg is not None
                ),
                None,
            )
            if point is None:
                continue
            scale = charts.scale_for(spec.kind, point.avg)
            name = ALL_METRICS[key].label  # "GPU utilization", "Load (1 min)", "Network in"
            if not name[:2].isupper():  # "load (1 min)" in a sentence, but "GPU", "CPU"
                name = name[0].lower() + name[1:]
            out.append(AtFigure(name, scale.text(point.avg)))
    return out


def _read_sessions(
    page: Page,
    gpus: list[Gpu],
    gpu: Gpu | None,
    axis: charts.TimeAxis,
    links: Links,
    now: datetime,
) -> None:
    ids = [gpu.id] if gpu else [g.id for g in gpus]
    index = {g.id: g.index for g in gpus}
    window = page.window
    slack = running_slack()
    found = list(
        ProcessSession.objects.filter(
            gpu_id__in=ids, first_seen__lt=axis.end, last_seen__gte=axis.start - slack
        ).order_by("-first_seen", "-id")[: SESSION_LIMIT + 1]
    )
    page.sessions_more = len(found) > SESSION_LIMIT
    found = found[:SESSION_LIMIT][::-1]  # the newest, oldest first
    spans = []
    for session in found:
        end, _running = _session_end(session, now)
        left, right = axis.percent(session.first_seen), axis.percent(end)
        width = max(right - left, charts.MIN_BAR)  # a few seconds' job is still a visible bar
        spans.append((min(left, 100.0 - width), width))
    lanes = charts.lanes(spans)
    for session, (left, width), lane in zip(found, spans, lanes, strict=True):
        row = _session_row(session, index, now, links)
        if lane is None:
            page.sessions_hidden += 1
        else:
            label_parts = [row.user, row.short] + ([row.where] if row.where != "host" else [])
            if gpu is None:
                label_parts.insert(0, row.gpu)
            end, running = _session_end(session, now)
            visible_start = max(session.first_seen, axis.start)
            visible_end = min(end, axis.end)
            middle = visible_start + (visible_end - visible_start) / 2
            page.bars.append(
                charts.Bar(
                    left=left,
                    width=width,
                    lane=lane,
                    label=" · ".join(label_parts),
                    title=(
                        f"{row.gpu} · pid {row.pid} · {row.user} · {row.command or row.short} · "
                        f"{row.where} · {row.since} to {row.until} ({row.duration}) · "
                        f"peak {row.peak}, mean {row.mean}"
                    ),
                    href=links.at(middle),
                    colour=_colour(row.user),
                    open=running,
                    clipped_left=session.first_seen < axis.start,
                    clipped_right=end > axis.end,
                )
            )
        page.sessions.append(row)
    page.sessions.reverse()  # the table: newest first
    page.lane_count = max((bar.lane for bar in page.bars), default=-1) + 1
    what = f"GPU {gpu.index}" if gpu else f"a GPU of {page.host}"
    page.lane_columns = [
        charts.Column(
            left=n * width,
            width=width,
            href=links.at(middle),
            title=f"{_local(middle):%H:%M}: who was on {what} then",
        )
        for n, (width, _start, middle) in enumerate(axis.columns())
    ]
    if window is not None and window.at is not None:
        at = window.at
        page.at_text = f"{_when(at)} {page.tz}"
        opened = ProcessSession.objects.filter(
            Q(last_seen__gte=at) | Q(open=True, last_seen__gte=at - slack),
            gpu_id__in=ids,
            first_seen__lte=at,
        ).order_by("gpu_id", "first_seen")[:SESSION_LIMIT]
        page.at_sessions = [_session_row(s, index, now, links) for s in opened]
