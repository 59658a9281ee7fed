"""The history page through Django's test client, on the real H100 capture replayed through
the worker's store (:mod:`dashboard.tests.history_helpers`): charts per GPU and for the host,
the range picker, the process sessions on the time axis and ``?at=``, 404s, bad parameters,
hostile names, and the number of statements per page (pinned)."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from dashboard import history_page
from dashboard.history_page import HOST_CHARTS
from dashboard.hub import reset_hub
from dashboard.tests.history_helpers import (
    HOST,
    HOSTILE,
    HOSTILE_CONTAINER,
    HOSTILE_PID,
    store_h100_history,
)
from monitoring.models import Gpu, ProcessSession
from monitoring.storage.retention import run_maintenance

URL = "/history/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def box():
    """Two H100s with 40 minutes of history in the last 50, ending now; returns now."""
    now = timezone.now()
    store_h100_history(now)
    return now


def get(client, **params):
    return client.get(URL, params)


def text(response) -> str:
    return response.content.decode()


def figure(page: str, key: str) -> str:
    """The HTML of one chart."""
    match = re.search(rf'<figure id="chart-{key}".*?</figure>', page, re.S)
    assert match, f"no chart {key}"
    return match.group(0)


def section(page: str, ident: str) -> str:
    match = re.search(rf'<section id="{ident}".*?</section>', page, re.S)
    assert match, f"no section {ident}"
    return match.group(0)


def aria_label(chart: str) -> str:
    return html.unescape(re.search(r'role="img" aria-label="([^"]*)"', chart).group(1))


def wall(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M:%S")


def near(label: str, moment: datetime) -> bool:
    """An ``HH:MM`` label within a minute of ``moment``."""
    local = timezone.localtime(moment)
    candidates = {f"{local + timedelta(minutes=d):%H:%M}" for d in (-1, 0, 1)}
    return label in candidates


# -- what the page shows ------------------------------------------------------------------------


def test_the_gpu_page_charts_utilization_memory_temperature_and_power(client, box):
    response = get(client, host=HOST, gpu="0")

    assert response.status_code == 200
    page = text(response)
    assert "GPU 0 · NVIDIA H100 80GB HBM3" in page
    for key, title in (
        ("utilization", "Utilization"),
        ("memory", "Memory used"),
        ("temperature", "Temperature"),
        ("power", "Power"),
    ):
        chart = figure(page, key)
        assert f">{title}</h2>" in chart
        label = aria_label(chart)
        assert label.startswith(f"{title} of GPU 0, the last hour")
        assert label in html.unescape(chart)  # the same words are on the page as text
    # The captured H100 under load: 100 % busy, 4.6 GiB of 80 used, 69 °C; idle: 0 %.
    assert "utilization: low 0 %, mean" in aria_label(figure(page, "utilization"))
    assert "high 100 %" in aria_label(figure(page, "utilization"))
    assert "high 4.6 GiB" in aria_label(figure(page, "memory"))
    assert "high 69 °C" in aria_label(figure(page, "temperature"))
    # The axes: times along the bottom, values up the side (to the memory on the board).
    memory = figure(page, "memory")
    assert ">0 GiB<" in memory and ">60 GiB<" in memory
    assert re.search(r">\d\d:\d0<", memory)
    assert ">total 79.6 GiB</span>" in memory  # the board's memory, and the power limit
    assert ">limit 700 W</span>" in figure(page, "power")


def test_a_gap_in_the_data_is_a_gap_in_the_line_and_said_in_words(client, box):
    page = text(get(client, host=HOST, gpu="0"))

    chart = figure(page, "utilization")
    # Load then idle (-50 to -30 min), nothing while the collector was stopped, load again.
    assert chart.count('class="chart-line"') == 2
    gaps = re.findall(r"(\d\d:\d\d) to (\d\d:\d\d)", aria_label(chart).split("no data")[1])
    # Before the first sample (-60 to -50 min), and while the collector was stopped.
    assert len(gaps) == 2, aria_label(chart)
    assert near(gaps[0][0], box - timedelta(minutes=60))
    assert near(gaps[0][1], box - timedelta(minutes=50))
    assert near(gaps[1][0], box - timedelta(minutes=30))
    assert near(gaps[1][1], box - timedelta(minutes=20))


def test_the_host_page_charts_cpu_memory_load_network_and_disk(client, box):
    response = get(client, host=HOST)

    assert response.status_code == 200
    page = text(response)
    assert [m.group(1) for m in re.finditer(r'<figure id="chart-(\w+)"', page)] == [
        spec.key for spec in HOST_CHARTS
    ]
    assert "CPU of host h100-box, the last hour" in aria_label(figure(page, "cpu"))
    network = figure(page, "network")
    assert "in: low" in aria_label(network) and "out: low" in aria_label(network)
    # The host page lists the sessions of every GPU, each with its GPU.
    lane = section(page, "sessions")
    assert "GPU 0 · root · python3" in lane and "GPU 1 · root · python3" in lane


def test_without_a_host_it_shows_the_only_host_and_a_gpu_uuid_names_its_host(client, box):
    gpu = Gpu.objects.get(index=1)

    only = get(client)
    by_uuid = get(client, gpu=gpu.uuid)

    assert only.status_code == by_uuid.status_code == 200
    assert (
        'History</span>\n        <span class="text-slate-900 dark:text-slate-100">· h100-box'
        in (text(only))
    )
    assert "GPU 1 · NVIDIA H100" in text(by_uuid)
    assert gpu.uuid in text(by_uuid)


def test_each_chart_links_its_csv_from_the_history_api(client, box):
    page = text(get(client, host=HOST, gpu="1"))

    href = html.unescape(re.search(r'<a href="([^"]*)" download', figure(page, "power")).group(1))
    assert href.startswith("/api/history?") and "metric=power_w" in href
    response = client.get(href)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = response.content.decode().splitlines()
    assert rows[0] == "time,min,avg,max" and len(rows) > 100


# -- the range picker ---------------------------------------------------------------------------


def test_the_range_picker_offers_1h_24h_7d_30d_and_marks_the_current_one(client, box):
    page = text(get(client, host=HOST, gpu="0", range="24h"))

    picker = re.search(r'<nav aria-label="Range".*?</nav>', page, re.S).group(0)
    labels = re.findall(r"</span>(\d+ [hd])</a>", picker)
    assert labels == ["1 h", "24 h", "7 d", "30 d"]
    current = re.findall(
        r'aria-current="true"[^>]*><span class="sr-only">last </span>([^<]*)<', picker
    )
    assert current == ["24 h"]
    assert "the last 24 hours" in page
    assert "high 100 %" in aria_label(figure(page, "utilization"))


@pytest.mark.parametrize("range_", ["7d", "30d"])
def test_long_ranges_are_read_from_roll_ups_and_still_show_the_data(client, box, range_):
    run_maintenance()

    page = text(get(client, host=HOST, gpu="0", range=range_))

    # 10-minute or hour roll-ups, with finer ones stitched on after the last rolled-up bucket
    # (which the page names depends on the time of day the data ends: not pinned here).
    assert re.search(r"from (10-minute|1-hour) roll-ups", page)
    assert "high 100 %" in aria_label(figure(page, "utilization"))


def test_a_custom_range_shows_that_window_with_earlier_and_later_links(client, box):
    start, end = box - timedelta(minutes=25), box - timedelta(minutes=15)

    response = get(
        client, host=HOST, gpu="0", range="custom", **{"from": wall(start), "to": wall(end)}
    )

    assert response.status_code == 200
    page = text(response)
    label = aria_label(figure(page, "utilization"))
    assert f"{timezone.localtime(start):%Y-%m-%d %H:%M}" in label
    # The window starts in the gap: only the load after it (100 %) is in the range.
    assert "low 100 %" in label and "high 100 %" in label
    assert "← earlier" in page and "later →" in page and "back to now" in page
    # the form shows the window (as the page writes a time: seconds only when not :00)
    assert f'value="{history_page.wall(start)}"' in page


def test_a_range_without_data_says_so_on_every_chart_and_the_lane(client, box):
    start = box - timedelta(days=400)

    page = text(
        get(
            client,
            host=HOST,
            gpu="0",
            **{"from": wall(start), "to": wall(start + timedelta(days=1))},
        )
    )

    assert page.count("No data in this range") == 4
    assert "utilization: no data." in aria_label(figure(page, "utilization"))
    assert "No GPU process was seen in this range" in section(page, "sessions")


# -- process sessions on the time axis, and ?at= ------------------------------------------------


def test_the_sessions_are_bars_on_the_same_time_axis_as_the_charts(client, box):
    page = text(get(client, host=HOST, gpu="1"))

    lane = section(page, "sessions")
    bars = re.findall(r'class="session-bar[^"]*" style="left: ([\d.]+)%; width: ([\d.]+)%', lane)
    # Two runs of the two captured processes, and the hostile job in the second run.
    assert len(bars) == 5
    # The first run started 50 minutes before now, 10 minutes into the hour shown.
    first = min(float(left) for left, _w in bars)
    assert first == pytest.approx(100 * 10 / 60, abs=0.5)
    widths = sorted(float(w) for _l, w in bars)
    assert widths[0] == pytest.approx(100 * 15 / 60, abs=0.5)  # each ran ~15 minutes
    # The bar says user, command and container (as text), its tooltip the whole command.
    assert "mallory · &lt;img src=x · docker &lt;b&gt;llm-train&lt;/b&gt;</a>" in lane
    assert "&lt;img src=x onerror=alert(1)&gt; --steal-gpu" in lane
    # The axis under the bars has the same ticks as the charts'.
    ticks = re.findall(r">(\d\d:\d\d)</span>", lane)
    assert ticks and ticks == re.findall(r">(\d\d:\d\d)</span>", figure(page, "power"))


def test_at_lists_who_was_on_the_gpu_at_that_moment(client, box):
    at = box - timedelta(minutes=10)

    response = get(client, host=HOST, gpu="1", at=wall(at))

    assert response.status_code == 200
    panel = section(text(response), "at")
    assert "Who was on GPU 1 at" in panel
    assert panel.count("<tr>") == 1 + 3  # the header, root's two processes and mallory's job
    assert "mallory" in panel and str(HOSTILE_PID) in panel
    assert ">gPU utilization</span>" not in panel
    assert ">GPU utilization</span> <span" in panel and "100 %" in panel  # the figures then
    # And a marker at that moment on every chart.
    assert text(response).count('class="at-marker') == 4 + 1


def test_at_on_the_host_page_lists_every_gpu_and_the_host_figures_then(client, box):
    panel = section(text(get(client, host=HOST, at=wall(box - timedelta(minutes=10)))), "at")

    assert "Who was on the GPUs of h100-box at" in panel
    assert panel.count("<tr>") == 1 + 5  # root's two processes on each GPU, mallory's job
    assert ">GPU 0</td>" in panel and ">GPU 1</td>" in panel
    assert ">cPU</span>" not in panel  # names as people write them
    assert (
        ">CPU</span>" in panel and ">network in</span>" in panel and ">load (1 min)</span>" in panel
    )


def test_at_a_moment_nobody_was_on_it_says_so(client, box):
    panel = section(
        text(get(client, host=HOST, gpu="0", at=wall(box - timedelta(minutes=25)))), "at"
    )

    assert "No GPU process was seen on GPU 0 at that moment." in panel


def test_clicking_a_moment_on_a_chart_is_one_link_to_who_was_on_it(client, box):
    page = text(get(client, host=HOST, gpu="1"))

    columns = re.findall(
        r'<a href="([^"]*)" title="([^"]*)" tabindex="-1" class="hcol">',
        figure(page, "utilization"),
    )
    assert len(columns) == 60
    # Column 45 of 60 is 45 minutes into the hour: 15 minutes ago, in the second load.
    href, title = (html.unescape(part) for part in columns[45])
    assert "utilization 100 %" in title and "who was on GPU 1 then" in title
    panel = section(text(client.get(href)), "at")
    assert "mallory" in panel


def test_a_moment_before_the_range_moves_the_range_to_it(client, box):
    at = box - timedelta(hours=3)
    ProcessSession.objects.filter(pid=HOSTILE_PID).update(
        first_seen=at - timedelta(minutes=5), last_seen=at + timedelta(minutes=5)
    )

    page = text(get(client, host=HOST, gpu="1", range="1h", at=wall(at)))

    assert "1 h around the moment asked about" in page
    assert "mallory" in section(page, "at")
    assert page.count('class="at-marker') == 5


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"host": "nope"},
        {"host": "x" * 300},
        {"host": HOST, "gpu": "7"},
        {"host": HOST, "gpu": "99999999"},
        {"host": HOST, "gpu": "GPU-not-there"},
        {"gpu": "GPU-not-there"},
        {"host": "h100-box\x00"},
    ],
)
def test_an_unknown_host_or_gpu_is_the_404_page(client, box, params):
    response = get(client, **params)

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("params", "parameter", "words"),
    [
        ({"range": "2h"}, "range", "range=&#x27;2h&#x27; is not one of: 1h, 24h, 7d, 30d, custom"),
        ({"range": "custom"}, "from", "a custom range needs from="),
        ({"from": "yesterday"}, "from", "is not a time like 2026-11-30T03:00"),
        ({"from": "2026-11-30T03:00", "to": "2026-11-30T02:00"}, "from", "must be before to="),
        ({"from": "2026-11-30T03:00", "to": "2026-11-30T03:00:30"}, "to", "at least a minute"),
        ({"from": "1990-01-01T00:00", "to": "2026-01-01T00:00"}, "from", "at most 730 days"),
        ({"at": "03:00 yesterday"}, "at", "is not a time like"),
        ({"at": "0001-01-01T00:00"}, "at", "too early"),
        ({"from": "-99999999w"}, "from", "is before the year 1"),
        ({"from": "-2 days"}, "from", "is not an ISO-8601 time"),
    ],
)
def test_a_bad_range_is_a_400_page_that_names_the_parameter(client, box, params, parameter, words):
    response = get(client, host=HOST, gpu="0", **params)

    assert response.status_code == 400
    page = text(response)
    assert 'role="alert"' in page and words in page
    assert f'<code class="font-mono">{parameter}</code>' in page
    assert '<nav aria-label="Range"' in page  # the picker is there to fix it
    assert '<figure id="chart-' not in page


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(["range", "from", "to", "at", "gpu"]),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(["custom", "1h", "now", "-5m", "2026-11-30T03:00", "0", "+1"]),
        ),
        max_size=5,
    )
)
def test_no_query_string_makes_a_500(client, box, params):
    response = get(client, host=HOST, **params)

    assert response.status_code in (200, 400, 404)


def test_hostile_process_names_and_containers_render_as_text(client, box):
    for params in ({"gpu": "1"}, {}, {"gpu": "1", "at": wall(box - timedelta(minutes=10))}):
        page = text(get(client, host=HOST, **params))

        assert HOSTILE not in page and HOSTILE_CONTAINER not in page
        assert html.escape(HOSTILE) in page.replace("&#x27;", "'")
        assert "&lt;b&gt;llm-train&lt;/b&gt;" in page


def test_a_host_known_live_but_not_stored_yet_says_so(client, db, settings):
    settings.HOST_NAME = "fresh"

    response = get(client, host="fresh")

    assert response.status_code == 200
    assert "Nothing is stored for fresh yet" in text(response)


# -- the live page links here -------------------------------------------------------------------


@pytest.fixture
def fresh_hub():
    reset_hub()
    yield
    reset_hub()


# The hub reads the latest snapshot on a fresh connection: the rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_the_live_page_links_the_history_of_the_host_and_of_each_gpu(client, box, fresh_hub):
    live = text(client.get(f"/hosts/{HOST}/"))

    assert f'href="/history/?host={HOST}"' in live
    links = re.findall(r'href="(/history/\?gpu=[^"]+)"', live)
    assert len(links) == 2
    page = text(client.get(html.unescape(links[1])))
    assert "GPU 1 · NVIDIA H100 80GB HBM3" in page and f"on {HOST}" in page


# -- statements per page ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "queries"),
    [
        # hosts, the host's GPUs, raw row count, last roll-ups, every chart's figures, sessions
        ({"host": HOST, "gpu": "0"}, 6),
        ({"host": HOST}, 6),
        # + the sessions open at that moment
        ({"host": HOST, "gpu": "0", "at": "-10m"}, 7),
        # + the host of the GPU's UUID
        ({"gpu": "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d8"}, 7),
        # past raw retention: no raw row count
        ({"host": HOST, "gpu": "0", "range": "30d"}, 5),
        ({"host": HOST, "range": "7d"}, 5),
        # a bad range: the hosts and GPUs for the pickers, nothing more
        ({"host": HOST, "gpu": "0", "range": "2h"}, 2),
    ],
)
def test_the_page_reads_a_fixed_number_of_statements(
    client, box, django_assert_num_queries, params, queries
):
    run_maintenance()
    client.get(URL, params)  # templates compiled, the hub made

    with django_assert_num_queries(queries):
        response = client.get(URL, params)

    assert response.status_code in (200, 400)
