"""Operator endpoints: ``/api/health``, ``/api/config`` and ``/api/snapshot``.

``GET /api/health[?host=][&stale=SECONDS][&checks=database,channel-layer,samples]``: 200
when the database and the channel layer answer and every host's newest sample is fresh, else
503 with ``reasons`` (see :mod:`dashboard.health`); ``checks`` narrows what counts (a
container probe of the web server leaves ``samples`` to the worker's own probe). ``GET /api/config``: the settings the page runs on (intervals,
paces, limits, metrics), no database. ``GET /api/snapshot[?host=]``: the latest snapshot of
each host in the documented camelCase schema (what ``collect --once --json`` prints), or of
one host. A bad parameter is a 400 naming it.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from dashboard.health import CHECKS, health_report, version
from dashboard.hub import PACES
from dashboard.methods import read_only
from dashboard.params import BadParameter, bad_parameter, choices_param, name_param, number_param
from monitoring.metrics import GPU_METRICS, HOST_METRICS, RENAMED
from monitoring.storage.history import MAX_POINTS
from monitoring.storage.latest import latest_snapshots

#: Longest staleness threshold a caller may ask for: one day.
MAX_STALE_S = 86_400


@read_only
@never_cache
def health(request: HttpRequest) -> HttpResponse:
    try:
        host = name_param(request.GET, "host")
        stale = number_param(request.GET, "stale", settings.STALE_AFTER_S, 1, MAX_STALE_S)
        checks = choices_param(request.GET, "checks", CHECKS)
    except BadParameter as error:
        return bad_parameter(error)
    report = health_report(host, stale, timezone.now(), checks)
    response = JsonResponse(report.as_data(), status=200 if report.ok else 503)
    if not report.ok:
        response["Retry-After"] = "10"
    return response


def _metrics(registry: dict) -> list[dict]:
    """Each metric's name, words and unit; ``formerly``: the old names still accepted."""
    return [
        {
            "key": m.key,
            "label": m.label,
            "unit": m.unit,
            "history": m.stored,
            "formerly": [old for old, new in RENAMED.items() if new == m.key],
        }
        for m in registry.values()
    ]


@read_only
def config(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "version": version(),
            "hostName": settings.HOST_NAME,
            "pollIntervalMs": settings.POLL_INTERVAL_MS,
            "processIntervalMs": settings.PROCESS_INTERVAL_MS,
            "slowIntervalMs": settings.SLOW_INTERVAL_MS,
            "topProcessesIntervalMs": settings.TOP_PROCESSES_INTERVAL_MS,
            "flushIntervalMs": settings.FLUSH_INTERVAL_MS,
            "staleAfterS": settings.STALE_AFTER_S,
            # the viewer's choices on the live page: seconds between frames (0: every tick)
            "paces": {name: seconds for name, seconds in PACES.items()},
            "liveWebSocket": "/ws/live/",
            "history": {
                "maxPoints": MAX_POINTS,
                "retentionRawHours": settings.RETENTION_RAW_HOURS,
                "retentionMinuteDays": settings.RETENTION_MINUTE_DAYS,
                "retentionHourDays": settings.RETENTION_HOUR_DAYS,
            },
            "metrics": {"gpu": _metrics(GPU_METRICS), "host": _metrics(HOST_METRICS)},
        }
    )


@read_only
@never_cache
def snapshot(request: HttpRequest) -> HttpResponse:
    try:
        host = name_param(request.GET, "host")
    except BadParameter as error:
        return bad_parameter(error)
    rows = latest_snapshots(host)
    if host is None:
        return JsonResponse({"snapshots": [row.data for row in rows]})
    if not rows:
        return JsonResponse(
            {"error": f"no snapshot of host {host!r} yet", "parameter": "host"}, status=404
        )
    return JsonResponse(rows[0].data)
