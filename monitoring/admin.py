"""Django admin for the history: hosts, GPUs, samples, process sessions, events, thresholds,
the allow-list and alerts.

The sample tables hold millions of rows, so their lists never count or scan the whole table:
no full result count, a bounded paginator and a date hierarchy from the first and last sample
(:mod:`monitoring.admin_big_tables`), sorting only by time, filters on indexed columns, and a
CSV export streamed in chunks (:mod:`monitoring.admin_csv`). What the worker records is read-only here (superusers may
delete); thresholds, the allow-list and the unexpected-user rule are edited here and picked
up by the worker within ``RULES_REFRESH_S``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin

from monitoring.admin_big_tables import EstimatedCountPaginator, SpanDatesQuerySet
from monitoring.admin_csv import export_csv
from monitoring.alerting.checks import threshold_mistakes
from monitoring.alerting.rules import threshold_problems
from monitoring.metrics import (
    GPU_METRICS,
    HOST_METRICS,
    STORED_GPU_METRICS,
    STORED_HOST_METRICS,
    canonical,
)
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
            for k in ("utilization", "memory_used_mib", "temperature", "power_w", "sm_clock")
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
        *(metric_column(k) for k in ("cpu_percent", "ram_percent", "swap_percent", "load_1")),
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


class MetricChoiceField(forms.TypedChoiceField):
    """A metric by its current name or its old one (``monitoring.metrics.RENAMED``), saved
    under the current name: a script posting ``cpu_usage`` keeps working."""

    def to_python(self, value: Any) -> str:
        return canonical(super().to_python(value))


class ThresholdForm(forms.ModelForm):
    """Refuses a threshold the evaluator could not use (a host metric on a GPU scope, no
    level, critical below warning …) or that would not do what it says (a percentage above
    100, a hysteresis that never lets the alert clear, a GPU of another host …); also on the
    list's inline edits. Each message goes on the field to change."""

    CHECKED_TOGETHER = ("metric", "scope", "host", "gpu", "warning", "critical", "hysteresis")

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
        if any(name in self.errors for name in self.CHECKED_TOGETHER):
            # a field refused on its own (an unknown metric, "abc" as a level): that message
            # alone, not a second one about the value it does not have
            return data

        def value(name: str) -> Any:  # the list's inline edit has only some fields
            return data.get(name) if name in self.fields else getattr(self.instance, name)

        gpu: Gpu | None = value("gpu")
        host: Host | None = value("host")
        problems = threshold_problems(
            metric=value("metric"),
            scope=value("scope"),
            has_gpu=gpu is not None,
            warning=value("warning"),
            critical=value("critical"),
            hysteresis=value("hysteresis") or 0,
        )
        mistakes = threshold_mistakes(
            metric=value("metric"),
            scope=value("scope"),
            warning=value("warning"),
            critical=value("critical"),
            hysteresis=value("hysteresis"),
            gpu=None if gpu is None else str(gpu),
            gpu_host=None if gpu is None else gpu.host.name,
            host=None if host is None else host.name,
        )
        for field, message in (mistakes | problems).items():
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

    def formfield_for_choice_field(self, db_field, request, **kwargs):
        if db_field.name == "metric":
            kwargs["choices_form_class"] = MetricChoiceField
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "gpu":
            kwargs["queryset"] = Gpu.objects.select_related("host")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(AllowedGpuUser)
class AllowedGpuUserAdmin(admin.ModelAdmin):
    list_display = ("kind", "pattern", "note")
    list_filter = ("kind",)
    search_fields = ("pattern", "note")


class UnexpectedUserRuleForm(forms.ModelForm):
    """SM use is a percentage: above 100 no process would ever count as keeping a GPU busy.
    (Checked here rather than by a model validator: no migration for a form's bound.)"""

    class Meta:
        model = UnexpectedUserRule
        fields = ("enabled", "busy_for_s", "min_memory_mib", "min_sm_utilization")

    def clean_min_sm_utilization(self) -> int:
        value = self.cleaned_data["min_sm_utilization"]
        if value is not None and value > 100:
            raise forms.ValidationError(
                f"SM use is a percentage, from 0 to 100: {value} would never be reached"
            )
        return value


@admin.register(UnexpectedUserRule)
class UnexpectedUserRuleAdmin(admin.ModelAdmin):
    """One row (seeded): the worker reads the first."""

    form = UnexpectedUserRuleForm

    list_display = ("__str__", "enabled", "busy_for_s", "min_memory_mib", "min_sm_utilization")
    list_editable = ("enabled", "busy_for_s", "min_memory_mib", "min_sm_utilization")
    list_display_links = ("__str__",)

    def get_changelist_form(self, request, **kwargs):
        return super().get_changelist_form(request, form=UnexpectedUserRuleForm, **kwargs)

    def has_add_permission(self, request) -> bool:
        return super().has_add_permission(request) and not UnexpectedUserRule.objects.exists()
