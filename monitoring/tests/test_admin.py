"""The admin on a real database: every list loads with data, the sample lists stay cheap
(no full-table count, few queries), CSV export returns the selection, history is read-only,
thresholds are validated."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from monitoring import admin_csv
from monitoring.admin_big_tables import EstimatedCountPaginator
from monitoring.metrics import STORED_GPU_METRICS, gpu_values, host_values
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
from monitoring.records import EventKind
from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.schema import Snapshot
from monitoring.tests.conftest import H100

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 0, 0, 0, tzinfo=UTC)
SAMPLES = 300
STEP = timedelta(minutes=10)  # 300 samples span 50 hours: three days in the date hierarchy


@pytest.fixture(scope="module")
def load_snapshot() -> Snapshot:
    sampler = build_sampler("replay", replay_dir=H100, replay_state="load", hostname="gpu-box")
    try:
        return sampler.sample(now=T0)
    finally:
        sampler.close()


@pytest.fixture
def history(load_snapshot) -> dict:
    """Two hosts' worth of history made from the real H100 snapshot."""
    snap = load_snapshot
    reading = snap.gpus[0]
    host = Host.objects.create(name="gpu-box", cores=snap.host.cores, cpu_model="AMD EPYC")
    other = Host.objects.create(name="other-box", cores=8)
    gpu = Gpu.objects.create(
        host=host,
        uuid=reading.uuid,
        index=0,
        name=reading.name,
        memory_total_mib=reading.memory_total,
    )
    other_gpu = Gpu.objects.create(host=other, uuid="GPU-other", index=0, name=reading.name)
    values = gpu_values(reading)
    GpuSample.objects.bulk_create(
        [GpuSample(gpu=gpu, time=T0 + i * STEP, **values) for i in range(SAMPLES)]
        + [GpuSample(gpu=other_gpu, time=T0 + i * STEP, **values) for i in range(10)]
    )
    HostSample.objects.bulk_create(
        [HostSample(host=host, time=T0 + i * STEP, **host_values(snap.system)) for i in range(50)]
    )
    for n, proc in enumerate(reading.processes):
        ProcessSession.objects.create(
            gpu=gpu,
            pid=proc.pid,
            name=proc.name or "",
            user=proc.user or "",
            command=proc.command or "",
            first_seen=T0 + n * STEP,
            last_seen=T0 + (n + 3) * STEP,
            open=n == 0,
            peak_memory_mib=proc.used_memory_mib,
            samples=3,
        )
    Event.objects.create(host=host, gpu=gpu, time=T0, kind=EventKind.GPU_LOST, message="GPU 0 lost")
    Event.objects.create(
        host=host, time=T0 + STEP, kind=EventKind.WORKER_STARTED, message="started"
    )
    threshold = Threshold.objects.get(metric="temperature")
    Alert.objects.create(
        host=host,
        gpu=gpu,
        threshold=threshold,
        metric="temperature",
        severity=Alert.CRITICAL,
        started_at=T0,
        message="GPU 0 hot",
        key="threshold:1:x",
    )
    Alert.objects.create(
        host=host,
        gpu=gpu,
        rule="unexpected_user",
        metric="memory_used_mib",
        severity=Alert.WARNING,
        started_at=T0 + STEP,
        ended_at=T0 + 2 * STEP,
        message="Unexpected GPU user",
        pid=448,
    )
    AllowedGpuUser.objects.create(kind=AllowedGpuUser.KIND_USER, pattern="alice")
    return {"host": host, "gpu": gpu, "other_gpu": other_gpu}


@pytest.fixture
def admin_client(client, django_user_model):
    # no password: hashing one costs a second per test, and force_login needs none
    user = django_user_model.objects.create(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def changelist(model) -> str:
    return reverse(f"admin:monitoring_{model._meta.model_name}_changelist")


# What each list and object page shows a user of the history above, and the queries each
# makes (pinned: a list must not grow a query per row).
PAGES = [
    # model, texts in its list, text on its first object's page, list queries, page queries
    (Host, ["gpu-box", "other-box", "AMD EPYC"], "AMD EPYC", 6, 5),
    (Gpu, ["GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7", "GPU-other"], "NVIDIA H100", 7, 6),
    (GpuSample, ["69 °C", "100 %", "gpu-box GPU 0 (NVIDIA H100 80GB HBM3)"], "Jan. 5, 2026", 9, 7),
    (HostSample, ["gpu-box", "Load (1 min)"], "Jan. 5, 2026", 8, 6),
    (ProcessSession, ["python3", "root"], "python3", 10, 7),
    (Event, ["GPU 0 lost", "started"], "GPU lost", 8, 8),
    (Threshold, ["GPU temperature", "GPU memory"], "GPU temperature", 6, 7),
    (AllowedGpuUser, ["alice"], "alice", 6, 5),
    (UnexpectedUserRule, ["Unexpected GPU user rule"], "Unexpected GPU user rule", 7, 6),
    (Alert, ["GPU 0 hot", "Unexpected GPU user"], "GPU 0 hot", 9, 9),
]


@pytest.mark.parametrize(
    ("model", "list_texts", "page_text", "list_queries", "page_queries"),
    PAGES,
    ids=[page[0].__name__ for page in PAGES],
)
def test_every_list_and_object_page_shows_the_history(
    admin_client,
    history,
    django_assert_num_queries,
    model,
    list_texts,
    page_text,
    list_queries,
    page_queries,
):
    ContentType.objects.clear_cache()  # counted the same whichever test ran before
    with django_assert_num_queries(list_queries):
        response = admin_client.get(changelist(model))
    assert response.context["cl"].result_count == model.objects.count() > 0
    listing = response.content.decode()
    for text in list_texts:
        assert text in listing, text
    obj = model.objects.order_by("pk").first()
    page = reverse(f"admin:monitoring_{model._meta.model_name}_change", args=[obj.pk])
    ContentType.objects.clear_cache()
    with django_assert_num_queries(page_queries):
        detail = admin_client.get(page)
    assert page_text in detail.content.decode()


def test_the_lists_filter_by_host_gpu_time_and_search(admin_client, history):
    gpu, other = history["gpu"], history["other_gpu"]
    url = changelist(GpuSample)
    by_gpu = admin_client.get(url, {"gpu__id__exact": other.pk})
    assert by_gpu.status_code == 200 and by_gpu.context["cl"].result_count == 10
    by_host = admin_client.get(url, {"gpu__host__id__exact": gpu.host_id})
    assert by_host.context["cl"].result_count == SAMPLES
    day = admin_client.get(url, {"time__year": 2026, "time__month": 1, "time__day": 6})
    assert day.context["cl"].result_count == 144  # one every 10 minutes
    sessions = admin_client.get(changelist(ProcessSession), {"q": "torch"})
    assert sessions.context["cl"].result_count == 1  # found by its command line
    open_alerts = admin_client.get(changelist(Alert), {"active": "yes"})
    assert [a.message for a in open_alerts.context["cl"].result_list] == ["GPU 0 hot"]


def test_the_date_hierarchy_offers_each_day_without_scanning_the_table(admin_client, history):
    url = changelist(GpuSample)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)
    html = response.content.decode()
    for day in (5, 6, 7):
        assert f"time__day={day}&amp;time__month=1&amp;time__year=2026" in html
    assert "time__day=8&amp;" not in html
    distinct = [q["sql"] for q in queries if "DISTINCT" in q["sql"] and "gpusample" in q["sql"]]
    assert distinct == []


def test_the_sample_list_makes_few_queries_and_no_full_table_count(admin_client, history):
    for params in ({}, {"gpu__id__exact": history["gpu"].pk, "time__year": 2026}):
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(changelist(GpuSample), params)
        assert response.status_code == 200
        sqls = [q["sql"] for q in queries]
        assert len(sqls) <= 12, "\n".join(sqls)
        counts = [sql for sql in sqls if "COUNT(" in sql.upper()]
        assert counts, "the paginator counts (bounded)"
        for sql in counts:
            assert "LIMIT" in sql.upper(), f"unbounded count: {sql}"


def test_the_paginator_counts_at_most_its_cap(history):
    class Capped(EstimatedCountPaginator):
        cap = 50

    everything = GpuSample.objects.order_by("-time")
    filtered = GpuSample.objects.filter(gpu=history["gpu"]).order_by("-time")
    assert Capped(filtered, 100).count == 50  # a filtered list past the cap: the cap
    assert (
        Capped(GpuSample.objects.filter(gpu=history["other_gpu"]).order_by("pk"), 100).count == 10
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE monitoring_gpusample")
        assert Capped(everything, 100).count == SAMPLES + 10  # the planner's estimate
    else:
        assert Capped(everything, 100).count == 50


def export(client, model, data: dict, query: str = "") -> list[list[str]]:
    url = changelist(model) + query
    response = client.post(url, {"action": "export_csv", "index": 0, **data})
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_csv_export_returns_the_selected_samples(admin_client, history):
    chosen = list(
        GpuSample.objects.filter(gpu=history["gpu"]).order_by("time").values_list("pk", flat=True)
    )[10:13]
    header, *rows = export(admin_client, GpuSample, {"_selected_action": chosen})
    assert header == ["time", "gpu__host__name", "gpu__index", "gpu__uuid", *STORED_GPU_METRICS]
    assert [row[0] for row in rows] == [(T0 + i * STEP).isoformat() for i in (10, 11, 12)]
    sample = GpuSample.objects.get(pk=chosen[0])
    assert rows[0][1:4] == ["gpu-box", "0", history["gpu"].uuid]
    temperature = header.index("temperature")
    assert rows[0][temperature] == str(sample.temperature)


def test_csv_export_of_a_whole_selection_streams_in_chunks(admin_client, history, monkeypatch):
    monkeypatch.setattr(admin_csv, "CSV_CHUNK", 7)  # many chunks, keyset boundaries
    _header, *rows = export(
        admin_client,
        GpuSample,
        {"select_across": 1, "_selected_action": [1]},
        query=f"?gpu__id__exact={history['gpu'].pk}",  # the list's filter: what "all" means
    )
    times = [row[0] for row in rows]
    assert times == [(T0 + i * STEP).isoformat() for i in range(SAMPLES)]


@pytest.mark.parametrize(
    ("model", "first_column"),
    [(ProcessSession, "gpu__host__name"), (Event, "time"), (Alert, "started_at")],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_csv_export_of_sessions_events_and_alerts(admin_client, history, model, first_column):
    chosen = list(model.objects.values_list("pk", flat=True))
    header, *rows = export(admin_client, model, {"_selected_action": chosen})
    assert header[0] == first_column and len(rows) == len(chosen) >= 2


def test_history_is_read_only_and_only_superusers_delete(client, admin_client, history):
    assert admin_client.get(reverse("admin:monitoring_gpusample_add")).status_code == 403
    sample = GpuSample.objects.first()
    page = admin_client.get(reverse("admin:monitoring_gpusample_change", args=[sample.pk]))
    assert b'name="_save"' not in page.content  # a view, not a form
    assert b"deletelink" in page.content  # superusers may delete
    viewer = User.objects.create(username="viewer", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_gpusample", "delete_gpusample"])
    )
    client.force_login(viewer)
    listing = client.get(changelist(GpuSample))
    assert listing.status_code == 200
    actions = [name for name, _label in listing.context["action_form"].fields["action"].choices]
    assert "export_csv" in actions and "delete_selected" not in actions


def test_thresholds_are_edited_in_the_list_and_validated(admin_client, history):
    threshold = Threshold.objects.get(metric="temperature")
    rows = list(Threshold.objects.order_by("metric", "name"))
    data = {
        "form-TOTAL_FORMS": str(len(rows)),
        "form-INITIAL_FORMS": str(len(rows)),
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for i, row in enumerate(rows):
        data[f"form-{i}-id"] = str(row.pk)
        data[f"form-{i}-warning"] = "" if row.warning is None else str(row.warning)
        data[f"form-{i}-critical"] = "" if row.critical is None else str(row.critical)
        if row.enabled:
            data[f"form-{i}-enabled"] = "on"
    i = rows.index(threshold)
    data[f"form-{i}-warning"], data[f"form-{i}-critical"] = "70", "80"
    assert admin_client.post(changelist(Threshold), data).status_code == 302
    threshold.refresh_from_db()
    assert (threshold.warning, threshold.critical) == (70, 80)
    data[f"form-{i}-critical"] = "60"  # critical below warning: refused
    refused = admin_client.post(changelist(Threshold), data)
    assert refused.status_code == 200
    assert "the critical level must be beyond the warning level" in refused.content.decode()
    threshold.refresh_from_db()
    assert threshold.critical == 80


def test_a_threshold_on_the_wrong_scope_is_refused(admin_client, history):
    add = reverse("admin:monitoring_threshold_add")
    base = {"name": "hot", "metric": "temperature", "warning": 80, "critical": 90}
    base |= {"duration_s": 30, "hysteresis": 2, "enabled": "on"}
    wrong = admin_client.post(add, {**base, "scope": "host"})
    assert wrong.status_code == 200
    assert "a GPU metric: choose" in wrong.content.decode()
    no_gpu = admin_client.post(add, {**base, "scope": "gpu"})
    assert "choose the GPU this threshold watches" in no_gpu.content.decode()
    ok = admin_client.post(add, {**base, "scope": "gpu", "gpu": history["gpu"].pk})
    assert ok.status_code == 302
    assert Threshold.objects.filter(name="hot", gpu=history["gpu"]).exists()


def test_a_threshold_posted_under_an_old_metric_name_is_saved_under_the_new_one(
    admin_client, history
):
    add = reverse("admin:monitoring_threshold_add")
    form = {"name": "busy", "scope": "host", "warning": 70, "duration_s": 30, "hysteresis": 0}
    saved = admin_client.post(add, {**form, "metric": "cpu_usage", "enabled": "on"})
    assert saved.status_code == 302
    assert Threshold.objects.get(name="busy").metric == "cpu_percent"
    unknown = admin_client.post(add, {**form, "name": "typo", "metric": "cpu_usag"})
    assert "Select a valid choice. cpu_usag is not one of the available choices." in (
        unknown.content.decode()
    )
    assert "unknown metric" not in unknown.content.decode()  # that message alone


HOT = {"name": "hot", "metric": "temperature", "warning": 80, "critical": 90, "duration_s": 30}


def refused_fields(client, form: dict) -> dict[str, list[str]]:
    """The admin's add form posted: the messages by field (empty when it saved)."""
    response = client.post(reverse("admin:monitoring_threshold_add"), form)
    if response.status_code == 302:
        return {}
    assert response.status_code == 200
    return {
        field: list(errors) for field, errors in response.context["adminform"].form.errors.items()
    }


def test_a_gpu_of_another_host_than_the_thresholds_is_refused_on_the_gpu_field(
    admin_client, history
):
    other_gpu = history["other_gpu"]
    form = HOT | {"scope": "gpu", "host": history["host"].pk, "gpu": other_gpu.pk, "hysteresis": 2}
    assert refused_fields(admin_client, form) == {
        "gpu": [
            f"{other_gpu} is on host other-box, not gpu-box: choose one of gpu-box's GPUs, "
            "or the host other-box"
        ]
    }
    assert refused_fields(admin_client, form | {"gpu": history["gpu"].pk}) == {}
    assert refused_fields(admin_client, form | {"name": "any host", "host": ""}) == {}


@pytest.mark.parametrize(
    ("metric", "scope"), [("temperature", "all_gpus"), ("cpu_percent", "host")]
)
def test_a_gpu_picked_for_a_scope_that_would_ignore_it_is_refused(
    admin_client, history, metric, scope
):
    form = HOT | {"metric": metric, "scope": scope, "gpu": history["gpu"].pk, "hysteresis": 2}
    assert refused_fields(admin_client, form) == {
        "gpu": [
            "a GPU is only for the scope 'one GPU' (this scope would ignore it): "
            "clear the GPU or choose that scope"
        ]
    }
    assert refused_fields(admin_client, form | {"gpu": ""}) == {}


def test_a_hysteresis_that_would_never_let_the_alert_clear_is_refused(admin_client, history):
    form = HOT | {"scope": "all_gpus", "warning": 90, "critical": 95, "hysteresis": 1000}
    assert refused_fields(admin_client, form) == {
        "hysteresis": [
            "an alert clears only below the warning level minus the hysteresis (-910 °C), "
            "and temperature is never below 0: the hysteresis must be smaller than the warning "
            "level, 90 °C"
        ]
    }
    only_critical = form | {"warning": "", "hysteresis": 95}
    assert (
        "must be smaller than the critical level, 95 °C"
        in (refused_fields(admin_client, only_critical)["hysteresis"][0])
    )
    assert refused_fields(admin_client, form | {"hysteresis": 89}) == {}


def test_a_level_at_the_lowest_value_is_refused_for_its_alert_would_never_clear(
    admin_client, history
):
    form = HOT | {"scope": "host", "metric": "load_per_core", "warning": 0, "hysteresis": 0}
    assert refused_fields(admin_client, form | {"critical": ""}) == {
        "warning": [
            "a level of 0.00 holds at every value and its alert could never clear "
            "(load per core is never below 0): set a level above 0"
        ]
    }


@pytest.mark.parametrize(
    ("metric", "scope", "label"),
    [
        ("utilization", "all_gpus", "GPU utilization"),
        ("memory_percent", "all_gpus", "memory used"),
        ("cpu_percent", "host", "CPU"),
    ],
)
def test_a_percentage_level_outside_0_to_100_is_refused_on_its_field(
    admin_client, history, metric, scope, label
):
    form = HOT | {"metric": metric, "scope": scope, "hysteresis": 0}
    assert refused_fields(admin_client, form | {"warning": -5, "critical": 150}) == {
        "warning": [f"{label} is a percentage, from 0 to 100: a level of -5 would always hold"],
        "critical": [f"{label} is a percentage, from 0 to 100: a level of 150 would never hold"],
    }
    assert refused_fields(admin_client, form | {"warning": 90, "critical": 100}) == {}


def test_a_level_of_a_metric_that_is_no_percentage_may_exceed_100(admin_client, history):
    form = HOT | {"metric": "power_w", "scope": "all_gpus", "warning": 600, "critical": 700}
    assert refused_fields(admin_client, form | {"hysteresis": 20}) == {}


def test_the_unexpected_user_rules_sm_use_is_a_percentage(admin_client, history):
    rule = UnexpectedUserRule.objects.get()
    change = reverse("admin:monitoring_unexpecteduserrule_change", args=[rule.pk])
    form = {"enabled": "on", "busy_for_s": 600, "min_memory_mib": 1024}
    refused = admin_client.post(change, form | {"min_sm_utilization": 101})
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {
        "min_sm_utilization": ["SM use is a percentage, from 0 to 100: 101 would never be reached"]
    }
    assert admin_client.post(change, form | {"min_sm_utilization": 100}).status_code == 302
    rule.refresh_from_db()
    assert rule.min_sm_utilization == 100


def test_the_unexpected_user_rule_is_a_single_row(admin_client, history):
    assert UnexpectedUserRule.objects.count() == 1  # seeded
    add = reverse("admin:monitoring_unexpecteduserrule_add")
    assert admin_client.get(add).status_code == 403
    UnexpectedUserRule.objects.all().delete()
    assert admin_client.get(add).status_code == 200
