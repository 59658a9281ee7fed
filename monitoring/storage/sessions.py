"""GPU process sessions: one process on one GPU, from its first to its last sighting.

Answers "who used GPU 1 last night at 03:00, and for how long?" without keeping every
per-second process list: the storage writer feeds the snapshots of each batch here in time
order, and writes the sessions that changed. No Django here; the writer turns sessions into
``ProcessSession`` rows.

How sightings are counted:

- A session is keyed by (GPU key, pid, process start time), the GPU key being its storage
  key (its UUID, else host and bus id or index: ``gpu_key``). Sources that do not give the
  start time key by (GPU UUID, pid): a pid reused within the grace period would then merge
  into the earlier session, a risk the grace period keeps small.
- The process list is read on its own tier (every 2 s); snapshots of the ticks between carry
  the same list again - the very same ``GpuProcess`` objects. A list made of the same objects
  as the previous one of that GPU is a repeat and is not counted, so means, peaks and sample
  counts reflect real readings and ``last_seen`` is the time of the last real reading. (A
  copied snapshot would be counted as a new reading: harmless, it adds a duplicate sample.)
- A session closes, at its ``last_seen``, when the process has not been seen for more than
  ``grace_s`` (default: two process ticks plus one second) or its GPU is lost. Time is the
  snapshots' own, so a backlog written after a database outage gives the same sessions.
- After a worker restart the sessions still open in the database for this host are resumed
  (:meth:`ProcessSessionTracker.resume`) and decided by the first snapshot: one whose process
  is in that snapshot's list of its GPU continues (same pid and start time: the same process,
  however long the worker was away; without a start time only within the grace period);
  every other one is closed at its ``last_seen``.

What is written when (:meth:`ProcessSessionTracker.take`, once per flush):

- A new session and a closed one are written by the flush that sees them, so "who used GPU 1
  at 03:00" is right as soon as that flush commits.
- The running figures of a session still open (``last_seen``, means, peak, sample count) move
  on every process tick, and rewriting them all on every flush was the largest steady cost of
  ingest. They are written at most every ``refresh_s`` of sample time (``SESSION_REFRESH_S``),
  and on every flush once the worker stops, so nothing is left unwritten at exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from operator import attrgetter

from monitoring.telemetry.schema import GPU_LOST, Container, GpuProcess, GpuSample, Snapshot

SessionKey = tuple[str, int, datetime | None]


def container_label(container: Container | None) -> str:
    """One line saying where a process runs: "docker 1a2b3c4d5e6f", "kubernetes pod <uid>",
    "systemd ollama.service"; "" outside any container."""
    if container is None:
        return ""
    if container.runtime == "kubernetes":
        if container.pod_uid:
            return f"kubernetes pod {container.pod_uid}"
        return f"kubernetes {container.id[:12]}" if container.id else "kubernetes"
    ident = container.name or (container.id[:12] if container.id else "")
    return f"{container.runtime} {ident}".strip()


@dataclass(slots=True)
class Session:
    """The running figures of one process session (a ``ProcessSession`` row to be)."""

    gpu_uuid: str
    pid: int
    process_start: datetime | None
    first_seen: datetime
    last_seen: datetime
    name: str = ""
    user: str = ""
    container: str = ""
    command: str = ""
    peak_memory_mib: int | None = None
    memory_total: float = 0.0  # sum over the samples that reported memory
    memory_samples: int = 0
    sm_total: float = 0.0  # sum over the samples that reported SM use
    sm_samples: int = 0
    samples: int = 0
    open: bool = True
    db_id: int | None = None  # set once written
    resumed: bool = False  # loaded after a restart, not seen since

    @property
    def key(self) -> SessionKey:
        return (self.gpu_uuid, self.pid, self.process_start)

    @property
    def mean_memory_mib(self) -> float | None:
        return self.memory_total / self.memory_samples if self.memory_samples else None

    @property
    def mean_sm_utilization(self) -> float | None:
        return self.sm_total / self.sm_samples if self.sm_samples else None

    def sight(self, proc: GpuProcess, time: datetime) -> None:
        """Count one real reading of the process."""
        self.last_seen = max(self.last_seen, time)
        self.samples += 1
        if proc.used_memory_mib is not None:
            self.memory_total += proc.used_memory_mib
            self.memory_samples += 1
            if self.peak_memory_mib is None or proc.used_memory_mib > self.peak_memory_mib:
                self.peak_memory_mib = proc.used_memory_mib
        if proc.sm_utilization is not None:
            self.sm_total += proc.sm_utilization
            self.sm_samples += 1
        # attribution can come later than the process (a slow /proc read): keep the best known
        self.name = proc.name or self.name
        self.user = proc.user or self.user
        self.container = container_label(proc.container) or self.container
        self.command = proc.command or self.command

    def copy(self) -> Session:
        """An independent copy (for checkpoints: ~7x cheaper than ``dataclasses.replace``)."""
        return Session(*_session_values(self))


_session_values = attrgetter(*(field.name for field in fields(Session)))


@dataclass(slots=True)
class _State:
    open: dict[SessionKey, Session]
    changed: dict[SessionKey, Session]
    closed: list[Session]
    last_lists: dict[str, list[GpuProcess]]
    resumed: dict[SessionKey, Session]  # the open sessions loaded after a restart, undecided
    refreshed_at: datetime | None = None  # sample time the open sessions were last all taken


class ProcessSessionTracker:
    """Turns snapshots, in time order, into open and closed sessions.

    ``refresh_s``: how often (sample time) :meth:`take` hands over the open sessions whose
    figures moved; 0 hands them over on every take.
    """

    def __init__(
        self,
        grace_s: float = 5.0,
        refresh_s: float = 0.0,
        gpu_key: Callable[[GpuSample], str | None] = attrgetter("uuid"),
    ) -> None:
        self.gpu_key = gpu_key
        self.grace = timedelta(seconds=grace_s)
        self.refresh = timedelta(seconds=refresh_s)
        self._state = _State(open={}, changed={}, closed=[], last_lists={}, resumed={})

    @property
    def open_sessions(self) -> list[Session]:
        return list(self._state.open.values())

    # -- feeding ------------------------------------------------------------------------------

    def observe(self, snapshot: Snapshot) -> None:
        state = self._state
        time = snapshot.timestamp
        present: set[str] = set()
        for gpu in snapshot.gpus:
            uuid = self.gpu_key(gpu)
            if not uuid:
                continue
            present.add(uuid)
            if gpu.state == GPU_LOST:
                state.last_lists.pop(uuid, None)
                self._close_where(lambda s, uuid=uuid: s.gpu_uuid == uuid)
                continue
            procs = gpu.processes
            previous = state.last_lists.get(uuid)
            if previous is not None and _same_objects(previous, procs):
                continue  # the process tier did not run on this tick: nothing new
            state.last_lists[uuid] = list(procs)
            self._sight_list(uuid, procs, time)
        if len(state.last_lists) > len(present):
            for uuid in [u for u in state.last_lists if u not in present]:
                del state.last_lists[uuid]
        oldest = time - self.grace
        ended = [s for s in state.open.values() if s.last_seen < oldest and not s.resumed]
        if state.resumed:  # decided by the first snapshot: their GPU is not even there
            ended += [s for s in state.resumed.values() if s.gpu_uuid not in present]
        for session in ended:
            self._close(session)

    def _sight_list(self, uuid: str, procs: list[GpuProcess], time: datetime) -> None:
        state = self._state
        sighted: set[SessionKey] = set()
        for proc in procs:
            key: SessionKey = (uuid, proc.pid, proc.start_time)
            if key in sighted:
                continue  # one process listed twice (graphics and compute): one reading
            sighted.add(key)
            session = state.open.get(key)
            if session is not None and session.resumed:
                session.resumed = False
                del state.resumed[key]
                if session.process_start is None and time - session.last_seen > self.grace:
                    self._close(session)  # a pid seen again long after: maybe not the same
                    session = None
            if session is None:
                session = Session(
                    gpu_uuid=uuid,
                    pid=proc.pid,
                    process_start=proc.start_time,
                    first_seen=time,
                    last_seen=time,
                )
                state.open[key] = session
            session.sight(proc, time)
            state.changed[key] = session
        if state.resumed:  # resumed sessions of this GPU missing from its first list: ended
            for session in [s for s in state.resumed.values() if s.gpu_uuid == uuid]:
                if session.key not in sighted:
                    self._close(session)

    def _close_where(self, predicate) -> None:
        for session in [s for s in self._state.open.values() if predicate(s)]:
            self._close(session)

    def _close(self, session: Session) -> None:
        state = self._state
        session.open = False
        session.resumed = False
        state.open.pop(session.key, None)
        state.resumed.pop(session.key, None)
        state.changed.pop(session.key, None)
        state.closed.append(session)

    def resume(self, sessions: Iterable[Session]) -> None:
        """Sessions left open by a previous worker of this host, to continue or close."""
        for session in sessions:
            if session.key in self._state.open:
                continue
            session.resumed = True
            self._state.open[session.key] = session
            self._state.resumed[session.key] = session

    # -- writing ------------------------------------------------------------------------------

    def changed(self) -> list[Session]:
        """Sessions with news not taken yet: the closed ones, then the open ones seen since."""
        return [*self._state.closed, *self._state.changed.values()]

    @property
    def has_news(self) -> bool:
        return bool(self._state.closed or self._state.changed)

    def take(self, now: datetime | None, *, everything: bool = False) -> list[Session]:
        """The sessions to write now, no longer news: the closed ones, the new ones (no row
        yet), and, when a refresh is due at sample time ``now`` (or ``everything``), every
        open one seen since the last refresh. Take a :meth:`checkpoint` before and
        :meth:`rollback` to it if the write fails: what was taken is then news again."""
        state = self._state
        taken: list[Session] = state.closed
        state.closed = []
        if everything or self._refresh_due(now):
            taken += state.changed.values()
            state.changed = {}
            if now is not None:
                state.refreshed_at = now
            return taken
        new = [session for session in state.changed.values() if session.db_id is None]
        for session in new:
            del state.changed[session.key]
        return taken + new

    def _refresh_due(self, now: datetime | None) -> bool:
        if not self.refresh:
            return True
        if now is None:
            return False  # no new snapshot: nothing newer than what already waits
        last = self._state.refreshed_at
        # (now < last: the clock went back; refresh rather than wait for it to catch up)
        return last is None or now < last or now - last >= self.refresh

    # -- transactions -------------------------------------------------------------------------

    def checkpoint(self) -> _State:
        """A copy of the state, to return to if the batch fed since is not written."""
        state = self._state
        copies = {key: session.copy() for key, session in state.open.items()}
        return _State(
            open=copies,
            changed={key: copies[key] for key in state.changed},
            closed=[session.copy() for session in state.closed],
            last_lists=dict(state.last_lists),
            resumed={key: copies[key] for key in state.resumed},
            refreshed_at=state.refreshed_at,
        )

    def rollback(self, checkpoint: _State) -> None:
        self._state = checkpoint


def _same_objects(previous: list[GpuProcess], current: list[GpuProcess]) -> bool:
    """True when ``current`` is the previous reading again (the same objects)."""
    if not current:
        return not previous  # nothing then and now: no difference whether repeated
    return len(previous) == len(current) and all(
        a is b for a, b in zip(previous, current, strict=True)
    )
