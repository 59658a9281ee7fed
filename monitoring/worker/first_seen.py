"""When the monitor first saw each GPU process: the "seen since" of a process that has no
start time.

NVML gives no process start time, and a replayed capture holds none: on a live host the
start time comes from psutil, but for a pid this machine cannot see (``--demo``, a container
the worker cannot look into) it stays unknown. Rather than invent one, the worker stamps
every process with ``first_seen``: the time of the first snapshot that listed it on its GPU,
kept for as long as it stays listed. The page says "seen since <time>", never "started".

The key is that of the storage's process sessions (GPU storage key, pid, start time), so the same
process gets the same time as its session's ``first_seen`` in history. After a worker
restart, :meth:`FirstSeen.resume` takes the open sessions' earlier times.

Runs on the sampling thread (:meth:`stamp`); :meth:`resume` may come from the storage
thread: a lock keeps the two apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from monitoring.telemetry.schema import GpuSample, Snapshot

Key = tuple[str, int, datetime | None]


class FirstSeen:
    """``(GPU identity, pid, start time) -> [first seen, last seen]`` of the processes listed
    lately; one forgotten ``grace_s`` after its last listing (a pid reused later is new)."""

    def __init__(self, grace_s: float, gpu_key: Callable[[GpuSample], str]) -> None:
        self.grace = timedelta(seconds=grace_s)
        self.gpu_key = gpu_key  # the storage's key of a GPU (gpu_storage_key)
        self._seen: dict[Key, list[datetime]] = {}
        self._lock = threading.Lock()

    def stamp(self, snapshot: Snapshot) -> None:
        """Set ``first_seen`` on every process of ``snapshot`` (UTC, the snapshot's clock)."""
        now = snapshot.timestamp
        oldest = now - self.grace
        with self._lock:
            seen = self._seen
            for gpu in snapshot.gpus:
                identity = self.gpu_key(gpu)
                for proc in gpu.processes:
                    key = (identity, proc.pid, proc.start_time)
                    times = seen.get(key)
                    if times is None or times[1] < oldest:  # new, or back after a gap
                        times = seen[key] = [now, now]
                    elif now > times[1]:
                        times[1] = now
                    proc.first_seen = times[0]
            for key in [key for key, times in seen.items() if times[1] < oldest]:
                del seen[key]

    def resume(self, sessions: Iterable) -> None:
        """Earlier first sightings from process sessions a previous worker left open
        (``gpu_uuid``, ``pid``, ``process_start``, ``first_seen``, ``last_seen``), decided as
        the sessions are: the same pid and start time is the same process however long the
        worker was away; without a start time, only if it was seen within the grace period."""
        with self._lock:
            for session in sessions:
                key = (session.gpu_uuid, session.pid, session.process_start)
                times = self._seen.get(key)
                if times is None:
                    self._seen[key] = [session.first_seen, session.last_seen]
                elif session.first_seen < times[0] and (
                    session.process_start is not None or times[0] - session.last_seen <= self.grace
                ):
                    times[0] = session.first_seen
