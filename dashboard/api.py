"""``GET /api/history``: one metric of one GPU (or the host) as a downsampled series.

The view is thin: ``parse_history_query`` turns the query string into a ``HistoryQuery``
(pure, no database), ``monitoring.storage.history.history_series`` answers it, and the view only
renders JSON or CSV. Every bad parameter is a ``HistoryError`` naming it, answered with a
400 and ``{"error": …, "parameter": …}``, never a 500. A database that is away or lacks
its tables is a 503 saying so (``hoofhearted.middleware``), not a stack trace.

``metric=`` also takes a metric's old name (``monitoring.metrics.RENAMED``: ``memory_used``
before it was ``memory_used_mib``): the series is answered under the current name and the
JSON's ``renamed_from`` says which name was asked, so old bookmarks and CSV links keep working.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from dashboard.methods import read_only
from dashboard.params import bad_parameter, name_param
from monitoring.storage.history import (
    MAX_POINTS,
    HistoryError,
    Series,
    check_metric,
    history_series,
)
from monitoring.storage.times import as_utc
from monitoring.telemetry.serialize import to_data

FORMATS = ("json", "csv")
DEFAULT_RANGE = timedelta(hours=1)
DEFAULT_POINTS = 500
_RELATIVE = re.compile(r"-(\d{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TIME_HELP = "an ISO-8601 time (2025-01-31T12:00:00Z), 'now', or relative to now (-30m, -24h, -7d)"


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    host: str | None
    gpu: str | None
    metric: str
    start: datetime
    end: datetime
    points: int
    format: str
    renamed_from: str | None = None  # the old name the request gave (metrics.RENAMED)


def parse_time(text: str, now: datetime, param: str) -> datetime:
    """ISO-8601 (``Z`` or an offset; naive is UTC), ``now``, or ``-<n><s|m|h|d|w>``."""
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative:
        try:
            return now - timedelta(**{_UNITS[relative[2]]: int(relative[1])})
        except OverflowError:
            raise HistoryError(param, f"{param}={text!r} is before the year 1") from None
    try:
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        raise HistoryError(param, f"{param}={text!r} is not {_TIME_HELP}") from None


def parse_history_query(params: Mapping[str, str], now: datetime) -> HistoryQuery:
    """Validate the query string; raises ``HistoryError`` naming the first bad parameter."""
    host = name_param(params, "host")
    gpu = name_param(params, "gpu")
    asked = params.get("metric", "").strip()
    if not asked:
        raise HistoryError("metric", "metric= is required")
    metric = check_metric(asked, for_gpu=gpu is not None)
    end = parse_time(params["to"], now, "to") if params.get("to") else now
    start = parse_time(params["from"], now, "from") if params.get("from") else None
    if start is None:
        try:
            start = end - DEFAULT_RANGE
        except OverflowError:
            raise HistoryError("to", "to= is too early for the default one-hour range") from None
    if start >= end:
        raise HistoryError("from", "from= must be before to=")
    raw_points = params.get("points", "").strip()
    try:
        points = int(raw_points) if raw_points else DEFAULT_POINTS
    except ValueError:
        raise HistoryError("points", f"points={raw_points!r} is not a whole number") from None
    if not 1 <= points <= MAX_POINTS:
        raise HistoryError("points", f"points={points} must be between 1 and {MAX_POINTS}")
    output = params.get("format", "").strip().lower() or "json"
    if output not in FORMATS:
        raise HistoryError("format", f"format={output!r} must be one of: {', '.join(FORMATS)}")
    renamed_from = asked if asked != metric else None
    return HistoryQuery(host, gpu, metric, start, end, points, output, renamed_from)


def series_data(series: Series) -> dict:
    """The JSON body (times ISO-8601 UTC with ``Z``, floats as the telemetry JSON rounds them)."""
    return to_data(
        {
            "host": series.host,
            "gpu": series.gpu,
            "gpu_uuid": series.gpu_uuid,
            "metric": series.metric,
            "unit": series.unit,
            "resolution": series.resolution,
            "from": series.start,
            "to": series.end,
            "points": [{"t": p.t, "min": p.min, "avg": p.avg, "max": p.max} for p in series.points],
        }
    )


def series_csv(series: Series) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "min", "avg", "max"])
    for point in series.points:
        writer.writerow(to_data([point.t, point.min, point.avg, point.max]))
    return out.getvalue()


@read_only
def history(request: HttpRequest) -> HttpResponse:
    try:
        query = parse_history_query(request.GET, timezone.now())
        series = history_series(
            query.host, query.gpu, query.metric, query.start, query.end, query.points
        )
    except HistoryError as error:
        return bad_parameter(error)
    if query.format == "csv":
        response = HttpResponse(series_csv(series), content_type="text/csv; charset=utf-8")
        name = (
            f"{series.host}-{'host' if series.gpu is None else f'gpu{series.gpu}'}-{series.metric}"
        )
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        response["Content-Disposition"] = f'attachment; filename="{safe}.csv"'
        return response
    data = series_data(series)
    if query.renamed_from:  # answered under the current name: say so, once, to who asked
        data["renamed_from"] = query.renamed_from
    return JsonResponse(data)
