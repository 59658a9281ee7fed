"""What the dashboard asks of a host's collector: "someone looks at this GPU's PCIe".

PCIe throughput costs ~20 ms of driver time per direction where the driver has no byte
counters, so the collector reads it only every ``HOOFHEARTED_PCIE_INTERVAL_MS`` (5 min) unless
someone looks at it: a viewer with a GPU's "PCIe and link" detail open, or a ``/metrics``
scrape. The web process says so with a small message on the channel layer, sent to a
channel named after the host (:func:`want_channel`); the host's ``collect`` worker receives
from that channel on a thread of its own (never the sampling thread) and moves a
deadline in its sampler (:meth:`Sampler.want_pcie`): the next slow ticks read PCIe.
The worker receives with a :class:`WantListener` (its own thread and layer instance).

A want lasts ``WANT_S`` (30 s) and the web side renews it at most every ``RENEW_S`` per GPU
while the detail stays open (a /metrics scrape every 15 s keeps it on). Messages are
ephemeral: one to a worker that is not running waits in Redis until the channel's expiry
(channels-redis: 60 s), then is gone.

Message (``WANT_TYPE``): ``{"type": "telemetry.want", "what": "pcie", "gpu": UUID | None,
"seconds": float}``; ``gpu`` None means every GPU of the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import threading
from typing import Any

from django.conf import settings

from monitoring.telemetry.backoff import Backoff
from monitoring.worker.collaborators import PcieWanter

log = logging.getLogger(__name__)

WANT_TYPE = "telemetry.want"
#: How long one request keeps PCIe read on every slow tick.
WANT_S = 30.0
#: The longest a message may ask for (a bad or hostile message cannot switch it on for good).
MAX_WANT_S = 120.0
#: The web side sends one message per (host, GPU) at most this often.
RENEW_S = 10.0
#: Channel names: ASCII letters, digits, ``-_.``; under 100 characters (Channels' rule).
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,40}")
#: GPU UUIDs are ``GPU-`` and 36 characters (``MIG-...`` a little longer): anything longer is not one.
MAX_UUID = 96


def want_channel(host: str) -> str:
    """The channel ``host``'s collector receives wants on (host names that are not a valid
    channel name part are hashed)."""
    part = host if _SAFE.fullmatch(host) else hashlib.sha1(host.encode()).hexdigest()[:20]
    return f"{settings.TELEMETRY_GROUP}.wants.{part}"[:99]


def want_message(gpu: str | None = None, seconds: float = WANT_S) -> dict[str, Any]:
    """Ask for PCIe throughput of the GPU with UUID ``gpu`` (None: all) for ``seconds``."""
    return {"type": WANT_TYPE, "what": "pcie", "gpu": gpu, "seconds": float(seconds)}


class WantError(ValueError):
    """A want message that cannot be applied (it is logged and dropped)."""


def parse_want(message: Any) -> tuple[str | None, float]:
    """(gpu UUID or None, seconds) of a want message; raises :class:`WantError`."""
    if not isinstance(message, dict) or message.get("type") != WANT_TYPE:
        raise WantError("not a want message")
    if message.get("what") != "pcie":
        raise WantError(f"unknown want {message.get('what')!r}")
    gpu = message.get("gpu")
    if gpu is not None and (not isinstance(gpu, str) or not 0 < len(gpu) <= MAX_UUID):
        raise WantError("gpu is not a GPU UUID")
    seconds = message.get("seconds", WANT_S)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise WantError(f"seconds must be a positive number, not {seconds!r}")
    return gpu, min(float(seconds), MAX_WANT_S)


class WantReceiver:
    """Applies want messages to a sampler, counting what it applied and what it dropped."""

    def __init__(self, sampler: PcieWanter) -> None:
        self.sampler = sampler
        self.applied = 0
        self.unknown = 0  # a GPU this host does not have
        self.malformed = 0

    def __call__(self, message: Any) -> bool:
        try:
            gpu, seconds = parse_want(message)
        except WantError as exc:
            self.malformed += 1
            log.debug("ignored a want message: %s", exc)
            return False
        if self.sampler.want_pcie(seconds, gpu=gpu):
            self.applied += 1
            return True
        self.unknown += 1
        return False


class WantListener:
    """Receives want messages from ``channel`` on a thread and loop of its own, with a layer
    instance of its own, and hands each to ``receiver``.

    Apart from the publisher on purpose: a receive blocks a Redis connection in BZPOPMIN for
    seconds at a time, and sharing the publisher's layer kept live updates from coming back
    after a Redis outage. A layer that fails is retried, backing off up to 30 s.
    """

    def __init__(
        self, channel: str, receiver: Any, *, layer_alias: str = "default", layer: Any = None
    ) -> None:
        self.channel = channel
        self.receiver = receiver
        self.layer_alias = layer_alias
        self.layer = layer  # None: a new instance of the configured layer, on this loop
        self.failures = 0
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="hoofhearted-wants", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._receive())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)

    def _get_layer(self) -> Any:
        if self.layer is None:
            from channels.layers import channel_layers

            self.layer = channel_layers.make_backend(self.layer_alias)
        return self.layer

    async def _receive(self) -> None:
        backoff = Backoff(1.0, 30.0)
        try:
            while True:
                try:
                    message = await self._get_layer().receive(self.channel)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the publisher says so for the sends
                    self.failures += 1
                    log.debug("receiving wants failed (%s); retrying", exc)
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                self.receiver(message)
        finally:
            close = getattr(self.layer, "close_pools", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(close(), 1.0)

    def close(self, timeout: float = 3.0) -> None:
        """Stop receiving (the receive in flight is cancelled) and end the thread."""
        task = self._task
        if task is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
