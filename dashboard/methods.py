"""The HTTP methods a read-only endpoint answers: GET and HEAD, and a 405 to anything else.

Uptime checkers probe with HEAD, so ``require_GET`` (a 405 to HEAD) reads as "service down":
``require_safe`` answers HEAD like GET (the server drops the body). And the CSRF middleware
runs before the view's method check, so a ``POST /metrics`` without a token got Django's HTML
"CSRF verification failed" 403 instead of a 405. These views never change state, so there is
nothing for CSRF to protect: they are exempt and their method check answers.
"""

from __future__ import annotations

from collections.abc import Callable

from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe


def read_only(view: Callable) -> Callable:
    """``view`` answering GET and HEAD; POST, PUT, DELETE, … get a 405 with ``Allow: GET, HEAD``
    (never a CSRF 403). Only for views that change no state."""
    return csrf_exempt(require_safe(view))
