"""Read-only access control: one shared token for everything not asked from this machine.

Who needs it (``HOOFHEARTED_ACCESS``): ``auto`` (default) asks it of every request that did
not come straight from this machine, i.e. from a non-loopback client address or forwarded by
a proxy (``X-Forwarded-For``, ``X-Real-IP``, ``Forwarded``: nginx in front); ``token`` asks
it always; ``open`` never (behind a proxy that does its own login). The one-command local
run (browser and server on one machine) needs nothing.

How it is given, in this order: ``Authorization: Bearer <token>`` (API clients, Prometheus),
the ``hoofhearted_access`` cookie, or ``?token=<token>`` once: a page opened that way is
redirected to itself without it, with the cookie set (HttpOnly, SameSite=Lax, Secure over
HTTPS), so the token does not stay in the address bar, history or Referer. The cookie holds
an HMAC of the token under ``SECRET_KEY``, not the token: changing either logs everyone out.

Static files are public (nginx serves them without asking). ``/admin/`` is left to Django's
own staff login. A request that needs the token while none is configured is refused (403),
and so is any request from another machine while the development ``SECRET_KEY`` is in use:
cookies signed with a published key would prove nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from html import escape
from urllib.parse import parse_qs, urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.http.cookie import parse_cookie
from django.utils.crypto import salted_hmac

from hoofhearted.exposure import is_loopback

COOKIE = "hoofhearted_access"
COOKIE_MAX_AGE = 30 * 24 * 3600
#: Headers a reverse proxy adds: the request came from elsewhere even if nginx is local.
PROXY_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded")
#: Not behind the token: static files (public), admin (its own staff login).
EXEMPT_PREFIXES = ("/static/", "/admin/")


def needs_token(client: str | None, headers: Mapping[str, str]) -> bool:
    """Does a request from ``client`` with ``headers`` (lower-case names) need the token?"""
    mode = settings.ACCESS_MODE
    if mode == "open":
        return False
    if mode == "token":
        return True
    # No client address: a Unix socket (nginx on this machine: its headers say the rest).
    remote = client is not None and client != "" and not is_loopback(client)
    return remote or any(h in headers for h in PROXY_HEADERS)


def cookie_value(token: str) -> str:
    return salted_hmac("hoofhearted.access", token).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def presented(headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None):
    """Whether the request carries the token (header, cookie or query): True, False, or
    None when it carries none at all."""
    token = settings.ACCESS_TOKEN
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return _same(auth[7:].strip(), token)
    if COOKIE in cookies:
        return _same(cookies[COOKIE], cookie_value(token))
    if query_token is not None:
        return _same(query_token, token)
    return None


def refusal(headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None):
    """``None`` when a request that needs the token may go on, else (status, message)."""
    if settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
        return 403, (
            "SECRET_KEY is not set: the built-in development key only serves this machine "
            "(set SECRET_KEY to a long random value)"
        )
    if not settings.ACCESS_TOKEN:
        return 403, (
            "HOOFHEARTED_ACCESS_TOKEN is not set: Hoof Hearted only serves this machine "
            "(set it, or HOOFHEARTED_ACCESS=open behind a proxy with its own login)"
        )
    ok = presented(headers, cookies, query_token)
    if ok:
        return None
    return 401, "the access token is wrong" if ok is False else "an access token is required"


# --- HTTP (Django middleware) ------------------------------------------------------------------

_PAGE = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Hoof Hearted: access token</title>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto">
<h1>Hoof Hearted</h1><p>{message}.</p>
{form}</body></html>"""
_FORM = """<form method="get" action="{action}">
<label>Access token <input type="password" name="token" autocomplete="current-password"
required autofocus></label> <button type="submit">Open</button></form>
<p><small>The operator set it as HOOFHEARTED_ACCESS_TOKEN.</small></p>"""


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or request.path == "/metrics"


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if _wants_json(request):
        response: HttpResponse = JsonResponse({"error": message}, status=status)
    else:
        form = _FORM.format(action=escape(request.path)) if status == 401 else ""
        response = HttpResponse(_PAGE.format(message=escape(message), form=form), status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="Hoof Hearted"'
    response["Cache-Control"] = "no-store"
    return response


class AccessTokenMiddleware:
    """Ask for the token where :func:`needs_token` says so (before sessions and views)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(EXEMPT_PREFIXES):
            return self.get_response(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not needs_token(request.META.get("REMOTE_ADDR"), headers):
            return self.get_response(request)
        query_token = request.GET.get("token")
        refused = refusal(headers, request.COOKIES, query_token)
        if refused is not None:
            return _refuse(request, *refused)
        if query_token is not None and request.method == "GET" and not _wants_json(request):
            return self._remember(request)
        return self.get_response(request)

    def _remember(self, request: HttpRequest) -> HttpResponse:
        """A page opened with ?token=: the same page without it, and the cookie instead."""
        rest = [(k, v) for k, values in request.GET.lists() if k != "token" for v in values]
        response = HttpResponseRedirect(request.path + (f"?{urlencode(rest)}" if rest else ""))
        response.set_cookie(
            COOKIE,
            cookie_value(settings.ACCESS_TOKEN),
            max_age=COOKIE_MAX_AGE,
            secure=request.is_secure(),
            httponly=True,
            samesite="Lax",
        )
        return response


# --- WebSocket (ASGI middleware around the WebSocket routes) ---------------------------------


def _scope_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


class AccessTokenASGIMiddleware:
    """The same rule for WebSockets: a handshake without the token is refused (HTTP 403)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        client = (scope.get("client") or (None,))[0]
        headers = _scope_headers(scope.get("headers", ()))
        if needs_token(client, headers):
            cookies = parse_cookie(headers.get("cookie", ""))
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if refusal(headers, cookies, (query.get("token") or [None])[0]) is not None:
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 4401})
                return None
        return await self.inner(scope, receive, send)
