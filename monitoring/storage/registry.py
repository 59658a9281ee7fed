"""Host and GPU rows for a batch of snapshots: upserted once, then served from a cache.

Every sample row needs its GPU's id, and a worker writes the same few GPUs for months, so
the ids are kept in process (uuid -> id) with the attributes last written. A steady-state
flush then costs no statement at all here, and every ``LAST_SEEN_EVERY`` (of sample time)
one UPDATE of ``last_seen`` for the host and one for its GPUs: ``last_seen`` says whether a
host or GPU still reports, the samples carry the exact times. A row is re-read or re-written
only when something changed (a new GPU, an index after a reboot, a driver upgrade, a GPU
lost). GPUs are keyed by UUID, which survives reordering; the index is just an attribute.
A GPU whose source gives no UUID is keyed by its host and PCI bus id, else its host and
index (:func:`gpu_storage_key`), so its history is kept too.

A GPU row belongs to one host. A GPU another host reported within ``STALE_AFTER_S`` is not
taken over (:class:`GpuHeld`: a second worker on the same machine under another name would
otherwise move the row, and the first worker's samples and sessions with it); one whose host
has been silent longer moves here (it was moved to this machine, or its host renamed), logged.

Must be used inside the flush transaction; if that transaction rolls back, call
:meth:`HostGpuRegistry.reset` so no id of a row that was never committed is served later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections

from monitoring.models import Gpu, Host
from monitoring.telemetry.schema import GPU_LOST, GpuSample, Snapshot

log = logging.getLogger(__name__)

LAST_SEEN_EVERY = timedelta(seconds=10)
#: ``Gpu.uuid``'s length: a host name (255) and a bus id (32) with their prefixes fit.
MAX_GPU_KEY = Gpu._meta.get_field("uuid").max_length


class GpuHeld(Exception):
    """A GPU this worker samples is reported by another host that is still running: its
    worker collects for it under another name. Raised inside the flush transaction, so
    nothing of the batch is written; the message is the one line the operator reads."""


def gpu_storage_key(host_name: str, gpu: GpuSample) -> str:
    """The key a GPU's rows are stored under (``Gpu.uuid``): its UUID, which survives a
    reordering; a GPU whose source gives none (a ``--query-gpu`` CSV without ``uuid``, nvtop
    on AMD, Intel, Apple) gets ``<host>/pci:<bus id>``, else ``<host>/index:<n>``: stable as
    long as the GPU keeps its slot, and scoped by host since keys are unique across hosts.
    A UUID never holds ``/``, so the two kinds cannot collide."""
    return gpu.uuid or f"{host_name}/{gpu.identity}"[:MAX_GPU_KEY]


def event_gpu_key(host_name: str, uuid: str | None, data: dict) -> str | None:
    """:func:`gpu_storage_key` of the GPU an event is about, from its UUID, else from the
    ``index`` and ``pciBusId`` the event's data carries (None: the event names no GPU)."""
    if uuid:
        return uuid
    index = data.get("index")
    if not isinstance(index, int):
        return None
    bus = data.get("pciBusId")
    return gpu_storage_key(host_name, GpuSample(index=index, name=None, uuid=None, pci_bus_id=bus))


def _text(value: object | None, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


@dataclass(frozen=True, slots=True)
class _GpuFacts:
    host_id: int
    index: int
    name: str
    pci_bus_id: str
    memory_total_mib: int | None
    power_limit_w: float | None
    state: str


def gpu_facts(host_id: int, gpu: GpuSample) -> _GpuFacts:
    """What the Gpu row says about one GPU sample (``state`` lost/ok from the sample)."""
    return _GpuFacts(
        host_id=host_id,
        index=gpu.index,
        name=_text(gpu.name, 128),
        pci_bus_id=_text(gpu.pci_bus_id, 32),
        memory_total_mib=gpu.memory_total,
        power_limit_w=gpu.power_limit,
        state=Gpu.STATE_LOST if gpu.state == GPU_LOST else Gpu.STATE_OK,
    )


def host_facts(snapshot: Snapshot) -> dict[str, object]:
    """The Host row's descriptive columns, from the newest snapshot of a batch."""
    host, driver = snapshot.host, snapshot.driver
    memory = host.memory_total if host.memory_total is not None else snapshot.system.memory_total
    return {
        "os": _text(host.os, 255),
        "kernel": _text(host.kernel, 255),
        "cpu_model": _text(host.cpu_model, 255),
        "cores": host.cores,
        "memory_total_mib": memory,
        "boot_time": host.boot_time,
        "driver_version": _text(driver.driver_version, 64),
        "cuda_version": _text(driver.cuda_version, 32),
        "gpu_source": _text(driver.source, 16),
    }


class HostGpuRegistry:
    """Row ids of one host and its GPUs, upserted from snapshots (one per worker)."""

    def __init__(
        self, host_name: str, *, using: str = "default", held_for_s: float | None = None
    ) -> None:
        self.host_name = host_name
        self.using = using
        #: another host that reported a GPU this recently still has it (seconds)
        self.held_for = timedelta(
            seconds=settings.STALE_AFTER_S if held_for_s is None else held_for_s
        )
        self._host_id: int | None = None
        self._host_facts: dict[str, object] | None = None
        self._gpus: dict[str, tuple[int, _GpuFacts]] = {}
        self._unknown_uuids: set[str] = set()  # looked up, no row: not asked again
        self._host_seen: datetime | None = None  # last_seen as last written
        self._gpu_seen: dict[str, datetime] = {}

    def reset(self) -> None:
        """Forget every cached id (after a rollback, the rows may not exist)."""
        self._host_id = None
        self._host_facts = None
        self._gpus.clear()
        self._unknown_uuids.clear()
        self._host_seen = None
        self._gpu_seen.clear()

    # -- host ---------------------------------------------------------------------------------

    def host_id(self, latest: Snapshot | None = None, *, seen: datetime | None = None) -> int:
        """The host's row id; creates or updates the row from ``latest`` and marks it seen."""
        rows = Host.objects.using(self.using)
        facts = host_facts(latest) if latest is not None else None
        if self._host_id is None:
            defaults = dict(facts or {})
            if seen is not None:
                defaults.update(first_seen=seen, last_seen=seen)
            host, created = rows.get_or_create(name=self.host_name, defaults=defaults)
            self._host_id = host.pk
            if created:
                self._host_seen = seen
            self._host_facts = (
                {key: getattr(host, key) for key in facts} if facts is not None else None
            )
        changes: dict[str, object] = {}
        if facts is not None and facts != self._host_facts:
            changes.update(facts)
        if seen is not None and (changes or _due(self._host_seen, seen)):
            changes["last_seen"] = seen
            self._host_seen = seen
        if set(changes) == {"last_seen"}:
            _touch(self.using, Host, [self._host_id], seen)
        elif changes:
            rows.filter(pk=self._host_id).update(**changes)
            if facts is not None:
                self._host_facts = facts
        return self._host_id

    # -- GPUs ---------------------------------------------------------------------------------

    def key(self, gpu: GpuSample) -> str:
        """This host's storage key of ``gpu`` (:func:`gpu_storage_key`)."""
        return gpu.uuid or gpu_storage_key(self.host_name, gpu)

    def gpu_ids(self, host_id: int, snapshots: Sequence[Snapshot]) -> dict[str, int]:
        """key -> row id for every GPU in ``snapshots`` (:meth:`key`: its UUID, else host
        and bus id or index); upserts what changed and marks them all seen at the time of
        the last snapshot that had them."""
        latest: dict[str, tuple[datetime, GpuSample]] = {}
        key = self.key
        for snapshot in snapshots:
            for gpu in snapshot.gpus:
                if gpu.uuid or gpu.state != GPU_LOST:
                    latest[key(gpu)] = (snapshot.timestamp, gpu)
                    continue
                lost = self._lost_key(gpu)
                if lost is not None:
                    latest[lost] = (snapshot.timestamp, gpu)
        if not latest:
            return {}
        rows = Gpu.objects.using(self.using)
        missing = [uuid for uuid in latest if uuid not in self._gpus]
        if missing:
            for gpu_row in rows.filter(uuid__in=missing):
                self._gpus[gpu_row.uuid] = (gpu_row.pk, self._row_facts(gpu_row))
        seen_at: dict[datetime, list[int]] = {}
        for uuid, (time, gpu) in latest.items():
            facts = gpu_facts(host_id, gpu)
            cached = self._gpus.get(uuid)
            if cached is None:
                row = rows.create(
                    uuid=uuid, first_seen=time, last_seen=time, **self._facts_kwargs(facts)
                )
                self._gpus[uuid] = (row.pk, facts)
                self._gpu_seen[uuid] = time
                self._unknown_uuids.discard(uuid)
                log.info("new GPU %s (index %d) on %s", uuid, gpu.index, self.host_name)
                continue
            pk, old = cached
            if old.host_id != host_id:
                self._take_over(uuid, old.host_id, time)
            if facts != old:  # the steady case costs one comparison, no merge
                facts = _merge(old, facts)
            if facts != old:
                rows.filter(pk=pk).update(last_seen=time, **self._facts_kwargs(facts))
                self._gpus[uuid] = (pk, facts)
                self._gpu_seen[uuid] = time
                if old.index != facts.index:
                    log.info("GPU %s moved from index %d to %d", uuid, old.index, facts.index)
                continue
            if _due(self._gpu_seen.get(uuid), time):
                seen_at.setdefault(time, []).append(pk)
                self._gpu_seen[uuid] = time
        for time, pks in seen_at.items():
            _touch(self.using, Gpu, pks, time)
        return {uuid: self._gpus[uuid][0] for uuid in latest}

    def _take_over(self, uuid: str, owner_id: int, time: datetime) -> None:
        """Let this host have a GPU another host's row has, if that host is silent: raises
        :class:`GpuHeld` if it reported within ``held_for`` of ``time`` (this sample's
        time), by its newest sample or its ``last_seen``; else logs the move."""
        owner = (
            Host.objects.using(self.using)
            .filter(pk=owner_id)
            .values_list("name", "last_seen", "latest__time")
            .first()
        )
        if owner is None:
            return
        name, *times = owner
        seen = max((t for t in times if t is not None), default=None)
        if seen is not None and seen > time - self.held_for:
            raise GpuHeld(
                f"GPU {uuid} is reported by host {name!r} ({_ago(time, seen)}): another collect "
                f"worker runs for it under that name, so this one, for host {self.host_name!r}, "
                f"stops without writing; stop the other worker, or give this one the same "
                f"name (HOOFHEARTED_HOST_NAME={name} or --host-name {name})"
            )
        log.warning(
            "GPU %s moves from host %r (%s) to %r",
            uuid,
            name,
            "no time seen" if seen is None else f"silent since {seen:%Y-%m-%d %H:%M:%S} UTC",
            self.host_name,
        )

    def _lost_key(self, gpu: GpuSample) -> str | None:
        """The key of a lost GPU that no longer says its UUID (nvidia-smi reads "GPU requires
        reset" for it): the row of this host's GPU on the same bus, else the row its fallback
        key already has; None rather than a new row for a GPU that never reported."""
        if gpu.pci_bus_id:
            for uuid, (_pk, facts) in self._gpus.items():
                if facts.pci_bus_id == gpu.pci_bus_id and "/" not in uuid:
                    return uuid
        key = self.key(gpu)
        return key if self.gpu_id(key) is not None else None

    def gpu_id(self, uuid: str | None) -> int | None:
        """The row id of a GPU by UUID (for events and alerts), or None if it has no row."""
        if not uuid:
            return None
        cached = self._gpus.get(uuid)
        if cached is not None:
            return cached[0]
        if uuid in self._unknown_uuids:
            return None
        row = Gpu.objects.using(self.using).filter(uuid=uuid).first()
        if row is None:
            self._unknown_uuids.add(uuid)
            return None
        self._gpus[uuid] = (row.pk, self._row_facts(row))
        return row.pk

    def mark_state(self, uuids: Iterable[str], state: str) -> None:
        """Set the state of GPUs (``gone`` when the worker says one was removed)."""
        for uuid in uuids:
            pk = self.gpu_id(uuid)
            if pk is None:
                continue
            Gpu.objects.using(self.using).filter(pk=pk).update(state=state)
            _pk, facts = self._gpus[uuid]
            self._gpus[uuid] = (pk, _replace_state(facts, state))

    @staticmethod
    def _row_facts(row: Gpu) -> _GpuFacts:
        return _GpuFacts(
            host_id=row.host_id,
            index=row.index,
            name=row.name,
            pci_bus_id=row.pci_bus_id,
            memory_total_mib=row.memory_total_mib,
            power_limit_w=row.power_limit_w,
            state=row.state,
        )

    @staticmethod
    def _facts_kwargs(facts: _GpuFacts) -> dict[str, object]:
        return {
            "host_id": facts.host_id,
            "index": facts.index,
            "name": facts.name,
            "pci_bus_id": facts.pci_bus_id,
            "memory_total_mib": facts.memory_total_mib,
            "power_limit_w": facts.power_limit_w,
            "state": facts.state,
        }


def _ago(now: datetime, then: datetime) -> str:
    seconds = (now - then).total_seconds()
    return f"its last sample {seconds:.0f} s ago" if seconds >= 0.5 else "its last sample just now"


def _due(written: datetime | None, now: datetime) -> bool:
    return written is None or now - written >= LAST_SEEN_EVERY


def _touch(using: str, model, pks: list[int], time: datetime) -> None:
    """``UPDATE … SET last_seen`` in plain SQL: the steady-state statement of every flush,
    where the ORM's query compilation cost more than the database's work."""
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = model._meta
    marks = ", ".join(["%s"] * len(pks))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {quote(meta.get_field('last_seen').column)} = %s "
            f"WHERE {quote(meta.pk.column)} IN ({marks})",
            [connection.ops.adapt_datetimefield_value(time), *pks],
        )


def _replace_state(facts: _GpuFacts, state: str) -> _GpuFacts:
    return replace(facts, state=state)


def _merge(old: _GpuFacts, new: _GpuFacts) -> _GpuFacts:
    """``new``, keeping what ``old`` knew where ``new`` has nothing (a lost GPU reports no
    name or memory, a figure of the slow tier may be missing on one tick)."""
    return replace(
        new,
        name=new.name or old.name,
        pci_bus_id=new.pci_bus_id or old.pci_bus_id,
        memory_total_mib=old.memory_total_mib
        if new.memory_total_mib is None
        else new.memory_total_mib,
        power_limit_w=old.power_limit_w if new.power_limit_w is None else new.power_limit_w,
    )
