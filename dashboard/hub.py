"""One live hub per server process: hears each snapshot once, renders it once, fans it out.

The worker publishes every snapshot to the Channels group ``TELEMETRY_GROUP`` (Redis in
production). A process's hub is the group's only member from that process, joined while the
process has viewers: Redis delivers one copy per process, not one per browser. Each message
is rendered once into a :class:`~dashboard.fragments.Frame`; every viewer (a WebSocket
consumer) is then sent only the fragments that changed since its own last frame, at its own
pace. Viewers in step share one diff, computed once. When the collector runs inside this
process (``manage.py serve``) it hands messages to :meth:`LiveHub.submit` directly.

Everything here runs on the server's event loop, except :meth:`LiveHub.submit` (any thread)
and :meth:`LiveHub.frame_now` (the page view's thread, read-only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from dashboard import fragments as frag
from dashboard.alert_list import HostAlerts, parse_time, stored_alerts
from dashboard.health import freshness
from dashboard.present import human_duration, is_busy, view
from dashboard.sparklines import Recent
from dashboard.wants import WantSender
from monitoring.telemetry import format as fmt
from monitoring.telemetry.serialize import snapshot_from_data

log = logging.getLogger(__name__)

#: Paces a viewer may choose (seconds between frames; 0: every tick; None: paused).
PACES: dict[str, float | None] = {"live": 0.0, "2s": 2.0, "5s": 5.0, "paused": None}
#: A pace's frame may come this much early: ticks are not exactly one interval apart.
PACE_SLACK_S = 0.25
#: How often staleness is checked while anyone watches.
STALE_CHECK_S = 1.0
#: The group membership is renewed this often (channels-redis expires it after a day).
GROUP_RENEW_S = 3600.0
#: Viewers sent a frame between two turns of the event loop (their sockets written in between).
FAN_OUT_BATCH = 50
#: After the last viewer leaves, the process stays in the group this long (a reload).
LINGER_S = 30.0


def stale_after_s() -> float:
    """A host is stale once its newest sample is older than ``STALE_AFTER_S``: the page says
    "collector not running" exactly when ``/api/health`` and ``/metrics`` call it stale."""
    return float(settings.STALE_AFTER_S)


def quiet_after_s() -> float:
    """A watched host from which nothing new came for this long is read from the database."""
    return 2 * settings.POLL_INTERVAL_MS / 1000


class Viewer:
    """What a hub needs of a viewer: ``send(html)`` and its state, kept by the hub."""

    def __init__(self, host: str, send: Callable[[str], Awaitable[None]], pace: str = "live"):
        self.host = host
        self.send = send
        self.pace = pace if pace in PACES else "live"
        self.sent: dict[str, int] = {}
        self.layout: tuple | None = None
        self.version = -1
        self.last_sent = 0.0
        self.frames = 0
        self.bytes = 0
        #: UUIDs of the GPUs whose "PCIe and link" detail this viewer has open
        self.details: set[str] = set()

    def due(self, now: float) -> bool:
        every = PACES[self.pace]
        if every is None:
            return False
        return now - self.last_sent >= every - PACE_SLACK_S


@dataclass
class HostState:
    """What the hub knows of one host."""

    name: str
    snapshot: Any = None
    received: float = 0.0  # monotonic
    heard: float | None = None  # monotonic: the last live message (not a stored snapshot)
    #: the snapshot was read from the database, not heard live (see :meth:`LiveHub.check_stale`)
    stored: bool = False
    recent: Recent = field(default_factory=Recent)
    alerts: HostAlerts = field(default_factory=HostAlerts)  # what its page shows
    frame: frag.Frame | None = None
    status: frag.Status | None = None
    seeded: bool = False
    dirty: bool = False  # a snapshot arrived that the frame does not show yet
    memo: dict = field(default_factory=dict)  # last tick's fragments, reused when unchanged


class LiveHub:
    def __init__(self, group: str | None = None) -> None:
        self.group = group or settings.TELEMETRY_GROUP
        self.hosts: dict[str, HostState] = {}
        self.viewers: dict[str, set[Viewer]] = {}
        self.version = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listening = False  # a member of the telemetry group now
        self.embedded = False  # the collector runs in this process and submits directly
        self._tasks: set[asyncio.Task] = set()
        self._listener: asyncio.Task | None = None
        self._checker: asyncio.Task | None = None
        self._diffs: dict[tuple, str] = {}
        self._lock = threading.RLock()
        self.rendered = 0  # frames rendered (the benchmark and tests count them)
        self.received = 0
        self.bad_messages = 0
        self.last_idle = time.monotonic()
        self.last_poll = 0.0
        self.polled: dict[str, float] = {}  # host -> when a polling page last asked (monotonic)
        #: "someone looks at PCIe" to the hosts' collectors (:mod:`dashboard.wants`)
        self.wants = WantSender()

    # --- viewers ------------------------------------------------------------------------------

    async def join(self, viewer: Viewer) -> None:
        """Register a viewer and send it the whole page of its host at once."""
        self._bind()
        self.viewers.setdefault(viewer.host, set()).add(viewer)
        self._ensure_tasks()
        state = self.hosts.get(viewer.host)
        if state is None:
            await self._load_from_database(viewer.host)
        elif not state.seeded:  # heard from the in-process collector before anyone looked
            await self._seed(state)
        frame = self.frame_now(viewer.host)
        if frame is not None:
            await self._send(viewer, frame, time.monotonic(), force=True)

    def leave(self, viewer: Viewer) -> None:
        group = self.viewers.get(viewer.host)
        if group is not None:
            group.discard(viewer)
            if not group:
                del self.viewers[viewer.host]
        if not self.viewer_count:
            self.last_idle = time.monotonic()

    async def set_pace(self, viewer: Viewer, pace: str) -> bool:
        if pace not in PACES:
            return False
        viewer.pace = pace
        frame = self.frame_now(viewer.host)
        if PACES[pace] is not None and frame is not None:
            await self._send(viewer, frame, time.monotonic(), force=True)
        return True

    async def set_detail(self, viewer: Viewer, gpu: str, is_open: bool) -> bool:
        """The viewer opened (or closed) GPU ``gpu``'s PCIe detail; False for a GPU its host
        does not have. While open, the collector is asked to read PCIe (:meth:`renew_wants`)."""
        if gpu not in self.gpu_uuids(viewer.host):
            return False
        if not is_open:
            viewer.details.discard(gpu)
            return True
        viewer.details.add(gpu)
        self.wants.want_pcie(viewer.host, gpu)
        return True

    def gpu_uuids(self, host: str) -> set[str]:
        """The UUIDs of ``host``'s GPUs in its newest snapshot (any thread)."""
        state = self.hosts.get(host)
        snapshot = state.snapshot if state is not None else None
        return {gpu.uuid for gpu in snapshot.gpus if gpu.uuid} if snapshot is not None else set()

    def want_pcie(self, host: str, gpus: list[str]) -> int:
        """A polling page has these GPUs' details open (any thread): ask for those its host
        has; how many were known."""
        known = [gpu for gpu in gpus if gpu in self.gpu_uuids(host)]
        for gpu in known:
            self.wants.want_pcie(host, gpu)
        return len(known)

    def renew_wants(self) -> None:
        """Keep PCIe read while a detail stays open: asked again at most every 10 s per GPU
        (:class:`~dashboard.wants.WantSender`), each ask holding 30 s."""
        for host, group in list(self.viewers.items()):
            wanted = set().union(*(viewer.details for viewer in list(group)))
            for gpu in sorted(wanted):
                self.wants.want_pcie(host, gpu)

    @property
    def viewer_count(self) -> int:
        return sum(len(group) for group in self.viewers.values())

    # --- messages -------------------------------------------------------------------------------

    def submit(self, message: dict[str, Any]) -> None:
        """From any thread (the in-process collector): take ``message`` in and render it on
        the caller's thread, then send the changes from the hub's loop."""
        state = self._read(message)
        if state is None:
            return
        loop = self.loop
        if loop is not None and not loop.is_closed() and self.viewers.get(state.name):
            loop.call_soon_threadsafe(self._fan_out_soon, state)

    def _fan_out_soon(self, state: HostState) -> None:
        task = asyncio.ensure_future(self._fan_out(state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, message: dict[str, Any]) -> None:
        """One published message: take it in, render the host's frame, send the changes."""
        state = self._read(message)
        if state is None:
            return
        if not state.seeded:
            await self._seed(state)
        await self._fan_out(state)

    def _read(self, message: dict[str, Any]) -> HostState | None:
        """:meth:`_take`, but a message that cannot be read is counted and logged, not raised."""
        try:
            return self._take(message)
        except Exception as exc:
            self.bad_messages += 1
            log.warning("ignored a live message that could not be read: %s", exc)
            return None

    def _take(self, message: dict[str, Any]) -> HostState:
        """Decode and remember a message; render its frame (cheap enough to do at once)."""
        with self._lock:
            host = str(message["host"])
            snapshot = snapshot_from_data(message["snapshot"])
            state = self.hosts.get(host)
            if state is None:
                state = self.hosts[host] = HostState(host)
            state.snapshot = snapshot
            state.received = time.monotonic()
            state.stored = bool(message.get("stored"))
            state.recent.add(snapshot)
            if not message.get("stored"):  # a stored snapshot says nothing of alerts
                state.heard = state.received
                state.alerts.take_live(message.get("alerts") or [])
            self.received += 1
            if self.viewers.get(host):
                self._render(state)
            else:  # nobody watches here: render when someone asks (frame_now)
                state.dirty = True
            return state

    def _render(self, state: HostState) -> None:
        state.dirty = False
        self.version += 1
        now = datetime.now(UTC)  # the status and the overview date every host alike
        state.status = _status(state, now)
        state.frame = frag.render_frame(
            view(state.snapshot, state.name) if state.snapshot is not None else None,
            state.recent,
            host=state.name,
            version=self.version,
            status=state.status,
            alerts=state.alerts.shown(),
            hosts=self.summaries(state.name, now),
            memo=state.memo,
        )
        self.rendered += 1

    def summaries(
        self, current: str | None = None, now: datetime | None = None
    ) -> list[frag.HostSummary]:
        """The several-hosts overview, from the newest snapshot of each host this process
        heard live or read from the database, dated as :func:`~dashboard.health.freshness`
        dates it (the status fragment and ``/api/health`` say the same)."""
        rows = []
        now = now or datetime.now(UTC)
        for name in sorted(self.hosts):
            snap = self.hosts[name].snapshot
            if snap is None:
                continue
            temps = [g.temperature for g in snap.gpus if g.temperature is not None]
            fresh = freshness(snap.timestamp, now, stale_after_s())
            rows.append(
                frag.HostSummary(
                    name=name,
                    gpus=len(snap.gpus),
                    busy=sum(1 for gpu in snap.gpus if is_busy(gpu)),
                    hottest=fmt.celsius(max(temps)) if temps else fmt.DASH,
                    age=human_duration(fresh.age_s),
                    stale=fresh.stale,
                    current=name == current,
                    age_s=int(fresh.age_s),
                )
            )
        return rows

    # --- sending ----------------------------------------------------------------------------------

    async def _fan_out(self, state: HostState) -> None:
        if not self.viewers.get(state.name):
            return
        frame = self.frame_now(state.name)
        if frame is None:
            return
        now = time.monotonic()
        self._diffs.clear()
        for count, viewer in enumerate(list(self.viewers.get(state.name, ())), 1):
            if viewer.due(now):
                await self._send(viewer, frame, now)
            if count % FAN_OUT_BATCH == 0:
                # daphne writes a frame to its socket only when the loop runs: let it, so
                # the first viewers are not kept waiting until the last one is queued
                await asyncio.sleep(0)

    async def _send(
        self, viewer: Viewer, frame: frag.Frame, now: float, force: bool = False
    ) -> None:
        if viewer.layout != frame.layout:
            viewer.details.clear()  # the whole body is replaced: its details come back closed
        if force:
            html = frag.changes(frame, viewer.sent, viewer.layout)
        else:
            # viewers in step (same last frame) share one diff
            key = (viewer.version, frame.version, id(viewer.sent))
            html = self._diffs.get(key)
            if html is None:
                html = self._diffs[key] = frag.changes(frame, viewer.sent, viewer.layout)
        viewer.sent, viewer.layout, viewer.version = frame.hashes, frame.layout, frame.version
        if not html:
            return
        viewer.last_sent = now
        try:
            await viewer.send(html)
        except Exception as exc:  # a closed socket: the consumer's disconnect cleans up
            log.debug("sending a frame failed: %s", exc)
            return
        viewer.frames += 1
        viewer.bytes += len(html)

    # --- staleness, the group, the database ----------------------------------------------------

    async def check_stale(self) -> None:
        """Say "collector not running" once a host's newest sample is too old, and keep each
        watched page's status and hosts overview dated alike.

        Any host this process heard nothing new from for two intervals is read from the
        database: its collector may publish where this process cannot hear it (another
        process's in-memory channel layer, no Redis, Redis away), so the database's newest
        sample, the one ``/api/health`` dates, is the truth then, and the page says the
        figures are from the database. A host fed live (the in-process collector, Redis) costs
        no query."""
        watched = self.watched()
        quiet = sorted(name for name in set(self.hosts) | watched if self.quiet(name))
        if quiet:
            await self._follow_database(quiet, watched)
        for name in sorted(watched):
            state = self.hosts.get(name)
            if state is not None and self.alerts_due(state):
                await self._reread_alerts(state)
            if state is None or state.frame is None or state.dirty:
                continue  # nothing to show, or rendered afresh when next asked (frame_now)
            at = datetime.now(UTC)  # the status and the overview date every host alike
            status = _status(state, at)
            summaries = self.summaries(name, at)
            same_status = state.status is not None and status.shown == state.status.shown
            if same_status and frag.frag_hosts(summaries) == state.frame.fragments.get("hosts"):
                continue
            with self._lock:
                state.status = status
                self.version += 1
                state.frame = frag.restatus(state.frame, status, self.version)
                state.frame = frag.with_hosts(state.frame, summaries, self.version)
            await self._fan_out(state)

    def heard_live(self, host: str) -> bool:
        """Whether ``host``'s collector spoke live to this process lately (two intervals): a
        host it knows though the database may not have it yet (any thread)."""
        state = self.hosts.get(host)
        heard = state.heard if state is not None else None
        return heard is not None and time.monotonic() - heard <= quiet_after_s()

    def forget(self, host: str) -> None:
        """Drop all this process knows of ``host`` (deleted in admin): it leaves the hosts
        overview and its page is a 404, until its collector reports again (any thread)."""
        with self._lock:
            self.polled.pop(host, None)
            if self.hosts.pop(host, None) is None:
                return
            for state in self.hosts.values():
                state.dirty = True  # the overview no longer lists it

    def forget_unstored(self, stored: list[str]) -> None:
        """Forget the hosts the database no longer has (``stored``: its host names) and that
        did not report live lately: deleted in admin, maybe by another server process."""
        kept = set(stored)
        for name in [name for name in self.hosts if name not in kept]:
            if not self.heard_live(name):
                self.forget(name)

    def alerts_due(self, state: HostState) -> bool:
        """Whether to read the host's alerts from the database again: the worker's live word
        dropped an alert shown open, or no live word came for two intervals (at most once per
        ``STALE_CHECK_S``). A host fed live with nothing unconfirmed costs no query."""
        if not state.seeded:
            return False  # seeding reads them
        read_at = state.alerts.read_at
        if read_at is not None and time.monotonic() - read_at < STALE_CHECK_S:
            return False
        # no live word lately (stored snapshots followed meanwhile do not count: they say
        # nothing of alerts)
        quiet = not self.heard_live(state.name)
        return state.alerts.recheck or (quiet and not self.embedded)

    async def _reread_alerts(self, state: HostState) -> None:
        from asgiref.sync import sync_to_async

        if await sync_to_async(self.reread_alerts, thread_sensitive=False)(state):
            await self._fan_out(state)

    def reread_alerts(self, state: HostState) -> bool:
        """Take the host's alerts from the database (any thread); True when the page's
        alerts changed (the frame is then rendered anew)."""
        try:
            _close_stale_connection()
            rows = stored_alerts(state.name)
        except Exception as exc:  # no database: the alerts stay as last known, never cleared
            log.debug("reading the alerts of %s failed: %s", state.name, exc)
            return False
        with self._lock:
            if not state.alerts.take_stored(rows, time.monotonic()):
                return False
            if self.viewers.get(state.name):
                self._render(state)
            else:
                state.dirty = True
            return True

    def watched(self) -> set[str]:
        """Hosts a WebSocket viewer watches, or a polling page asked for lately."""
        since = time.monotonic() - LINGER_S
        for name, at in list(self.polled.items()):
            if at <= since:
                self.polled.pop(name, None)
        return set(self.viewers) | set(self.polled)

    def quiet(self, host: str) -> bool:
        """Nothing new came of ``host`` for two intervals (or nothing ever): time to look in
        the database, where its collector writes whichever channel layer it publishes on."""
        state = self.hosts.get(host)
        return state is None or time.monotonic() - state.received > quiet_after_s()

    def _bind(self) -> None:
        if self.loop is None or self.loop.is_closed():
            self.bind(asyncio.get_running_loop())

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's event loop, where viewers are sent their frames."""
        self.loop = loop
        self.wants.loop = loop

    def _ensure_tasks(self) -> None:
        if self._checker is None or self._checker.done():
            self._checker = asyncio.ensure_future(self._check_loop())
        if not self.embedded and (self._listener is None or self._listener.done()):
            self._listener = asyncio.ensure_future(self._listen())

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(STALE_CHECK_S)
            try:
                await self.check_stale()
                self.renew_wants()
            except Exception:
                log.exception("checking for stale hosts failed")
            quiet = time.monotonic() - max(self.last_idle, self.last_poll)
            if not self.viewer_count and quiet > LINGER_S:
                self._stop_listening()
                return

    async def _listen(self) -> None:
        """Be this process's one member of the telemetry group while anyone watches."""
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        channel = await layer.new_channel("hub.")
        renewed: float | None = None
        backoff = 1.0
        try:
            while True:
                try:
                    if renewed is None or time.monotonic() - renewed > GROUP_RENEW_S:
                        await layer.group_add(self.group, channel)
                        renewed = time.monotonic()
                        self.listening = True
                    message = await layer.receive(channel)
                    backoff = 1.0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: retry, say it once per outage
                    if backoff == 1.0:
                        log.warning("live updates: channel layer unreachable (%s); retrying", exc)
                    renewed = None
                    self.listening = False
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if message.get("type") == "telemetry.snapshot":
                    await self.handle(message)
        finally:
            self.listening = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(layer.group_discard(self.group, channel), 1.0)

    async def stop(self, timeout: float = 2.0) -> None:
        """Cancel the hub's tasks and wait for them, at most ``timeout`` (server stop, tests)."""
        tasks = [
            task
            for task in (self._listener, self._checker, *self._tasks)
            if task is not None and not task.done()
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._listener = self._checker = None
        self.listening = False

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None

    async def _seed(self, state: HostState) -> None:
        from asgiref.sync import sync_to_async

        await sync_to_async(self.seed, thread_sensitive=False)(state)

    def seed(self, state: HostState) -> None:
        """Fill a host's sparklines and alerts from the database, once (any thread)."""
        state.seeded = True
        try:
            rows, alerts = load_recent(state.name)
        except Exception as exc:  # no database: sparklines start empty, alerts from now
            log.info("could not load recent history for %s: %s", state.name, exc)
            return
        if not rows and not alerts:
            return
        with self._lock:
            cutoff = state.snapshot.timestamp - timedelta(seconds=3) if state.snapshot else None
            fresh = Recent()
            fresh.seed(rows if cutoff is None else [row for row in rows if row[2] < cutoff])
            state.recent = _merge(fresh, state.recent)
            state.alerts.take_stored(alerts, time.monotonic())
            self._render(state)

    async def _follow_database(self, hosts: list[str], watched: set[str]) -> None:
        """Take the stored latest snapshots of ``hosts`` that are newer than what this process
        holds (a query of their times, then one of the newer ones' snapshots)."""
        from asgiref.sync import sync_to_async

        try:
            messages = await sync_to_async(self.newer_stored, thread_sensitive=False)(hosts)
        except Exception as exc:
            log.debug("reading the latest snapshots of %s failed: %s", hosts, exc)
            return
        for message in messages:
            if message["host"] in watched:
                await self.handle(message)  # seeded and rendered for its viewers
            else:
                self._read(message)  # the overview's line only

    def newer_stored(self, hosts: list[str]) -> list[dict[str, Any]]:
        """The stored latest snapshots of ``hosts`` newer than what this process holds, as
        live messages marked ``stored`` (any thread; 1 query, 2 when any is newer)."""
        from monitoring.storage.latest import latest_snapshots, latest_times

        _close_stale_connection()
        times = latest_times(hosts)
        newer = [name for name, at in times.items() if self._older(name, at)]
        if not newer:
            return []
        rows = latest_snapshots(among=newer)
        return [_as_message(row.host.name, row.data) for row in rows]

    def _older(self, host: str, than: datetime) -> bool:
        """Whether this process holds nothing of ``host`` as new as ``than``."""
        state = self.hosts.get(host)
        return state is None or state.snapshot is None or state.snapshot.timestamp < than

    async def _load_from_database(self, host: str) -> None:
        from asgiref.sync import sync_to_async

        await sync_to_async(self.load_host, thread_sensitive=False)(host)

    def load_host(self, host: str) -> HostState | None:
        """The host's state for a page (any thread): as heard, else from its latest stored
        snapshot; sparklines and alerts filled from the database once. None when nothing
        was ever stored for it (or the database is away)."""
        state = self.hosts.get(host)
        if self.quiet(host):
            try:
                message = latest_message(host)
            except Exception as exc:
                log.info("no stored snapshot for %s: %s", host, exc)
                message = None
            if message is not None and self._older(host, _sampled(message)):
                state = self._take(message)
        if state is None:
            return None
        if not state.seeded:
            self.seed(state)
        elif self.alerts_due(state):  # a polling page: its alerts as a live one's
            self.reread_alerts(state)
        return state

    def load_others(self, hosts: list[str]) -> None:
        """Hosts the page lists but this process has not heard, or not lately: their stored
        latest snapshots, in one query, for the overview (any thread)."""
        missing = [name for name in hosts if self.quiet(name)]
        if not missing:
            return
        from monitoring.storage.latest import latest_snapshots

        try:
            rows = latest_snapshots()
        except Exception as exc:
            log.info("could not read the latest snapshots: %s", exc)
            return
        for row in rows:
            if row.host.name in missing and self._older(row.host.name, row.time):
                self._read(_as_message(row.host.name, row.data))

    def watched_by_poll(self, host: str) -> None:
        """A polling viewer of ``host`` asked (any thread): keep hearing the group as for a
        WebSocket, and keep the host dated (:meth:`check_stale`)."""
        self.last_poll = self.polled[host] = time.monotonic()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._ensure_tasks)

    def frame_now(self, host: str) -> frag.Frame | None:
        """The host's current frame (any thread), rendered now if a newer snapshot waits."""
        state = self.hosts.get(host)
        if state is None:
            return None
        if state.dirty or state.frame is None:
            with self._lock:
                if state.dirty or state.frame is None:
                    self._render(state)
        return state.frame


def _status(state: HostState, now: datetime) -> frag.Status:
    """The host's status fragment's words at ``now``."""
    sampled = state.snapshot.timestamp if state.snapshot else None
    return frag.status_for(sampled, stale_after_s(), now, stored=state.stored)


def _sampled(message: dict[str, Any]) -> datetime:
    """When a live message's snapshot was taken."""
    return parse_time(message["snapshot"]["timestamp"])


def _merge(seeded: Recent, live: Recent) -> Recent:
    """Stored history first, then what arrived live (the live rings win where both have)."""
    for index, rings in live.gpus.items():
        for key, ring in rings.items():
            target = seeded.gpus.setdefault(index, {}).setdefault(key, ring)
            if target is not ring:
                for bucket, value in ring.buckets:
                    target.add(bucket, value)
                target.current, target.current_sum, target.current_n = (
                    ring.current,
                    ring.current_sum,
                    ring.current_n,
                )
    for key, ring in live.host.items():
        seeded.host.setdefault(key, ring)
    seeded.bucket = live.bucket
    return seeded


def _close_stale_connection() -> None:
    """Drop this thread's broken or expired connection (hub threads live past requests), but
    never inside a transaction: closing would end it (a test's, on PostgreSQL)."""
    from django.db import close_old_connections, connection

    if not connection.in_atomic_block:
        close_old_connections()


def load_recent(host: str) -> tuple[list[tuple], list[dict[str, Any]]]:
    """Stored samples of the last five minutes and the recent alerts of ``host`` (3 queries)."""
    from dashboard.sparklines import WINDOW_S
    from monitoring.models import GpuSample, HostSample

    _close_stale_connection()
    since = datetime.now(UTC) - timedelta(seconds=WINDOW_S)
    rows: list[tuple] = []
    for index, at, util, used, total, temp, power in GpuSample.objects.filter(
        gpu__host__name=host, time__gte=since
    ).values_list(
        "gpu__index",
        "time",
        "utilization",
        "memory_used_mib",
        "gpu__memory_total_mib",
        "temperature",
        "power_w",
    ):
        rows.append((index, "utilization", at, util))
        rows.append(
            (index, "memory", at, 100 * used / total if used is not None and total else None)
        )
        rows.append((index, "temperature", at, temp))
        rows.append((index, "power", at, power))
    for at, cpu, memory in HostSample.objects.filter(host__name=host, time__gte=since).values_list(
        "time", "cpu_percent", "ram_percent"
    ):
        rows.append((None, "cpu", at, cpu))
        rows.append((None, "memory", at, memory))
    return rows, stored_alerts(host)


def latest_message(host: str) -> dict[str, Any] | None:
    """The host's stored latest snapshot as a live message would carry it (or None)."""
    from monitoring.storage.latest import latest_snapshots

    _close_stale_connection()
    rows = latest_snapshots(host)
    if not rows:
        return None
    return _as_message(host, rows[0].data)


def _as_message(host: str, data: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot as the worker's live message carries it, marked ``stored``: the page
    then says its figures come from the database. It says nothing of alerts (the hub reads
    those apart, :func:`~dashboard.alert_list.stored_alerts`)."""
    return {
        "type": "telemetry.snapshot",
        "host": host,
        "snapshot": data,
        "alerts": [],
        "stored": True,
    }


def bind_server_loop(app):
    """Wrap the ASGI app so the hub knows the server's event loop from the first request on
    (a viewer that only polls over HTTP still gets the hub to listen)."""

    async def application(scope, receive, send):
        hub = get_hub()
        if hub.loop is None or hub.loop.is_closed():
            hub.bind(asyncio.get_running_loop())
        return await app(scope, receive, send)

    return application


_hub: LiveHub | None = None


def get_hub() -> LiveHub:
    """This process's hub."""
    global _hub
    if _hub is None:
        _hub = LiveHub()
    return _hub


def reset_hub() -> None:
    """Forget the process's hub (tests)."""
    global _hub
    _hub = None
