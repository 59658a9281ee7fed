"""The "unexpected GPU user" rule: a process nobody allowed keeps a GPU busy for too long.

The unattended box mining for someone else, the forgotten notebook holding 20 GiB: a process
that is not on the allow-list (process name, user or container patterns) and holds at least
``min_memory_mib`` of GPU memory or ``min_sm_utilization`` % SM for longer than
``busy_for_s`` opens a warning naming pid, process, user, container, GPU, memory and for how
long. It clears when the process leaves the GPU (or is allow-listed, or the rule is turned
off) - not when it merely idles, so a notebook pausing between cells does not flap.

A process is tracked by (GPU UUID, pid, start time), as process sessions are. A GPU whose
process list could not be read this tick (GPU lost, list unsupported, source down) changes
nothing: absence of evidence is not a process leaving. No Django here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from monitoring.alerting.rules import WARNING, AllowList, UnexpectedUserConfig
from monitoring.alerting.text import describe_gpu, for_duration
from monitoring.records import AlertRecord
from monitoring.storage.sessions import container_label
from monitoring.telemetry import format as fmt
from monitoring.telemetry.schema import GPU_OK, STATUS_OK, GpuProcess, GpuSample, Snapshot

RULE_UNEXPECTED_USER = "unexpected_user"
METRIC = "memory_used_mib"  # the alert's value: the process's GPU memory, MiB
UPDATE_EVERY_S = 30.0

ProcessKey = tuple[str, int, datetime | None]


#: The key a GPU is stored under (``Gpu.uuid``), from its sample: per-GPU rules name it and
#: alerts are linked to their GPU by it. The worker passes its host's ``gpu_storage_key``.
StorageKey = Callable[[GpuSample], str | None]


def reported_uuid(gpu: GpuSample) -> str | None:
    """The storage key where no host is known: the GPU's UUID, None without one."""
    return gpu.uuid


def gpu_key(uuid: str | None, index: int) -> str:
    """A GPU's identity in alert keys: its UUID, or its index when the source gives none."""
    return uuid or f"#{index}"


def is_busy(proc: GpuProcess, config: UnexpectedUserConfig) -> bool | None:
    """Whether ``proc`` holds its GPU; None when the source gave neither figure."""
    memory, sm = proc.used_memory_mib, proc.sm_utilization
    if memory is not None and memory >= config.min_memory_mib:
        return True
    if sm is not None and sm >= config.min_sm_utilization:
        return True
    if memory is None and sm is None:
        return None
    return False


def describe_process(proc: GpuProcess) -> str:
    """``pid 448 python3, user root, no container``."""
    container = container_label(proc.container)
    return (
        f"pid {proc.pid} {proc.name or '(unknown process)'}, user {proc.user or 'unknown'}, "
        f"{f'container {container}' if container else 'no container'}"
    )


@dataclass(slots=True)
class _Suspect:
    """A process busy on a GPU and not allowed: since when, and its alert once open."""

    key: ProcessKey
    gpu_uuid: str | None
    where: str
    proc: GpuProcess
    busy_since: datetime
    peak_memory: int | None = None
    alert: AlertRecord | None = None
    sent_at: datetime | None = None
    sent_peak: int | None = None


class UnexpectedUserTracker:
    """Feeds on snapshots; returns only the changes (opened, peak updates, cleared)."""

    def __init__(
        self,
        allow: AllowList,
        config: UnexpectedUserConfig,
        *,
        update_every_s: float = UPDATE_EVERY_S,
        storage_key: StorageKey = reported_uuid,
    ) -> None:
        self._allow = allow
        self._config = config
        self._update_every_s = update_every_s
        self._storage_key = storage_key
        self._suspects: dict[ProcessKey, _Suspect] = {}

    def update(self, allow: AllowList, config: UnexpectedUserConfig) -> None:
        """New rules; a process now allowed (or a rule now off) clears on the next snapshot."""
        self._allow = allow
        self._config = config

    @property
    def active(self) -> list[AlertRecord]:
        return [replace(s.alert) for s in self._suspects.values() if s.alert is not None]

    def evaluate(self, snapshot: Snapshot, now: datetime) -> list[AlertRecord]:
        out: list[AlertRecord] = []
        if not self._config.enabled:
            for suspect in self._suspects.values():
                if suspect.alert is not None:
                    out.append(self._close(suspect, now, "the rule was turned off"))
            self._suspects.clear()
            return out

        host = snapshot.host.hostname
        present: set[str] = set()
        unknown: set[str] = set()  # GPUs whose process list says nothing this tick
        seen: set[ProcessKey] = set()
        for gpu in snapshot.gpus:
            gid = gpu_key(gpu.uuid, gpu.index)
            present.add(gid)
            if gpu.state != GPU_OK or "processes" in gpu.unsupported:
                unknown.add(gid)
                continue
            where = describe_gpu(gpu, host)
            for proc in gpu.processes:
                key = (gid, proc.pid, proc.start_time)
                seen.add(key)
                change = self._see(key, self._storage_key(gpu), where, proc, now)
                if change is not None:
                    out.append(change)

        source_answered = snapshot.driver.status == STATUS_OK
        for key in [k for k in self._suspects if k not in seen]:
            gid = key[0]
            if gid in unknown or (gid not in present and not source_answered):
                continue
            suspect = self._suspects.pop(key)
            if suspect.alert is not None:
                out.append(self._close(suspect, now, f"left after {self._held(suspect, now)}"))
        return out

    # --- one process -------------------------------------------------------------------------

    def _see(
        self, key: ProcessKey, uuid: str | None, where: str, proc: GpuProcess, now: datetime
    ) -> AlertRecord | None:
        suspect = self._suspects.get(key)
        if self._allow.allows(proc):
            if suspect is None:
                return None
            del self._suspects[key]
            return self._close(suspect, now, "is now allow-listed") if suspect.alert else None
        busy = is_busy(proc, self._config)
        if busy is None:  # no figure this tick: neither counts nor resets
            if suspect is not None:
                suspect.proc = proc
            return None
        if not busy and (suspect is None or suspect.alert is None):
            self._suspects.pop(key, None)  # idle before its time was up: the clock restarts
            return None
        if suspect is None:
            suspect = self._suspects[key] = _Suspect(key, uuid, where, proc, busy_since=now)
        suspect.proc = proc
        suspect.where = where
        memory = proc.used_memory_mib
        if memory is not None and (suspect.peak_memory is None or memory > suspect.peak_memory):
            suspect.peak_memory = memory
        if suspect.alert is None:
            if (now - suspect.busy_since).total_seconds() >= self._config.busy_for_s:
                return self._open(suspect, now)
            return None
        alert = suspect.alert
        alert.value = memory
        alert.peak_value = suspect.peak_memory
        grew = suspect.peak_memory is not None and (
            suspect.sent_peak is None or suspect.peak_memory > suspect.sent_peak
        )
        due = suspect.sent_at is None or (
            (now - suspect.sent_at).total_seconds() >= self._update_every_s
        )
        return self._sent(suspect, now) if grew and due else None

    def _open(self, suspect: _Suspect, now: datetime) -> AlertRecord:
        proc = suspect.proc
        sm = f" at {fmt.percent(proc.sm_utilization)} SM" if proc.sm_utilization else ""
        pid, start = proc.pid, proc.start_time
        suspect.alert = AlertRecord(
            key=f"{RULE_UNEXPECTED_USER}:{suspect.key[0]}:{pid}:{start.isoformat() if start else '-'}",
            rule=RULE_UNEXPECTED_USER,
            metric=METRIC,
            severity=WARNING,
            started_at=now,
            message=(
                f"Unexpected GPU user on {suspect.where}: {describe_process(proc)}, holding "
                f"{fmt.mib(proc.used_memory_mib)} of GPU memory{sm}"
                f"{for_duration(now - suspect.busy_since)}"
            ),
            value=proc.used_memory_mib,
            peak_value=suspect.peak_memory,
            gpu_uuid=suspect.gpu_uuid,
            pid=pid,
        )
        return self._sent(suspect, now)

    def _close(self, suspect: _Suspect, now: datetime, why: str) -> AlertRecord:
        assert suspect.alert is not None
        alert = suspect.alert
        alert.ended_at = now
        alert.message = (
            f"Unexpected GPU user on {suspect.where} cleared: {describe_process(suspect.proc)}; "
            f"{why} (peak {fmt.mib(suspect.peak_memory)} of GPU memory)"
        )
        suspect.alert = None
        return replace(alert)

    def _sent(self, suspect: _Suspect, now: datetime) -> AlertRecord:
        assert suspect.alert is not None
        suspect.sent_at = now
        suspect.sent_peak = suspect.peak_memory
        return replace(suspect.alert)

    @staticmethod
    def _held(suspect: _Suspect, now: datetime) -> str:
        return fmt.duration((now - suspect.busy_since).total_seconds())
