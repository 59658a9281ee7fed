"""The shipped nginx site in front of a real daphne on loopback, with a real worker behind it:
the page, a static file, the history API and a live WebSocket frame come through TLS, plain
HTTP is redirected, and Django sees the request as HTTPS (secure cookies, HSTS). About 10 s."""

from __future__ import annotations

import http.client
import json
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from dashboard.tests.site import HOST, ROOT, TOKEN, nginx_binary, running_site

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (scripts/services.sh installs it)"
)


@pytest.fixture(scope="module")
def site():
    with running_site() as site:
        site.wait_healthy()
        yield site


def test_the_live_page_comes_through_tls_with_hsts(site):
    status, headers, body = site.get("/")
    assert status == 200
    assert b"NVIDIA H100 80GB HBM3" in body
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers["Server"] == "nginx"  # server_tokens off: no version


def test_a_static_file_is_served_by_nginx_itself(site):
    status, headers, body = site.get("/static/dashboard/app.css", token=None)
    assert status == 200
    assert body == (ROOT / "static" / "dashboard" / "app.css").read_bytes()
    assert headers["Content-Type"] == "text/css"
    assert {"max-age=604800", "public"} <= set(headers.get_all("Cache-Control"))


def test_the_history_api_comes_through(site):
    query = f"/api/history?host={HOST}&gpu=0&metric=utilization&from=-10m"
    deadline = time.monotonic() + 20
    while True:  # the worker writes every 2 s
        status, body = site.get_json(query)
        assert status == 200, body
        if any(p["avg"] is not None for p in body["points"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert body["metric"] == "utilization" and body["unit"] == "%"
    assert {p["avg"] for p in body["points"] if p["avg"] is not None} == {100}


def test_a_live_websocket_frame_comes_through(site):
    with connect(
        f"wss://localhost:{site.https}/ws/live/?host={HOST}",
        ssl=site.tls(),
        origin=site.origin,
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        open_timeout=10,
    ) as socket:
        frame = socket.recv(timeout=15)
    # the first frame is the whole live body, swapped in by htmx, from a fresh sample
    assert frame.lstrip().startswith('<div id="live-body" hx-swap-oob="true"')
    assert 'data-stale="false"' in frame and "NVIDIA H100 80GB HBM3" in frame


def test_a_websocket_from_a_foreign_origin_is_refused(site):
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"wss://localhost:{site.https}/ws/live/?host={HOST}",
            ssl=site.tls(),
            origin="https://evil.example.com",
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403


def test_plain_http_is_redirected_to_https(site):
    conn = http.client.HTTPConnection("127.0.0.1", site.http, timeout=10)
    conn.request("GET", "/api/history?metric=utilization")
    response = conn.getresponse()
    assert response.status == 301
    assert response.headers["Location"] == "https://127.0.0.1/api/history?metric=utilization"


def test_django_sees_https_through_nginx_and_health_is_green(site):
    status, body = site.get_json("/api/health")
    assert status == 200, body
    assert [h["host"] for h in body["hosts"]] == [HOST]
    # the same request straight to daphne over plain HTTP is redirected to HTTPS by Django,
    # except the probes' endpoints
    status, headers, _ = site.get("/api/config", via_nginx=False)
    assert status == 301 and headers["Location"].startswith("https://")
    status, _, body = site.get("/api/health", via_nginx=False)
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_through_nginx_the_token_is_asked_and_traded_for_a_cookie(site):
    status, headers, _ = site.get("/api/snapshot", token=None)
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="Hoof Hearted"'
    status, headers, _ = site.get(f"/?token={TOKEN}", token=None)
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert "Secure" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
    status, _, body = site.get("/", token=None, Cookie=cookie)
    assert status == 200 and b"NVIDIA H100 80GB HBM3" in body
    # the browser sends the same cookie with the page's WebSocket
    with connect(
        f"wss://localhost:{site.https}/ws/live/?host={HOST}",
        ssl=site.tls(),
        origin=site.origin,
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    ) as socket:
        assert "NVIDIA H100 80GB HBM3" in socket.recv(timeout=15)


def test_a_websocket_without_the_token_is_refused_through_nginx(site):
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"wss://localhost:{site.https}/ws/live/?host={HOST}",
            ssl=site.tls(),
            origin=site.origin,
            open_timeout=10,
        )
    assert refused.value.response.status_code == 403


def test_a_url_over_16_kb_gets_a_414_from_nginx_where_daphne_alone_would_not_answer(site):
    # Twisted drops a request line over 16 KB without a reply (README: troubleshooting);
    # nginx in front says what is wrong
    status, _, body = site.get(f"/api/history?metric=utilization&host={'x' * 20_000}")
    assert status == 414 and b"Request-URI Too Large" in body
    status, body = site.get_json(f"/api/history?metric=utilization&host={'x' * 6_000}")
    assert status == 400 and body["parameter"] == "host"  # under the limit: Django answers
