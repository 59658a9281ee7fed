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

from dashboard.present import View
from dashboard.sparklines import Recent

BODY_ID = "live-body"


def _template(name: str):
    return get_template(f"dashboard/fragments/{name}.html")


@dataclass(slots=True)
class Status:
    """How fresh the figures are, as the status fragment says it."""

    state: str  # live | stale | waiting
    text: str
    age_s: float | None = None


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


def render_frame(
    view: View | None,
    recent: Recent | None,
    *,
    host: str,
    version: int,
    status: Status,
    alerts: list[dict[str, Any]],
    hosts: list[HostSummary],
) -> Frame:
    """Every fragment of one host's page (``view`` None: nothing sampled yet)."""
    fragments: dict[str, str] = {}
    fragments["data-status"] = _render("status", {"status": status, "view": view})
    fragments["hosts"] = _render("hosts", {"hosts": hosts if len(hosts) > 1 else []})
    fragments["alerts"] = _render("alerts", {"alerts": alerts})
    gpu_ids: list[dict[str, Any]] = []
    if view is not None:
        fragments["banner"] = _render("banner", {"view": view})
        for card in view.gpus:
            i = card.index
            sparks = recent.gpu_sparks(i, card.name) if recent else []
            ids = {
                "index": i,
                "head": f"gpu-{i}-head",
                "figures": [f"gpu-{i}-{key}" for key in FIGURES],
                "spark": f"gpu-{i}-spark",
                "procs": f"gpu-{i}-procs",
            }
            fragments[ids["head"]] = _render("gpu_head", {"card": card})
            for key, fid in zip(FIGURES, ids["figures"], strict=True):
                fragments[fid] = _render(
                    "figure", {"fid": fid, "fig": getattr(card, FIGURES[key]), "card": card}
                )
            fragments[ids["spark"]] = _render(
                "sparks", {"fid": ids["spark"], "sparks": sparks, "what": f"GPU {i}"}
            )
            fragments[ids["procs"]] = _render("gpu_procs", {"card": card})
            gpu_ids.append(ids)
        fragments["smi"] = _render("smi", {"view": view})
        fragments["users"] = _render("users", {"view": view})
        host_sparks = recent.host_sparks() if recent else []
        fragments["host-figures"] = _render("host_figures", {"host": view.system})
        fragments["host-spark"] = _render(
            "sparks", {"fid": "host-spark", "sparks": host_sparks, "what": "host"}
        )
        fragments["host-cores"] = _render("host_cores", {"host": view.system})
        fragments["host-sensors"] = _render("host_sensors", {"host": view.system})
        fragments["host-top"] = _render("host_top", {"host": view.system})
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
        parts={"gpus": gpu_ids, "view": view, "host": host},
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


def restatus(frame: Frame, status: Status, version: int) -> Frame:
    """The same frame with a new status fragment (the collector went quiet, or came back)."""
    fragments = dict(frame.fragments)
    view = frame.parts.get("view")
    fragments["data-status"] = _render("status", {"status": status, "view": view})
    return Frame(frame.host, version, frame.timestamp, frame.layout, fragments, frame.parts)


def with_hosts(frame: Frame, hosts: list[HostSummary], version: int) -> Frame:
    """The same frame with a new several-hosts overview."""
    fragments = dict(frame.fragments)
    fragments["hosts"] = _render("hosts", {"hosts": hosts if len(hosts) > 1 else []})
    layout = (*frame.layout[:2], len(hosts) > 1)
    return Frame(frame.host, version, frame.timestamp, layout, fragments, frame.parts)


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
    timestamp: datetime | None, stale_after_s: float, now: datetime | None = None
) -> Status:
    """Live while the newest sample is younger than ``stale_after_s``; said plainly after."""
    if timestamp is None:
        return Status("waiting", "waiting for the first sample from the collector")
    now = now or datetime.now(UTC)
    age = max(0.0, (now - timestamp).total_seconds())
    if age <= stale_after_s:
        return Status("live", "live", age)
    return Status(
        "stale",
        f"collector not running: last sample {age_text(age)}, at {timestamp:%Y-%m-%d %H:%M:%S} UTC",
        age,
    )
