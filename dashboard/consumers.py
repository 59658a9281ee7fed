"""``/ws/live/?host=NAME``: one browser tab's live page, fed by this process's hub.

The consumer does not join the telemetry group itself: the hub does, once per process
(:mod:`dashboard.hub`), and renders each tick once for every viewer. The consumer only
registers its viewer, sends what the hub hands it, and takes the viewer's pace
(``{"pace": "live" | "2s" | "5s" | "paused"}``, as the page's pace control sends it with the
htmx ws extension) and which GPU's "PCIe and link" detail it opened or closed
(``{"pcie": "<GPU UUID>", "open": true | false}``, sent by live.js; the host's collector then
reads PCIe throughput while it stays open). Anything else a client sends, or a GPU its host
does not have, is ignored and counted: a malformed or oversized message never closes the
socket or reaches the hub.

A host nobody ever reported under gets a clear answer instead of a page waiting forever: the
socket is accepted, then closed with :data:`UNKNOWN_HOST` (4404, an application code a
browser does not retry) and the reason in words. daphne 4.2 sends the code but drops the
reason (``serverClose`` is called without it; django/daphne#374), so the page words it
itself from the code and the host name; a server that passes reasons gives the same words.
A host that reported
before and is silent now is not unknown: its viewers are told it is stale.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from dashboard.hub import PACES, Viewer, get_hub

log = logging.getLogger(__name__)

#: Client messages longer than this are dropped unread (a pace change is ~100 bytes).
MAX_CLIENT_MESSAGE = 4096
#: Close code for a host nobody reports under (4000-4999: the application's own; 404 inside).
UNKNOWN_HOST = 4404
#: A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455, 5.5).
MAX_CLOSE_REASON = 123


class Counters:
    """Per-process counts of what clients sent (read by tests and metrics)."""

    ignored = 0
    oversized = 0
    details = 0  # PCIe details opened or closed


class LiveConsumer(AsyncWebsocketConsumer):
    # The hub listens for the whole process; a consumer needs no channel of its own.
    channel_layer_alias = None

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        host = (query.get("host") or [settings.HOST_NAME])[0][:255]
        pace = (query.get("pace") or ["live"])[0]
        if not await _known(host):
            await self.accept()  # closing before accepting is an HTTP 403 the page cannot read
            await self.close(code=UNKNOWN_HOST, reason=unknown_host_reason(host))
            return
        self.viewer = Viewer(host, self._send_html, pace if pace in PACES else "live")
        await self.accept()
        await get_hub().join(self.viewer)

    async def disconnect(self, code: int) -> None:
        viewer = getattr(self, "viewer", None)
        if viewer is not None:
            get_hub().leave(viewer)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        size = len(text_data or "") + len(bytes_data or b"")
        if size > MAX_CLIENT_MESSAGE:
            Counters.oversized += 1
            return
        try:
            data = json.loads(text_data or (bytes_data or b"").decode("utf-8"))
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
            data = None  # RecursionError: nested deeper than json.loads goes (~1000 levels)
        if not isinstance(data, dict):
            taken = False
        elif "pcie" in data:
            taken = await self._detail(data["pcie"], data.get("open", True))
        else:
            pace = data.get("pace")
            taken = isinstance(pace, str) and await get_hub().set_pace(self.viewer, pace)
        if not taken:
            Counters.ignored += 1

    async def _detail(self, gpu, is_open) -> bool:
        """``{"pcie": "GPU-…", "open": true}``: the viewer opened a GPU's PCIe detail."""
        if not isinstance(gpu, str) or not isinstance(is_open, bool):
            return False
        if not await get_hub().set_detail(self.viewer, gpu, is_open):
            return False
        Counters.details += 1
        return True

    async def _send_html(self, html: str) -> None:
        await self.send(text_data=html)


def unknown_host_reason(host: str) -> str:
    """``No host named 'gpu-7' reports here``, the name shortened to fit a close frame."""
    name = host
    while True:
        reason = f"No host named {name!r} reports here"
        if len(reason.encode("utf-8")) <= MAX_CLOSE_REASON:
            return reason
        name = name[: len(name) - 2] + "…"


@database_sync_to_async
def _known(host: str) -> bool:
    """Whether ``host`` reports here; True when the database cannot say (never turn a
    viewer away for an outage: the page then says the data is stale)."""
    from dashboard.views import is_known

    try:
        return is_known(host)
    except Exception as exc:
        log.info("could not check whether host %r reports here: %s", host[:80], exc)
        return True
