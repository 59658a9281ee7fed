"""Django admin for the history: hosts, GPUs, samples, process sessions, events, thresholds,
the allow-list and alerts.

The sample tables hold millions of rows, so their lists never count or scan the whole table:
no full result count, a paginator that counts at most ``COUNT_CAP`` rows (or asks PostgreSQL's
statistics for an unfiltered table), a date hierarchy built from the first and last sample
(two index look-ups) rather than a ``DISTINCT`` over every row, sorting only by time, and
filters on indexed columns. What the worker records is read-only here (superusers may
delete); thresholds, the allow-list and the unexpected-user rule are edited here and picked
up by the worker within ``RULES_REFRESH_S``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.contrib import admin
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, Q, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.functional import cached_property

from monitoring.alerting.rules import threshold_problems
from monitoring.metrics import GPU_METRICS, HOST_METRICS, STORED_GPU_METRICS, STORED_HOST_METRICS
from monitoring.models import (
    Alert,
    AllowedGpuUser,
    Event,
    Gpu,
    GpuSample,
    Host,
    HostSample,
    ProcessSession,
    Threshold,
    UnexpectedUserRule,
)
from monitoring.telemetry import format as fmt

COUNT_CAP = 10_000  # rows a list counts exactly; beyond, an estimate (or the cap)
CSV_CHUNK = 2_000  # rows per query of a CSV export


# --- big tables: counting, date hierarchy ----------------------------------------------------


class EstimatedCountPaginator(Paginator):
    """Counts at most ``cap`` rows (``COUNT(*)`` over a ``LIMIT`` subquery). Past the cap, an
    unfiltered list on PostgreSQL takes the planner's row estimate (``pg_class.reltuples``,
    kept by autovacuum); any other list reports the cap, so the last pages of a huge
    selection are not offered - narrow it with the filters or the date hierarchy instead."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        bounded = queryset.order_by()[: self.cap + 1].count()
        if bounded <= self.cap:
            return bounded
        if not queryset.query.where:
            estimate = table_estimate(queryset)
            if estimate is not None and estimate > self.cap:
                return estimate
        return self.cap


def table_estimate(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows in the queryset's table; None elsewhere or unknown."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


class SpanDatesQuerySet(QuerySet):
    """The date hierarchy's years, months and days from the first and last row (two index
    look-ups) instead of ``SELECT DISTINCT`` over every row. Samples are continuous, so
    every day in between has rows; a day the worker was down is still offered (and empty)."""

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        if kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        span = self.aggregate(first=Min(field_name), last=Max(field_name))
        if span["first"] is None:
            return []
        tz = tzinfo or timezone.get_current_timezone()
        first = timezone.localtime(span["first"], tz).date()
        last = timezone.localtime(span["last"], tz).date()
        days = _calendar(first, last, kind)
        out = [datetime.combine(d, time(), tzinfo=tz) for d in days]
        return out if order == "ASC" else out[::-1]


def _calendar(first: date, last: date, kind: str) -> list[date]:
    """The first day of every year, month or day from ``first`` to ``last``."""
    if kind == "year":
        return [date(y, 1, 1) for y in range(first.year, last.year + 1)]
    if kind == "month":
        months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
        return [date(m // 12, m % 12 + 1, 1) for m in months]
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- CSV export ------------------------------------------------------------------------------


class _Echo:
    """A file whose ``write`` hands the line back, so csv.writer feeds a generator."""

    def write(self, value: str) -> str:
        return value


#: A cell starting with one of these is a formula to a spreadsheet: process names and command
#: lines are chosen by whoever ran them, so such text gets a leading ' (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _chunks(queryset: QuerySet, order_field: str, columns: tuple[str, ...]) -> Iterator[list]:
    """The rows in (``order_field``, pk) order, one query per chunk, each starting after the
    last row of the one before (keyset: no OFFSET, no server-side cursor held open)."""
    ordered = queryset.order_by(order_field, "pk")
    after: tuple[Any, Any] | None = None
    while True:
        page = ordered
        if after is not None:
            page = ordered.filter(
                Q(**{f"{order_field}__gt": after[0]})
                | Q(**{order_field: after[0], "pk__gt": after[1]})
            )
        rows = list(page.values_list(order_field, "pk", *columns)[:CSV_CHUNK])
        if rows:
            yield [row[2:] for row in rows]
        if len(rows) < CSV_CHUNK:
            return
        after = rows[-1][:2]


@admin.action(description="Export selected as CSV", permissions=["view"])
def export_csv(modeladmin: admin.ModelAdmin, request, queryset: QuerySet) -> StreamingHttpResponse:
    """Streams the selection (or "select all": the whole filtered list) as CSV, a chunk of
    rows at a time, so an export of millions of samples runs in constant memory."""
    columns: tuple[str, ...] = modeladmin.csv_columns
    order_field: str = modeladmin.csv_order
    writer = csv.writer(_Echo())

    def lines(chunk: list) -> str:
        return "".join(writer.writerow([_cell(v) for v in row]) for row in chunk)

    chunks = _chunks(queryset, order_field, columns)
    if isinstance(request, ASGIRequest):  # daphne: an async iterator is streamed as it goes

        async def content() -> AsyncIterator[str]:
            yield writer.writerow(columns)
            next_chunk = sync_to_async(lambda: next(chunks, None))
            while (chunk := await next_chunk()) is not None:
                yield lines(chunk)

        body: Any = content()
    else:

        def content_sync() -> Iterator[str]:
            yield writer.writerow(columns)
            for chunk in chunks:
                yield lines(chunk)

        body = content_sync()
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{modeladmin.model._meta.model_name}-{stamp}.csv"'
    )
    return response


# --- shared pieces ---------------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """What the worker records is history: viewed and exported, never edited by hand.
    Superusers may delete (a host retired, a test run)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)


class BigTableAdmin(ReadOnlyAdmin):
    """A list over a table of millions of rows (see the module docstring)."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 100
    actions = [export_csv]
    csv_columns: tuple[str, ...] = ()
    csv_order = "time"


class GpuListFilter(admin.RelatedFieldListFilter):
    """The GPUs with their host in one query (a GPU's name includes its host's)."""

    def field_choices(self, field, request, model_admin):
        gpus = Gpu.objects.select_related("host").order_by("host__name", "index")
        return [(gpu.pk, str(gpu)) for gpu in gpus]


class ActiveFilter(admin.SimpleListFilter):
    title = "active"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", "active"), ("no", "cleared")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(ended_at__isnull=False)
        return queryset


_BY_UNIT: dict[str, Callable[[Any], str]] = {
    "°C": fmt.celsius,
    "%": fmt.percent,
    "W": fmt.watts,
    "MiB": fmt.mib,
    "MHz": fmt.mhz,
    "B/s": fmt.rate,
}


def metric_column(key: str) -> Callable[[Any], str]:
    """A list column showing one metric formatted (``69 °C``, ``4.6 GiB``)."""
    metric = GPU_METRICS.get(key) or HOST_METRICS[key]
    formatter = _BY_UNIT.get(metric.unit, lambda v: fmt.DASH if v is None else f"{v:.2f}")

    def column(obj: Any) -> str:
        return formatter(getattr(obj, key))

    column.short_description = metric.label  # type: ignore[attr-defined]
    column.__name__ = key
    return column


# --- hosts and GPUs --------------------------------------------------------------------------


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "cpu_model",
        "cores",
        "memory",
        "driver_version",
        "cuda_version",
        "gpu_source",
        "first_seen",
        "last_seen",
    )
    search_fields = ("name",)

    @admin.display(description="memory", ordering="memory_total_mib")
    def memory(self, obj: Host) -> str:
        return fmt.mib(obj.memory_total_mib)


@admin.register(Gpu)
class GpuAdmin(ReadOnlyAdmin):
    list_display = (
        "host",
        "index",
        "name",
        "uuid",
        "pci_bus_id",
        "memory",
        "state",
        "first_seen",
        "last_seen",
    )
    list_filter = ("host", "state")
    list_select_related = ("host",)
    search_fields = ("uuid", "name", "pci_bus_id")

    @admin.display(description="memory", ordering="memory_total_mib")
    def memory(self, obj: Gpu) -> str:
        return fmt.mib(obj.memory_total_mib)


# --- samples ---------------------------------------------------------------------------------


class SampleAdmin(BigTableAdmin):
    date_hierarchy = "time"
    ordering = ("-time",)
    sortable_by = ("time",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return SpanDatesQuerySet(model=queryset.model, query=queryset.query, using=queryset.db)


@admin.register(GpuSample)
class GpuSampleAdmin(SampleAdmin):
    list_display = (
        "time",
        "gpu",
        *(
            metric_column(k)
            for k in ("utilization", "memory_used", "temperature", "power_usage", "sm_clock")
        ),
    )
    list_filter = (
        ("gpu__host", admin.RelatedFieldListFilter),
        ("gpu", GpuListFilter),
        ("time", admin.DateFieldListFilter),
    )
    list_select_related = ("gpu", "gpu__host")
    csv_columns = ("time", "gpu__host__name", "gpu__index", "gpu__uuid", *STORED_GPU_METRICS)


@admin.register(HostSample)
class HostSampleAdmin(SampleAdmin):
    list_display = (
        "time",
        "host",
        *(metric_column(k) for k in ("cpu_usage", "memory_usage", "swap_usage", "load_1")),
    )
    list_filter = ("host", ("time", admin.DateFieldListFilter))
    list_select_related = ("host",)
    csv_columns = ("time", "host__name", *STORED_HOST_METRICS)


# --- process sessions, events, alerts --------------------------------------------------------


@admin.register(ProcessSession)
class ProcessSessionAdmin(BigTableAdmin):
    list_display = (
        "first_seen",
        "last_seen",
        "gpu",
        "pid",
        "name",
        "user",
        "container",
        "how_long",
        "peak_memory",
        "mean_sm",
        "open",
    )
    list_filter = (
        ("gpu__host", admin.RelatedFieldListFilter),
        ("gpu", GpuListFilter),
        "user",
        "open",
        ("first_seen", admin.DateFieldListFilter),
    )
    search_fields = ("name", "user", "command", "container")
    date_hierarchy = "first_seen"
    list_select_related = ("gpu", "gpu__host")
    csv_order = "first_seen"
    csv_columns = (
        "gpu__host__name",
        "gpu__index",
        "gpu__uuid",
        "pid",
        "name",
        "user",
        "container",
        "command",
        "process_start",
        "first_seen",
        "last_seen",
        "open",
        "peak_memory_mib",
        "mean_memory_mib",
        "mean_sm_utilization",
        "samples",
    )

    @admin.display(description="for")
    def how_long(self, obj: ProcessSession) -> str:
        return fmt.duration(obj.duration.total_seconds())

    @admin.display(description="peak memory", ordering="peak_memory_mib")
    def peak_memory(self, obj: ProcessSession) -> str:
        return fmt.mib(obj.peak_memory_mib)

    @admin.display(description="mean SM", ordering="mean_sm_utilization")
    def mean_sm(self, obj: ProcessSession) -> str:
        return fmt.percent(obj.mean_sm_utilization)


@admin.register(Event)
class EventAdmin(BigTableAdmin):
    list_display = ("time", "host", "gpu", "kind", "message")
    list_filter = ("kind", "host", ("time", admin.DateFieldListFilter))
    search_fields = ("message",)
    date_hierarchy = "time"
    list_select_related = ("host", "gpu", "gpu__host")
    csv_columns = ("time", "host__name", "gpu__index", "gpu__uuid", "kind", "message", "data")


@admin.register(Alert)
class AlertAdmin(BigTableAdmin):
    list_display = (
        "started_at",
        "ended_at",
        "severity",
        "host",
        "gpu",
        "rule",
        "metric",
        "message",
        "value",
        "peak_value",
    )
    list_filter = (
        "severity",
        ActiveFilter,
        "rule",
        "host",
        ("started_at", admin.DateFieldListFilter),
    )
    search_fields = ("message",)
    date_hierarchy = "started_at"
    list_select_related = ("host", "gpu", "gpu__host")
    csv_order = "started_at"
    csv_columns = (
        "started_at",
        "ended_at",
        "severity",
        "host__name",
        "gpu__index",
        "gpu__uuid",
        "rule",
        "metric",
        "threshold__name",
        "value",
        "peak_value",
        "pid",
        "message",
    )


# --- rules, edited here ----------------------------------------------------------------------


class ThresholdForm(forms.ModelForm):
    """Refuses a threshold the evaluator could not use (a host metric on a GPU scope, no
    level, critical below warning …); also on the list's inline edits."""

    class Meta:
        model = Threshold
        fields = (
            "name",
            "metric",
            "scope",
            "host",
            "gpu",
            "warning",
            "critical",
            "duration_s",
            "hysteresis",
            "enabled",
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()

        def value(name: str) -> Any:  # the list's inline edit has only some fields
            return data.get(name) if name in self.fields else getattr(self.instance, name)

        gpu = data.get("gpu") if "gpu" in self.fields else self.instance.gpu_id
        problems = threshold_problems(
            metric=value("metric"),
            scope=value("scope"),
            has_gpu=gpu is not None,
            warning=value("warning"),
            critical=value("critical"),
            hysteresis=value("hysteresis") or 0,
        )
        for field, message in problems.items():
            self.add_error(field if field in self.fields else None, message)
        return data


@admin.register(Threshold)
class ThresholdAdmin(admin.ModelAdmin):
    form = ThresholdForm
    list_display = (
        "name",
        "metric",
        "scope",
        "host",
        "gpu",
        "warning",
        "critical",
        "duration_s",
        "hysteresis",
        "enabled",
    )
    list_display_links = ("name",)
    list_editable = ("warning", "critical", "enabled")
    list_filter = ("enabled", "scope", "metric")
    list_select_related = ("host", "gpu", "gpu__host")
    search_fields = ("name",)

    def get_changelist_form(self, request, **kwargs):
        return super().get_changelist_form(request, form=ThresholdForm, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "gpu":
            kwargs["queryset"] = Gpu.objects.select_related("host")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(AllowedGpuUser)
class AllowedGpuUserAdmin(admin.ModelAdmin):
    list_display = ("kind", "pattern", "note")
    list_filter = ("kind",)
    search_fields = ("pattern", "note")


@admin.register(UnexpectedUserRule)
class UnexpectedUserRuleAdmin(admin.ModelAdmin):
    """One row (seeded): the worker reads the first."""

    list_display = ("__str__", "enabled", "busy_for_s", "min_memory_mib", "min_sm_utilization")
    list_editable = ("enabled", "busy_for_s", "min_memory_mib", "min_sm_utilization")
    list_display_links = ("__str__",)

    def has_add_permission(self, request) -> bool:
        return super().has_add_permission(request) and not UnexpectedUserRule.objects.exists()
