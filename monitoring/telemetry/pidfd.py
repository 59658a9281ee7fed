"""Know that a GPU process is still the one that was looked up, without reading /proc.

Attribution keeps who owns each GPU process per (pid, start time), and must notice on every
process tick when a pid now names another process. A pidfd (Linux 5.3+, ``os.pidfd_open``)
refers to one process, never to a later one given the same pid, and turns readable when that
process exits. Holding one per GPU process answers "which of them ended?" with one ``poll``
for all of them (about 0.6 µs for two on a 2-core VM), where reading ``/proc/<pid>/stat`` of
each costs about 11 µs a process.

Where there are no pidfds (macOS, Windows, Linux before 5.3, a seccomp profile that refuses
the call) :attr:`ExitWatch.available` is False, nothing is watched and attribution reads
/proc as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import weakref

#: Errors that say pidfds cannot be had here at all (not that one process is gone).
_UNAVAILABLE = (errno.ENOSYS, errno.EPERM, errno.EACCES)


class ExitWatch:
    """A pidfd per watched pid, and one ``poll`` that says which of them are still running.

    Not thread-safe: one owner (the collector's sampling thread) uses it.
    """

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}  # pid -> its pidfd
        self._pids: dict[int, int] = {}  # pidfd -> its pid
        usable = hasattr(os, "pidfd_open") and hasattr(select, "poll")
        self._poll = select.poll() if usable else None
        # the pidfds are closed with the watch, even one that is never closed explicitly
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    @property
    def available(self) -> bool:
        return self._poll is not None

    def watch(self, pid: int) -> bool:
        """Watch the process that has ``pid`` now; False when it cannot be watched (it is
        gone, or pidfds are unavailable here). Watching a watched pid anew re-arms it."""
        if self._poll is None:
            return False
        self.forget(pid)
        try:
            fd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno in _UNAVAILABLE:
                self.close()  # not on this kernel or under this profile: never ask again
            return False
        self._fds[pid] = fd
        self._pids[fd] = pid
        self._poll.register(fd, select.POLLIN)
        return True

    def running(self) -> set[int]:
        """The watched pids whose process has not exited: each is still the very process
        that had that pid when it was watched (one ``poll`` call for all)."""
        if not self._fds or self._poll is None:
            return set()
        ended = {self._pids[fd] for fd, _ in self._poll.poll(0)}
        return self._fds.keys() - ended

    def forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is None:
            return
        del self._pids[fd]
        if self._poll is not None:
            self._poll.unregister(fd)
        os.close(fd)

    def close(self) -> None:
        """Close every pidfd and stop watching (``available`` becomes False)."""
        self._pids.clear()
        self._poll = None
        _close_all(self._fds)

    def __len__(self) -> int:
        return len(self._fds)


def _close_all(fds: dict[int, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
