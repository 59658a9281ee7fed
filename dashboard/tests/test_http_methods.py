"""Every dashboard endpoint only reads: HEAD answers like GET (uptime checkers probe with it),
and POST, PUT or DELETE get a plain 405 naming GET and HEAD, never the CSRF failure page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.urls import urlpatterns

#: Each dashboard URL, with ``h100`` for a host in its path.
URLS = [
    reverse(f"dashboard:{p.name}", kwargs=dict.fromkeys(p.pattern.converters, "h100"))
    for p in urlpatterns
]

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser_client():
    """A client that sends no CSRF token and is checked for one, as curl or a form elsewhere."""
    return Client(enforce_csrf_checks=True)


def test_every_page_the_qa_tester_probed_is_covered():
    assert {"/", "/hosts/h100/", "/api/health", "/metrics", "/api/snapshot", "/history/"} <= set(
        URLS
    )


@pytest.mark.parametrize("url", URLS)
def test_head_answers_like_get_without_a_body(browser_client, h100_host, url):
    got = browser_client.get(url)
    head = browser_client.head(url)
    assert head.status_code == got.status_code != 405
    assert head["Content-Type"] == got["Content-Type"]
    assert got.content and not head.content


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_method_that_would_change_something_is_a_405_naming_get_and_head(
    browser_client, h100_host, url, method
):
    response = getattr(browser_client, method)(url)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert b"CSRF" not in response.content


def test_the_admin_still_asks_for_a_csrf_token(browser_client):
    response = browser_client.post("/admin/login/", {"username": "a", "password": "b"})
    assert response.status_code == 403
    assert b"CSRF verification failed" in response.content
