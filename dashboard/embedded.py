"""The collector inside the web server (``manage.py serve``): snapshots go straight to the hub.

The worker's publisher interface (``publish``, ``close``, counters), but instead of a
channel layer it hands each message to this process's :class:`~dashboard.hub.LiveHub`:
the one-command embedded run needs no Redis and no second process. What viewers ask of the
collector (PCIe throughput while a GPU's detail is open) comes back the same short way.
"""

from __future__ import annotations

import logging

from dashboard.hub import LiveHub
from monitoring.records import AlertRecord, EventRecord
from monitoring.telemetry.schema import Snapshot
from monitoring.worker.publish import build_message
from monitoring.worker.wants import WantReceiver

log = logging.getLogger(__name__)


class HubPublisher:
    def __init__(self, host: str, hub: LiveHub) -> None:
        self.host = host
        self.hub = hub
        self.sent = 0
        self.dropped = 0

    def publish(
        self,
        snapshot: Snapshot,
        *,
        alerts: list[AlertRecord] | None = None,
        events: list[EventRecord] | None = None,
    ) -> bool:
        try:
            self.hub.submit(build_message(self.host, snapshot, alerts, events))
        except Exception:  # the page must never stop the sampling
            self.dropped += 1
            log.exception("the live page could not take a snapshot")
            return False
        self.sent += 1
        return True

    def listen_for_wants(self, sampler) -> WantReceiver:
        """What viewers and scrapes ask of this host goes straight to ``sampler``."""
        receiver = WantReceiver(sampler)
        self.hub.wants.attach(self.host, receiver)
        return receiver

    def wait(self, timeout: float | None = None) -> None:
        """Nothing in flight: the hub took the message on the caller's thread."""

    def close(self) -> None:
        """Stop taking wants for a sampler that is about to close."""
        self.hub.wants.detach(self.host)
