"""Is Hoof Hearted working? The database, the channel layer and each host's newest sample.

What ``GET /api/health`` answers for load balancers, container health checks and people:
every check with its result, and ``reasons``, one line per failed check. Healthy means the
database answers, the channel layer answers, and at least one host has a sample younger
than ``STALE_AFTER_S`` while no host is older (a worker that died, or a database that keeps
the worker's writes out, shows here as a stale host).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError, connections

from monitoring.storage.db_errors import unavailable_reason
from monitoring.storage.latest import latest_snapshots
from monitoring.telemetry.serialize import to_data

#: What can be checked (``?checks=``); a container probe of the web server leaves out samples,
#: which are the worker's business.
CHECKS = ("database", "channel-layer", "samples")
#: Longest wait for the channel layer before it counts as unreachable.
CHANNEL_LAYER_TIMEOUT_S = 2.0
_PROBE_GROUP = "hoofhearted-health-probe"


@dataclass(frozen=True, slots=True)
class Freshness:
    """How old a host's newest sample is (seconds, never negative) and whether that is stale."""

    age_s: float
    stale: bool


def freshness(newest: datetime, now: datetime, stale_after_s: float) -> Freshness:
    """The one rule for "is its collector running": the newest sample is at most
    ``stale_after_s`` old (``STALE_AFTER_S``). Health, ``/metrics``, the live page's status and
    its hosts overview all date a host with it, so they never disagree."""
    age = max(0.0, (now - newest).total_seconds())
    return Freshness(age, age > stale_after_s)


def version() -> str:
    try:
        return metadata.version("hoofhearted")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


@dataclass(slots=True)
class Health:
    checks: dict[str, Any] = field(default_factory=dict)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_data(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unhealthy",
            "version": version(),
            "reasons": self.reasons,
            "checks": self.checks,
            "hosts": self.hosts,
        }


def check_database(
    health: Health, host: str | None, stale_after_s: float, now: datetime, samples: bool = True
) -> None:
    """One query: the latest snapshot rows prove the database answers and date each host
    (a stale or missing host is a failure when ``samples`` is checked)."""
    started = time.perf_counter()
    try:
        rows = latest_snapshots(host)
    except DatabaseError as exc:
        reason = unavailable_reason(exc) or f"the database failed: {type(exc).__name__}: {exc}"
        for conn in connections.all(initialized_only=True):  # a new one next time
            conn.close_if_unusable_or_obsolete()
        health.checks["database"] = {"ok": False, "error": reason}
        health.reasons.append(reason)
        return
    health.checks["database"] = {
        "ok": True,
        "vendor": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "latencyMs": round((time.perf_counter() - started) * 1000, 1),
    }
    for row in rows:
        fresh = freshness(row.time, now, stale_after_s)
        age, stale = fresh.age_s, fresh.stale
        health.hosts.append(
            to_data(
                {
                    "host": row.host.name,
                    "newestSample": row.time,
                    "ageSeconds": age,
                    "stale": stale,
                    "worker": row.worker,
                }
            )
        )
        if stale and samples:
            health.reasons.append(
                f"host {row.host.name!r}: newest sample is {age:.0f} s old (stale after "
                f"{stale_after_s:g} s): is its worker (manage.py collect) running and writing?"
            )
    if not rows and samples:
        health.reasons.append(
            f"no sample of host {host!r} yet"
            if host is not None
            else "no sample yet: start the worker (manage.py collect)"
        )


async def _probe_channel_layer() -> str:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured (CHANNEL_LAYERS)")
    # A send to a group nobody is in: a round trip to Redis, a no-op in memory.
    async with asyncio.timeout(CHANNEL_LAYER_TIMEOUT_S):
        await layer.group_send(_PROBE_GROUP, {"type": "health.probe"})
    return type(layer).__name__


def check_channel_layer(health: Health) -> None:
    started = time.perf_counter()
    try:
        backend = async_to_sync(_probe_channel_layer)()
    except Exception as exc:  # refused, timed out, misconfigured: all mean no live updates
        detail = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        reason = f"the channel layer cannot be reached ({detail}): live updates are not delivered"
        health.checks["channelLayer"] = {"ok": False, "error": reason}
        health.reasons.append(reason)
        return
    health.checks["channelLayer"] = {
        "ok": True,
        "backend": backend,
        "latencyMs": round((time.perf_counter() - started) * 1000, 1),
    }


def health_report(
    host: str | None, stale_after_s: float, now: datetime, checks: tuple[str, ...] = CHECKS
) -> Health:
    """Run ``checks`` (any of :data:`CHECKS`); ``samples`` reads the database too."""
    health = Health()
    if "database" in checks or "samples" in checks:
        check_database(health, host, stale_after_s, now, samples="samples" in checks)
    if "channel-layer" in checks:
        check_channel_layer(health)
    return health
