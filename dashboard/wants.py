"""The web side of "someone looks at PCIe": tell the host's collector, at most every 10 s.

A viewer opening a GPU's "PCIe and link" detail, a polling page with it open, and a
``/metrics`` scrape all end here (:meth:`WantSender.want_pcie`). The message
(:func:`monitoring.worker.wants.want_message`) goes to the collector of that host:

* in this very process when the collector runs inside the server (``manage.py serve``):
  straight to its sampler, through the receiver the embedded publisher attached;
* otherwise on the channel layer, to the host's want channel, which its ``manage.py
  collect`` worker receives from (Redis in production). Sent from the server's event loop
  without waiting when there is one; a send that fails is counted, never raised.

Each (host, GPU) is sent at most every ``RENEW_S``; a want lasts ``WANT_S`` (30 s), so an
open detail or a scrape every 15 s keeps PCIe read on every slow tick, and it stops within
30 s of the last one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from monitoring.worker.wants import RENEW_S, want_channel, want_message

log = logging.getLogger(__name__)


class WantSender:
    """One per web process (the hub's). Any thread."""

    def __init__(self, renew_s: float = RENEW_S) -> None:
        self.renew_s = renew_s
        #: host -> the in-process collector's receiver (``manage.py serve``)
        self.local: dict[str, Callable[[dict[str, Any]], bool]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's loop, when known
        self._last: dict[tuple[str, str | None], float] = {}
        self._lock = threading.Lock()
        self._tasks: set[Any] = set()
        self.sent = 0  # wants handed to a collector (in process or on the channel layer)
        self.failed = 0  # sends the channel layer refused (no Redis, the channel full)

    def attach(self, host: str, receiver: Callable[[dict[str, Any]], bool]) -> None:
        """The collector of ``host`` runs in this process: hand it wants directly."""
        self.local[host] = receiver

    def detach(self, host: str) -> None:
        self.local.pop(host, None)

    def want_pcie(self, host: str, gpu: str | None = None) -> bool:
        """Ask ``host``'s collector for PCIe throughput of GPU ``gpu`` (UUID; None: all).
        False when it was asked less than ``renew_s`` ago (the want still holds)."""
        now = time.monotonic()
        key = (host, gpu)
        with self._lock:
            if now - self._last.get(key, -self.renew_s) < self.renew_s:
                return False
            self._last[key] = now
        message = want_message(gpu)
        local = self.local.get(host)
        if local is not None:
            self.sent += 1
            return bool(local(message))
        self._dispatch(host, message)
        return True

    def _dispatch(self, host: str, message: dict[str, Any]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:  # on the server's loop (the hub, a consumer): do not wait
            task = running.create_task(self.send(host, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        loop = self.loop
        if loop is not None and loop.is_running():  # a view's thread: hand it to the loop
            asyncio.run_coroutine_threadsafe(self.send(host, message), loop)
            return
        from asgiref.sync import async_to_sync

        async_to_sync(self.send)(host, message)  # no server loop (a test client, a script)

    async def send(self, host: str, message: dict[str, Any]) -> None:
        """Put ``message`` on ``host``'s want channel; failures are counted and logged once."""
        from channels.layers import get_channel_layer

        try:
            layer = get_channel_layer()
            if layer is None:
                raise RuntimeError("no channel layer is configured")
            await asyncio.wait_for(layer.send(want_channel(host), message), 1.0)
        except Exception as exc:  # no Redis, no collector draining the channel: drop it
            self.failed += 1
            if self.failed == 1:
                log.warning("could not ask the collector of %s for PCIe figures: %s", host, exc)
            return
        self.sent += 1
