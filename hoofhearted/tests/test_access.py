"""Read-only access control: nothing asked of this machine, a shared token asked of every
other machine and of anything forwarded by a proxy, for pages, the API, /metrics and the
WebSocket; a page opened with ?token= trades it for a cookie. Real views, the real ASGI
application (the end-to-end run through nginx is in dashboard/tests/test_nginx.py)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from dashboard.hub import reset_hub
from hoofhearted.access import COOKIE, cookie_value

TOKEN = "a-long-shared-read-only-token"
REMOTE = {"REMOTE_ADDR": "192.0.2.10"}
PROXIED = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.10"}
PROTECTED = [
    "/",
    "/hosts/h100/",
    "/live/fragments",
    "/history/",
    "/api/history?metric=utilization",
    "/api/health",
    "/api/config",
    "/api/snapshot",
    "/metrics",
]


@pytest.fixture(autouse=True)
def token_set(settings):
    settings.SECRET_KEY = "a-real-secret-key-" * 4
    settings.ACCESS_MODE = "auto"
    settings.ACCESS_TOKEN = TOKEN


@pytest.mark.django_db
def test_this_machine_needs_no_token(client):
    assert client.get("/api/config").status_code == 200


@pytest.mark.parametrize("url", PROTECTED)
@pytest.mark.parametrize("origin", [REMOTE, PROXIED], ids=["other machine", "through a proxy"])
@pytest.mark.django_db
def test_every_page_and_endpoint_asks_other_machines_for_the_token(client, url, origin):
    response = client.get(url, **origin)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="Hoof Hearted"'
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_the_api_says_so_in_json_and_a_page_offers_a_form(client):
    response = client.get("/api/config", **REMOTE)
    assert response.json() == {"error": "an access token is required"}
    page = client.get("/history/", **REMOTE).content.decode()
    assert '<form method="get" action="/history/">' in page
    assert 'type="password" name="token"' in page


@pytest.mark.django_db
def test_a_bearer_token_opens_the_api_and_a_wrong_one_is_named_wrong(client):
    ok = client.get("/api/config", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **REMOTE)
    assert ok.status_code == 200
    wrong = client.get("/api/config", HTTP_AUTHORIZATION="Bearer guess", **REMOTE)
    assert (wrong.status_code, wrong.json()) == (401, {"error": "the access token is wrong"})


@pytest.mark.django_db
def test_a_page_opened_with_the_token_trades_it_for_a_cookie(client):
    response = client.get("/history/", {"token": TOKEN, "host": "h100"}, secure=True, **PROXIED)
    assert response.status_code == 302
    assert response["Location"] == "/history/?host=h100"  # the token leaves the address bar
    cookie = response.cookies[COOKIE]
    assert cookie.value == cookie_value(TOKEN) and TOKEN not in cookie.value
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert client.get("/history/", **PROXIED).status_code == 200  # the cookie now
    assert client.get("/api/config", **PROXIED).status_code == 200


@pytest.mark.django_db
def test_a_new_token_logs_every_cookie_out(client, settings):
    client.cookies[COOKIE] = cookie_value(TOKEN)
    assert client.get("/api/config", **REMOTE).status_code == 200
    settings.ACCESS_TOKEN = "the-next-shared-read-only-token"
    assert client.get("/api/config", **REMOTE).status_code == 401


@pytest.mark.django_db
def test_the_token_in_the_query_opens_the_api_without_a_redirect(client):
    response = client.get("/api/config", {"token": TOKEN}, **REMOTE)
    assert response.status_code == 200 and COOKIE not in response.cookies


@pytest.mark.django_db
def test_without_a_configured_token_other_machines_are_refused_saying_what_to_set(client, settings):
    settings.ACCESS_TOKEN = ""
    response = client.get("/api/config", **REMOTE)
    assert response.status_code == 403
    assert response.json()["error"].startswith("HOOFHEARTED_ACCESS_TOKEN is not set")


@pytest.mark.django_db
def test_the_development_secret_key_never_serves_another_machine(client, settings):
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY
    response = client.get("/api/config", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **REMOTE)
    assert response.status_code == 403
    assert response.json()["error"].startswith("SECRET_KEY is not set")
    assert client.get("/api/config").status_code == 200  # this machine still is


@pytest.mark.django_db
def test_open_mode_asks_nobody_and_token_mode_asks_everybody(client, settings):
    settings.ACCESS_MODE = "open"
    assert client.get("/api/config", **REMOTE).status_code == 200
    settings.ACCESS_MODE = "token"
    assert client.get("/api/config").status_code == 401


@pytest.mark.django_db
def test_admin_keeps_its_own_staff_login(client, admin_user):
    response = client.get("/admin/", **REMOTE)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(admin_user)
    assert client.get("/admin/", **REMOTE).status_code == 200


# --- the WebSocket ------------------------------------------------------------------------


@pytest.fixture
def fresh_hub(settings):
    """The in-process layer (access is under test here, not Redis) and a hub of this test's."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    reset_hub()
    yield
    reset_hub()


async def opens(client: tuple[str, int], **headers: str) -> bool:
    from hoofhearted.asgi import application

    raw = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    communicator = WebsocketCommunicator(application, "/ws/live/?host=h100", headers=raw)
    communicator.scope["client"] = client
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
def test_the_websocket_asks_other_machines_for_the_token(fresh_hub):
    async def scenario():
        assert await opens(("127.0.0.1", 5000))
        assert not await opens(("192.0.2.10", 5000))
        assert not await opens(("127.0.0.1", 5000), x_forwarded_for="192.0.2.10")
        assert await opens(("192.0.2.10", 5000), authorization=f"Bearer {TOKEN}")
        assert await opens(("192.0.2.10", 5000), cookie=f"{COOKIE}={cookie_value(TOKEN)}")
        assert not await opens(("192.0.2.10", 5000), cookie=f"{COOKIE}=forged")

    async_to_sync(scenario)()
