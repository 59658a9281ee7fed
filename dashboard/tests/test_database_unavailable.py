"""A database that cannot serve (away, or without its tables) gets a 503 that says why and
when to retry, from every view: the history API as JSON, admin pages as HTML. Real failures:
a table renamed away (SQLite and PostgreSQL) and the PostgreSQL server stopped."""

from __future__ import annotations

import pytest

from monitoring.models import GpuSample
from monitoring.tests import pg_control
from monitoring.tests.helpers import rename

TABLE = GpuSample._meta.db_table
URL = "/api/history"


QUERY = {"host": "rig", "gpu": "0", "metric": "utilization", "points": 20}


@pytest.mark.django_db(transaction=True)
def test_a_database_without_its_tables_answers_503_saying_to_migrate(client, rig):
    # a database recreated empty or restored from an older dump, `migrate` not run yet
    rename(TABLE, f"{TABLE}_away")
    try:
        response = client.get(URL, QUERY)
    finally:
        rename(f"{TABLE}_away", TABLE)
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert "manage.py migrate" in response.json()["error"]
    assert client.get(URL, QUERY).status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_outage_answers_503_and_history_is_back_after_it(client, rig):
    pg_control.skip_unless_available()
    assert client.get(URL, QUERY).status_code == 200
    with pg_control.outage():
        response = client.get(URL, QUERY)
    assert response.status_code == 503
    assert "history is unavailable: the database cannot be reached" in response.json()["error"]
    assert client.get(URL, QUERY).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_an_admin_page_without_its_table_answers_503_in_html(admin_client, rig):
    page = "/admin/monitoring/gpusample/"
    assert admin_client.get(page).status_code == 200
    rename(TABLE, f"{TABLE}_away")
    try:
        response = admin_client.get(page)
    finally:
        rename(f"{TABLE}_away", TABLE)
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert b"manage.py migrate" in response.content
    assert admin_client.get(page).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_scrape_without_the_database_gets_a_plain_text_503(client, rig):
    table = "monitoring_latestsnapshot"
    rename(table, f"{table}_away")
    try:
        response = client.get("/metrics")
    finally:
        rename(f"{table}_away", table)
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode().startswith("# Hoof Hearted's history is unavailable:")
    assert client.get("/metrics").status_code == 200
