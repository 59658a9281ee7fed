"""A tick's page, cut into fragments by element id: rendered once, sent as far as it changed.

Each fragment is one small template under ``templates/dashboard/fragments/`` whose root
element carries the id it replaces (and ``hx-swap-oob``, so htmx swaps it by id whether it
arrives over the WebSocket or in a polling response). The page's first render places the
very same fragment HTML (:attr:`Frame.body`), so each card's markup exists once.

A viewer is sent only the fragments whose hash differs from what it was last sent
(:func:`changes`); when the layout itself changed (a GPU appeared, a host was added) it is
sent the whole body instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.template.loader import get_template
from django.utils.safestring import SafeString, mark_safe

from dashboard.health import freshness
from dashboard.present import View
from dashboard.sparklines import VIEWBOX, Recent

BODY_ID = "live-body"


def _template(name: str):
    return get_template(f"dashboard/fragments/{name}.html")


@dataclass(slots=True)
class Status:
    """How fresh the figures are, as the status fragment says it."""

    state: str  # live | stale | waiting
    text: str
    age_s: float | None = None
    #: the figures were read from the database: this process hears no live feed of the host
    #: (its collector publishes on another channel layer, or Redis is away)
    stored: bool = False

    @property
    def shown(self) -> tuple:
        """What the fragment says (the age only through ``text``): equal ones render alike."""
        return (self.state, self.text, self.stored)


@dataclass(slots=True)
class HostSummary:
    """One line of the several-hosts overview."""

    name: str
    gpus: int
    busy: int
    hottest: str
    age: str
    stale: bool
    current: bool = False
    #: the newest sample's age in whole seconds: the page counts on from it while cut off
    age_s: int = 0


@dataclass
class Frame:
    """One host's page at one moment: fragment id -> HTML, with hashes to compare."""

    host: str
    version: int
    timestamp: datetime | None
    layout: tuple
    fragments: dict[str, str]
    parts: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def hashes(self) -> dict[str, int]:
        return {fid: hash(html) for fid, html in self.fragments.items()}

    @cached_property
    def body(self) -> SafeString:
        """The whole live area, as the first page load and a layout change show it."""
        return mark_safe(
            _template("body").render({"body_id": BODY_ID, "f": self.fragments, **self.parts})
        )


def _render(name: str, context: dict[str, Any]) -> str:
    return _template(name).render(context)


def _render_memo(
    memo: dict | None, fid: str, name: str, context: dict[str, Any], key: Any = None
) -> str:
    """``_render``, or the fragment's HTML of the last tick when what it shows is equal.

    ``key`` is what the template reads (the whole ``context`` when None); the view is made of
    plain dataclasses of display strings, so equal keys render alike. Most of a tick's
    fragments do not change, and rendering them is most of what a tick costs the server."""
    if memo is None:
        return _render(name, context)
    key = (name, context if key is None else key)
    last = memo.get(fid)
    if last is not None and last[0] == key:
        return last[1]
    html = _render(name, context)
    memo[fid] = (key, html)
    return html


def render_frame(
    view: View | None,
    recent: Recent | None,
    *,
    host: str,
    version: int,
    status: Status,
    alerts: list[dict[str, Any]],
    hosts: list[HostSummary],
    memo: dict | None = None,
) -> Frame:
    """Every fragment of one host's page (``view`` None: nothing sampled yet). ``memo``, kept
    by the caller per host between ticks, spares re-rendering fragments whose inputs are equal.
    """
    fragments: dict[str, str] = {}

    def render(name: str, context: dict[str, Any], fid: str | None = None, key=None) -> str:
        return _render_memo(memo, fid or name, name, context, key)

    fragments["data-status"] = frag_status(status, view)
    fragments["hosts"] = render("hosts", _hosts_context(hosts))
    # the hub updates its alert rows in place (an alert closing): compare a copy of them
    alert_key = [tuple(row.items()) for row in alerts]
    fragments["alerts"] = render("alerts", {"alerts": alerts}, key=alert_key)
    gpu_ids: list[dict[str, Any]] = []
    if view is not None:
        # the keys below are what each template reads of the view (see _render_memo)
        fragments["banner"] = render("banner", {"view": view}, key=view.banner)
        for card in view.gpus:
            i = card.index
            sparks = recent.gpu_sparks(i, card.name) if recent else []
            ids = {
                "index": i,
                "head": f"gpu-{i}-head",
                "figures": [f"gpu-{i}-{key}" for key in FIGURES],
                "spark": f"gpu-{i}-spark",
                "procs": f"gpu-{i}-procs",
                "pcie": f"gpu-{i}-pcie",
                "uuid": card.uuid,
            }
            fragments[ids["head"]] = render("gpu_head", {"card": card}, ids["head"])
            for key, fid in zip(FIGURES, ids["figures"], strict=True):
                fragments[fid] = render(
                    "figure", {"fid": fid, "fig": getattr(card, FIGURES[key])}, fid
                )
            fragments[ids["spark"]] = render(
                "sparks",
                {"fid": ids["spark"], "sparks": sparks, "what": f"GPU {i}", "viewbox": VIEWBOX},
                ids["spark"],
            )
            fragments[ids["procs"]] = render("gpu_procs", {"card": card}, ids["procs"])
            fragments[ids["pcie"]] = render(
                "gpu_pcie", {"fid": ids["pcie"], "pcie": card.pcie}, ids["pcie"]
            )
            # the nvidia-smi-style table: a figure that changed sends one cell, not the table
            ids["name"] = card.name
            ids["smi"] = {key: f"smi-{i}-{key}" for key in SMI_CELLS}
            for key, fid in ids["smi"].items():
                fragments[fid] = render(
                    "smi_cell", {"fid": fid, "value": SMI_CELLS[key](card)}, fid
                )
            gpu_ids.append(ids)
        fragments["smi-procs"] = render("smi_procs", {"view": view}, key=view.processes)
        fragments["users"] = render("users", {"view": view}, key=view.users)
        host_sparks = recent.host_sparks() if recent else []
        # each host figure its own fragment, as the GPU's: a steady tick sends what moved
        for fid, (label, value) in HOST_FIGURES.items():
            fig = value(view.system)
            if isinstance(fig, list):
                context = {"fid": fid, "label": label, "lines": fig}
                fragments[fid] = render("host_stat", context, fid)
            else:
                fragments[fid] = render("figure", {"fid": fid, "fig": fig}, fid)
        fragments["host-spark"] = render(
            "sparks",
            {"fid": "host-spark", "sparks": host_sparks, "what": "host", "viewbox": VIEWBOX},
            "host-spark",
        )
        system = view.system
        fragments["host-cores"] = render(
            "host_cores", {"host": system}, key=(system.cpu_model, system.per_core)
        )
        fragments["host-sensors"] = render(
            "host_sensors", {"host": system}, key=(system.disks, system.temperatures)
        )
        fragments["host-top"] = render("host_top", {"host": system}, key=system.top)
    layout = (
        view is not None,
        tuple(ids["index"] for ids in gpu_ids),
        len(hosts) > 1,
    )
    return Frame(
        host=host,
        version=version,
        timestamp=view.timestamp if view else None,
        layout=layout,
        fragments=fragments,
        parts={"gpus": gpu_ids, "view": view, "host": host, "host_figures": list(HOST_FIGURES)},
    )


#: Per-GPU figure fragments: id suffix -> GpuCard attribute.
FIGURES = {
    "util": "utilization",
    "mem": "memory",
    "temp": "temperature",
    "power": "power",
    "fan": "fan",
    "sm": "clocks",
    "memclk": "memory_clock",
    "codec": "codec",
}


#: The host's figures: fragment id -> (label for a figure of lines, or None for a Figure; what
#: of the HostView it shows).
HOST_FIGURES = {
    "host-cpu": (None, lambda h: h.cpu),
    "host-mem": (None, lambda h: h.memory),
    "host-swap": (None, lambda h: h.swap),
    "host-load": (None, lambda h: h.load),
    "host-disk": ("Disk", lambda h: [f"read {h.disk_read}", f"write {h.disk_write}"]),
    "host-net": ("Network", lambda h: [f"in {h.net_recv}", f"out {h.net_sent}"]),
    "host-loadavg": ("Load 1 · 5 · 15", lambda h: [h.load_values]),
    "host-uptime": ("Uptime", lambda h: [h.uptime]),
}


#: The nvidia-smi-style table's cells per GPU: id suffix -> the words, from a GpuCard.
SMI_CELLS = {
    "util": lambda card: card.utilization.value,
    "mem": lambda card: f"{card.memory.value} / {card.memory.detail[3:]}",
    "temp": lambda card: card.temperature.value,
    "power": lambda card: card.power.value,
    "perf": lambda card: card.pstate,
}


def restatus(frame: Frame, status: Status, version: int) -> Frame:
    """The same frame with a new status fragment (the collector went quiet, or came back)."""
    fragments = dict(frame.fragments)
    fragments["data-status"] = frag_status(status, frame.parts.get("view"))
    return Frame(frame.host, version, frame.timestamp, frame.layout, fragments, frame.parts)


def frag_status(status: Status, view: View | None) -> str:
    """The status fragment: rendered every tick (it carries the sample's time)."""
    return _render("status", {"status": status, "view": view})


def with_hosts(frame: Frame, hosts: list[HostSummary], version: int) -> Frame:
    """The same frame with a new several-hosts overview."""
    fragments = dict(frame.fragments)
    fragments["hosts"] = frag_hosts(hosts)
    layout = (*frame.layout[:2], len(hosts) > 1)
    return Frame(frame.host, version, frame.timestamp, layout, fragments, frame.parts)


def _hosts_context(hosts: list[HostSummary]) -> dict[str, Any]:
    """The several-hosts overview shows nothing for one host."""
    return {"hosts": hosts if len(hosts) > 1 else []}


def frag_hosts(hosts: list[HostSummary]) -> str:
    """The several-hosts overview: re-rendered with the status, as it dates each host too."""
    return _render("hosts", _hosts_context(hosts))


def changes(frame: Frame, sent: dict[str, int], sent_layout: tuple | None) -> str:
    """The HTML to send a viewer who was last sent ``sent`` (id -> hash): changed fragments
    only, or the whole body when the layout differs. Empty: nothing changed."""
    if sent_layout != frame.layout:
        return str(frame.body)
    hashes = frame.hashes
    return "".join(html for fid, html in frame.fragments.items() if sent.get(fid) != hashes[fid])


def age_text(seconds: float) -> str:
    """``'2 min ago'``, ``'40 s ago'``, ``'3 h ago'``."""
    from dashboard.present import human_duration

    return f"{human_duration(seconds)} ago"


def status_for(
    timestamp: datetime | None,
    stale_after_s: float,
    now: datetime | None = None,
    stored: bool = False,
) -> Status:
    """Live while the newest sample is younger than ``stale_after_s``; said plainly after
    (:func:`dashboard.health.freshness`, as ``/api/health`` says it). ``stored``: the sample
    was read from the database, not heard live."""
    if timestamp is None:
        return Status("waiting", "waiting for the first sample from the collector")
    fresh = freshness(timestamp, now or datetime.now(UTC), stale_after_s)
    if not fresh.stale:
        return Status("live", "live", fresh.age_s, stored)
    return Status(
        "stale",
        f"collector not running: last sample {age_text(fresh.age_s)}, "
        f"at {timestamp:%Y-%m-%d %H:%M:%S} UTC",
        fresh.age_s,
        stored,
    )
