"""A process whose name and command line an attacker chose, from a replayed capture, through
everything that shows it: the live page, admin (list, detail, CSV export); the API and
/metrics have their own tests (test_operations_api, test_prometheus). Shown escaped, stored
with its secrets redacted, exported as text a spreadsheet will not run."""

from __future__ import annotations

import csv
import io

import pytest

from dashboard.tests.conftest import HOSTILE_NAME, collect, hostile_capture
from monitoring.models import ProcessSession

RAW = ('<script>alert("name")</script>', "<img src=x onerror=alert(1)>")


@pytest.fixture
def hostile(db, tmp_path, settings):
    settings.HOST_NAME = "h100"
    collect("h100", hostile_capture(tmp_path))
    return ProcessSession.objects.get(pid=448)


def test_it_is_stored_as_named_with_its_password_redacted(hostile):
    assert hostile.name == HOSTILE_NAME[:255]
    assert "hunter2" not in hostile.command and "--password=" in hostile.command


def test_the_live_page_shows_it_escaped(client, hostile):
    page = client.get("/hosts/h100/").content.decode()
    assert "&lt;script&gt;alert(" in page  # shown, as text
    for raw in RAW:
        assert raw not in page
    assert "hunter2" not in page


def test_admin_lists_and_shows_it_escaped(admin_client, hostile):
    listing = admin_client.get("/admin/monitoring/processsession/").content.decode()
    detail = admin_client.get(
        f"/admin/monitoring/processsession/{hostile.pk}/change/"
    ).content.decode()
    for page in (listing, detail):
        assert "&lt;script&gt;alert(" in page
        for raw in RAW:
            assert raw not in page
        assert "hunter2" not in page


def test_the_csv_export_keeps_it_one_cell_that_a_spreadsheet_shows_as_text(admin_client, hostile):
    response = admin_client.post(
        "/admin/monitoring/processsession/",
        {"action": "export_csv", "index": 0, "_selected_action": [hostile.pk]},
    )
    body = b"".join(response.streaming_content).decode()
    header, row = list(csv.reader(io.StringIO(body)))
    name = row[header.index("name")]
    assert name == "'" + HOSTILE_NAME  # a leading ' : text, not a formula (OWASP)
    assert "hunter2" not in body
