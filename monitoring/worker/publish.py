"""Send each snapshot to the live dashboard's Channels group, never holding up sampling.

Live data is ephemeral (storage keeps the record), so a message that cannot go out now is
dropped, not queued: with Redis away the dashboard shows a gap, the history does not.

Sends run on one persistent event loop in a background thread (channels-redis keeps its
connection pools per event loop, so one long-lived loop reuses one connection instead of
opening one per tick). :meth:`SnapshotPublisher.publish` only hands the message over and
returns at once; each send is bounded by ``timeout`` and at most one is in flight, so a
hung or refused Redis costs the sampling thread nothing. An outage is logged once when it
starts and once when it ends, not once a second.

A monitor runs for months with nobody watching most of the time, and building and sending
a message is most of the worker's own CPU. So every ``AUDIENCE_CHECK_S`` the publisher asks
the layer how many consumers are in the group (:func:`group_members`); while there are none it neither builds nor
sends (a dashboard that opens gets its first live update within that time). While someone
listens it asks only every ``AUDIENCE_RECHECK_S``.

What the dashboard asks of this host's collector (PCIe throughput while someone looks at it)
comes back on a listener thread of its own (:meth:`SnapshotPublisher.listen_for_wants`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
from typing import Any

import msgpack
from channels.layers import InMemoryChannelLayer
from django.conf import settings

from monitoring.records import AlertRecord, EventRecord
from monitoring.telemetry import serialize
from monitoring.telemetry.schema import Snapshot
from monitoring.worker.wants import WantListener, WantReceiver, want_channel

log = logging.getLogger(__name__)

MESSAGE_TYPE = "telemetry.snapshot"
#: Bound on one group_send; a send that takes longer is abandoned (the message dropped).
SEND_TIMEOUT_S = 0.5
#: channels-redis itself has no size limit (Redis takes up to 512 MB per value), but every
#: dashboard receives every message: above this a message is worth a warning.
LARGE_MESSAGE_BYTES = 256 * 1024
#: How often the publisher asks whether anyone is in the group at all.
AUDIENCE_CHECK_S = 2.0
#: While someone listens, the question only finds when the last one left (then sending to
#: nobody costs a little): no need for a Redis round trip every other tick.
AUDIENCE_RECHECK_S = 30.0


def build_message(
    host: str,
    snapshot: Snapshot,
    alerts: list[AlertRecord] | None = None,
    events: list[EventRecord] | None = None,
) -> dict[str, Any]:
    """The group message: the snapshot as the API serves it, with the alerts open now and
    those that ended on this tick (``endedAt`` set), and the events."""
    return {
        "type": MESSAGE_TYPE,
        "host": host,
        "snapshot": serialize.to_data(snapshot),
        "alerts": [serialize.to_data(alert) for alert in alerts or []],
        "events": [serialize.to_data(event) for event in events or []],
    }


def message_size(message: dict[str, Any]) -> int:
    """Bytes the message takes on the wire with channels-redis' msgpack serializer."""
    return len(msgpack.packb(message, use_bin_type=True))


async def group_members(layer: Any, group: str) -> int | None:
    """How many channels are in ``group`` on ``layer``, or None when the layer cannot say.

    Channels has no public call for this, so it is the one place that reads a layer's
    insides: the in-memory layer's ``groups`` dict, and channels-redis' sorted set per group
    (``_group_key``, on the shard ``consistent_hash`` picks; channels-redis 4.x), and on its
    pub/sub layer the subscribers of the group's Redis channel (``PUBSUB NUMSUB``). Any
    other layer, or a channels-redis without those names, gives None: "unknown", and the
    publisher then sends. Redis errors
    propagate: the caller counts them as a failed send.

    The dashboard's web processes each keep one channel in the group while they have
    viewers, so the count is the number of web processes someone is watching through.
    """
    if isinstance(layer, InMemoryChannelLayer):
        return len(layer.groups.get(group) or ())
    # A channels-redis layer means channels-redis is loaded; not importing it otherwise
    # spares the worker on the in-process layer ~6 MiB.
    redis_pubsub = sys.modules.get("channels_redis.pubsub")
    if redis_pubsub is not None and isinstance(layer, redis_pubsub.RedisPubSubChannelLayer):
        try:
            return await _subscribers(layer, group)  # its ``groups`` are only its own
        except (AttributeError, TypeError, ValueError):
            return None
    redis_core = sys.modules.get("channels_redis.core")
    if redis_core is None or not isinstance(layer, redis_core.RedisChannelLayer):
        return None
    try:
        key = layer._group_key(group)
        connection = layer.connection(layer.consistent_hash(group))
    except (AttributeError, TypeError):
        log.debug("this channels-redis cannot count a group's members: sending blind")
        return None
    return int(await connection.zcard(key))


class SnapshotPublisher:
    """``group_send`` of each snapshot, bounded and dropped on trouble."""

    def __init__(
        self,
        host: str,
        *,
        group: str | None = None,
        timeout: float = SEND_TIMEOUT_S,
        layer_alias: str = "default",
        layer: Any = None,
    ) -> None:
        self.host = host
        self.group = group or settings.TELEMETRY_GROUP
        self.timeout = timeout
        self.layer_alias = layer_alias
        self.sent = 0
        self.dropped = 0
        self.skipped = 0  # not built: nobody was listening
        #: Consumers in the group at the last check; None: unknown (then messages are sent).
        self.audience: int | None = None
        self._next_check = 0.0
        self.healthy = True
        self.last_error: str | None = None
        self.layer: Any = layer  # None: the configured layer, made on the publisher's loop
        # Set while a send is in flight (cleared on the loop): at most one at a time.
        self._idle = threading.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None  # the send in flight (a reference keeps it)
        self._size_checked = False
        self.wants: WantReceiver | None = None  # what the dashboard asked, once listening
        self._listener: WantListener | None = None
        self._injected_layer = layer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hoofhearted-publish", daemon=True
        )
        self._thread.start()

    # --- called from the sampling thread --------------------------------------------------

    def publish(
        self,
        snapshot: Snapshot,
        *,
        alerts: list[AlertRecord] | None = None,
        events: list[EventRecord] | None = None,
    ) -> bool:
        """Queue one message for sending; False when none was (a send still in flight, or
        nobody listening)."""
        if not self._idle.is_set():
            self.dropped += 1
            return False
        now = time.monotonic()
        check = now >= self._next_check
        if check:
            self._next_check = now + (AUDIENCE_RECHECK_S if self.audience else AUDIENCE_CHECK_S)
        if self.audience == 0:
            self.skipped += 1
            if check:  # only ask whether someone joined
                self._submit(None, check=True)
            return False
        message = build_message(self.host, snapshot, alerts, events)
        if not self._size_checked:
            self._size_checked = True
            size = message_size(message)
            if size > LARGE_MESSAGE_BYTES:
                log.warning(
                    "live messages are %d KiB each: large for every dashboard to receive "
                    "once a tick",
                    size // 1024,
                )
        self._submit(message, check=check)
        return True

    def _submit(self, message: dict[str, Any] | None, *, check: bool) -> None:
        self._idle.clear()
        # call_soon_threadsafe + a task on the loop: one wake-up, no cross-thread future
        self._loop.call_soon_threadsafe(self._start, message, check)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the message in flight is sent or dropped (tests, shutdown)."""
        self._idle.wait(timeout)

    def listen_for_wants(self, sampler: Any) -> WantReceiver:
        """Receive what the dashboard asks of this host (:mod:`monitoring.worker.wants`) and
        apply it to ``sampler``, on a listener thread of its own: the sampling thread never
        waits, and the sends never share a connection with its blocking receive."""
        self.wants = WantReceiver(sampler)
        # an injected layer (tests) is shared; else a fresh instance of the configured one
        self._listener = WantListener(
            want_channel(self.host),
            self.wants,
            layer_alias=self.layer_alias,
            layer=self._injected_layer,
        )
        return self.wants

    def close(self) -> None:
        """Finish the message in flight (bounded), close the connections, stop the thread."""
        if not self._loop.is_running():
            return
        self.wait(self.timeout + 0.5)
        if self._listener is not None:
            self._listener.close()
        closing = asyncio.run_coroutine_threadsafe(self._close_layer(), self._loop)
        concurrent.futures.wait([closing], timeout=1.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self._loop.close()

    # --- on the publisher's event loop ------------------------------------------------------

    def _start(self, message: dict[str, Any] | None, check: bool) -> None:
        self._task = self._loop.create_task(self._send(message, check=check))

    async def _send(self, message: dict[str, Any] | None, *, check: bool = False) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                layer = self._get_layer()
                if check:
                    self.audience = await group_members(layer, self.group)
                if message is not None and self.audience != 0:
                    await layer.group_send(self.group, message)
                    self.sent += 1
                elif message is not None:
                    self.skipped += 1
        except Exception as exc:  # Redis down, refused, slow: drop this message
            self._failed(exc, counted=message is not None)
        else:
            if not self.healthy:
                self.healthy = True
                log.warning(
                    "live updates are flowing again (group %r); %d messages were dropped "
                    "while the channel layer was unreachable",
                    self.group,
                    self.dropped,
                )
        finally:
            self._idle.set()

    def _get_layer(self) -> Any:
        if self.layer is None:
            from channels.layers import get_channel_layer

            self.layer = get_channel_layer(self.layer_alias)
            if self.layer is None:
                raise RuntimeError("no channel layer is configured (CHANNEL_LAYERS)")
        return self.layer

    def _failed(self, exc: BaseException, *, counted: bool = True) -> None:
        if counted:
            self.dropped += 1
        self.last_error = (
            "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        )
        if self.healthy:
            self.healthy = False
            log.warning(
                "cannot publish live updates to group %r (%s): dropping them until the "
                "channel layer is back; sampling and storage go on",
                self.group,
                self.last_error,
            )

    async def _close_layer(self) -> None:
        close = getattr(self.layer, "close_pools", None)
        if close is not None:
            try:
                await asyncio.wait_for(close(), 1.0)
            except Exception as exc:  # closing a dead connection is not worth failing over
                log.debug("closing the channel layer failed: %s", exc)


async def _subscribers(layer: Any, group: str) -> int:
    """Connections subscribed to ``group``'s channel on channels-redis' pub/sub layer
    (``PUBSUB NUMSUB``): the dashboard processes listening."""
    loop_layer = layer._get_layer()
    channel = loop_layer._get_group_channel_name(group)
    shard = loop_layer._get_shard(channel)
    shard._ensure_redis()
    [(_name, count)] = await shard._redis.pubsub_numsub(channel)
    return int(count)


def live_publisher(host: str, *, layer_alias: str = "default") -> SnapshotPublisher | None:
    """The publisher for a worker process, or None when no other process could hear it.

    The in-process channel layer (no REDIS_URL) only reaches consumers in the same process,
    and the collect worker serves none: publishing there would cost CPU for no one.
    """
    from channels.layers import get_channel_layer

    layer = get_channel_layer(layer_alias)
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        log.info(
            "live updates are not published: the in-process channel layer reaches no other "
            "process (set REDIS_URL so the dashboard gets them from this worker)"
        )
        return None
    return SnapshotPublisher(host, layer_alias=layer_alias)
