"""The collector inside the web server (``manage.py serve``): snapshots go straight to the hub.

The worker's publisher interface (``publish``, ``close``, counters), but instead of a
channel layer it hands each message to this process's :class:`~dashboard.hub.LiveHub`:
the one-command embedded run needs no Redis and no second process.
"""

from __future__ import annotations

import logging

from dashboard.hub import LiveHub
from monitoring.records import AlertRecord, EventRecord
from monitoring.telemetry.schema import Snapshot
from monitoring.worker.publish import build_message

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

    def wait(self, timeout: float | None = None) -> None:
        """Nothing in flight: the hub took the message on the caller's thread."""

    def close(self) -> None:
        """Nothing to close."""
