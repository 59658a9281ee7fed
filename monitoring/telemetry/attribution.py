"""Say who owns each GPU process: user, command line, container and start time.

NVML reports a bare PID and its memory. Resolving the rest reads several /proc files per
process, so a resolution is kept per (pid, start time): a training job running for days is
looked up once, not every two seconds, and a recycled PID is never mistaken for the old one.
Checking that identity is the only per-tick cost: on Linux 5.3+ one ``poll`` of a pidfd per
process says which of them exited (:mod:`.pidfd`), and only those are read again; elsewhere
it is one read of ``/proc/<pid>/stat`` rather than psutil's object set-up (about 5x cheaper).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil

from monitoring.telemetry.cgroup import pid_namespace_hidden, read_container
from monitoring.telemetry.pidfd import ExitWatch
from monitoring.telemetry.redact import redact_command
from monitoring.telemetry.schema import Container, GpuProcess, GpuSample

try:
    import pwd
except ImportError:  # Windows: no /proc either, psutil alone answers there
    pwd = None  # type: ignore[assignment]

HIDDEN_NOTE = (
    "processes hidden — run with the host PID namespace (docker run --pid=host / hostPID: true)"
)
HIDDEN_REASON = "not visible from this PID namespace"
DENIED_REASON = "permission denied: run the collector as root to see other users' commands"
GONE_REASON = "process exited before it could be looked up"
NO_COMMAND_REASON = "no command line (kernel thread or zombie)"


@dataclass(slots=True)
class _Owner:
    """What one process resolved to; copied onto every GpuProcess with its pid."""

    create_time: float | None
    start_ticks: int | None = None  # /proc/<pid>/stat field 22: identity check without psutil
    name: str | None = None
    user: str | None = None
    command: str | None = None
    container: Container | None = None
    start_time: datetime | None = None
    unsupported: dict[str, str] = field(default_factory=dict)


#: What a process that exited before its look-up resolves to (shared: never modified).
_GONE = _Owner(None, unsupported={"user": GONE_REASON, "command": GONE_REASON})


class _Gone(Exception):
    """The process exited between NVML's list and our look-up."""


#: /proc/<pid>/stat is one line of ~52 numbers and a command name of at most 15 bytes.
_STAT_MAX = 4096


def _start_ticks(pid: int, proc_root: str) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat).

    None where there is no /proc (macOS, Windows) or it cannot be read; raises _Gone when the
    process no longer exists. Read with ``os.open``/``os.read``: it runs for every GPU
    process on every process tick, and Python's buffered file objects cost three times more.
    """
    try:
        fd = os.open(f"{proc_root}/{pid}/stat", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError) as exc:
        if os.path.isdir(proc_root):
            raise _Gone from exc
        return None
    except OSError:
        return None
    try:
        data = os.read(fd, _STAT_MAX)
    except ProcessLookupError as exc:  # exited between the open and the read
        raise _Gone from exc
    except OSError:
        return None
    finally:
        os.close(fd)
    # the command name (field 2) may hold spaces and parentheses: count from the last ")"
    try:
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def _user_from_status(pid: int, proc_root: str) -> str | None:
    """Owner from ``Uid:`` in /proc/<pid>/status, readable even where psutil was denied."""
    try:
        with open(os.path.join(proc_root, str(pid), "status"), encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    uid = int(line.split()[1])
                    break
            else:
                return None
    except (OSError, ValueError, IndexError):
        return None
    if pwd is None:
        return str(uid)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)  # a uid with no name here (e.g. from inside a container)


class ProcessAttributor:
    """Fills user, command, name, container and start time of GPU processes from /proc."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._owners: dict[int, _Owner] = {}
        # pidfds name this kernel's processes: of no use for a /proc tree from elsewhere
        self._watch = ExitWatch()
        if proc_root != "/proc":
            self._watch.close()

    def attribute(self, gpus: list[GpuSample]) -> None:
        reported = {proc.pid for gpu in gpus for proc in gpu.processes}
        # Forget processes NVML no longer reports, so the cache stays as small as the GPU list.
        for pid in self._owners.keys() - reported:
            del self._owners[pid]
            self._watch.forget(pid)
        if not reported:
            return
        running = self._watch.running()
        owners = {pid: self._owner(pid, pid in running) for pid in reported}
        # Every pid gone: either they all exited at once, or none of them is visible from
        # here (the common case of a container without the host PID namespace).
        if all(owner is _GONE for owner in owners.values()) and pid_namespace_hidden(
            reported, self.proc_root
        ):
            self._owners.clear()
            for gpu in gpus:
                if gpu.processes:
                    gpu.processes_note = HIDDEN_NOTE
                for proc in gpu.processes:
                    proc.unsupported.setdefault("user", HIDDEN_REASON)
                    proc.unsupported.setdefault("command", HIDDEN_REASON)
            return
        for gpu in gpus:
            for proc in gpu.processes:
                self._apply(proc, owners[proc.pid])

    def _owner(self, pid: int, running: bool) -> _Owner:
        """Who ``pid`` is; ``running``: its pidfd says it is the process looked up before."""
        cached = self._owners.get(pid)
        if running and cached is not None:
            return cached
        # watched before /proc is read, so the pidfd is of the process that read describes
        # (if that one exits in between, its pidfd says so on the next tick)
        self._watch.watch(pid)
        try:
            ticks = _start_ticks(pid, self.proc_root)
        except _Gone:
            self._forget(pid)
            return _GONE
        if cached is not None and ticks is not None:
            if cached.start_ticks == ticks:
                return cached
            cached = None  # same pid, another start: a recycled pid
        owner = self._owner_from_psutil(pid, cached)
        owner.start_ticks = ticks
        return owner

    def _owner_from_psutil(self, pid: int, cached: _Owner | None) -> _Owner:
        try:
            process = psutil.Process(pid)
            create_time = process.create_time()
        except psutil.NoSuchProcess:
            self._forget(pid)
            return _GONE
        except psutil.AccessDenied:
            process, create_time = None, None
        if cached is not None and create_time is not None and cached.create_time == create_time:
            return cached
        owner = self._resolve(pid, process, create_time)
        self._owners[pid] = owner
        return owner

    def _forget(self, pid: int) -> None:
        self._owners.pop(pid, None)
        self._watch.forget(pid)

    def _resolve(
        self, pid: int, process: psutil.Process | None, create_time: float | None
    ) -> _Owner:
        owner = _Owner(create_time)
        if create_time is not None:
            owner.start_time = datetime.fromtimestamp(create_time, UTC)
        owner.container = read_container(pid, self.proc_root)
        if process is None:
            owner.user = _user_from_status(pid, self.proc_root)
            owner.unsupported["command"] = DENIED_REASON
            return owner
        try:
            with process.oneshot():
                owner.name = _quiet(process.name)
                try:
                    owner.user = process.username()
                except psutil.AccessDenied:
                    owner.user = _user_from_status(pid, self.proc_root)
                argv = process.cmdline()
        except psutil.AccessDenied:
            owner.user = owner.user or _user_from_status(pid, self.proc_root)
            owner.unsupported["command"] = DENIED_REASON
        except psutil.NoSuchProcess:
            owner.unsupported["command"] = GONE_REASON
        else:
            if argv:
                owner.command = redact_command(argv)
            else:
                owner.unsupported["command"] = NO_COMMAND_REASON
        if owner.user is None:
            owner.unsupported.setdefault("user", DENIED_REASON)
        return owner

    @staticmethod
    def _apply(proc: GpuProcess, owner: _Owner) -> None:
        proc.user = owner.user
        proc.command = owner.command
        proc.container = owner.container
        proc.start_time = owner.start_time
        if proc.name is None:
            proc.name = owner.name
        for name, reason in owner.unsupported.items():
            proc.unsupported.setdefault(name, reason)


def _quiet(read) -> str | None:
    """A psutil getter that may be denied on its own, without failing the rest."""
    try:
        return read()
    except psutil.AccessDenied:
        return None
