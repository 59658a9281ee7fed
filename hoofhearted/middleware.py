"""Site-wide answers for a database that cannot serve: a 503 that says why, not a 500.

Any view (the history API, admin, the dashboard) may hit a database that is away (restart,
outage) or that lacks its tables (recreated, restored, not migrated). Those are not bugs:
the answer names the problem, says what to do, and asks the client to retry shortly.
"""

from __future__ import annotations

import logging
from html import escape

from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse

from monitoring.storage.db_errors import unavailable_reason

log = logging.getLogger(__name__)

RETRY_AFTER_S = 10


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        reason = unavailable_reason(exc)
        if reason is None:
            return None  # a real error: Django's own handling
        log.warning("%s %s: %s", request.method, request.path, reason)
        # A connection broken by an outage is dropped now; the next request opens a new one.
        for conn in connections.all(initialized_only=True):
            conn.close_if_unusable_or_obsolete()
        message = f"Hoof Hearted's history is unavailable: {reason}"
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"error": message}, status=503)
        elif request.path == "/metrics":  # a scraper or curl: a comment line, not a page
            response = HttpResponse(
                f"# {message}\n", status=503, content_type="text/plain; charset=utf-8"
            )
        else:
            response = HttpResponse(
                "<!doctype html><title>Database unavailable</title>"
                f"<h1>Database unavailable</h1><p>{escape(message)}</p>"
                f"<p>This page will work again once it is back; retry in {RETRY_AFTER_S} s.</p>",
                status=503,
            )
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
