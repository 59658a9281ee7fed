"""ASGI entry point: HTTP through Django, WebSockets (the live page) through Channels.

Production runs ``daphne --websocket_timeout -1 hoofhearted.asgi:application``: daphne's
default closes every socket after 24 h with code 1000, from which the htmx ws extension does
not reconnect. WebSockets are accepted only from the site's own origins (ALLOWED_HOSTS) and,
from other machines, with the access token (:mod:`hoofhearted.access`).
"""

import os
import sys

from django.core.asgi import get_asgi_application
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hoofhearted.settings")
# Django must be set up before anything imports models or consumers.
try:
    django_asgi_app = get_asgi_application()
except ImproperlyConfigured as exc:
    # A bad or unsafe environment (e.g. no SECRET_KEY on a public address): one clear line.
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)  # as manage.py: a configuration error, not a crash

from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

from dashboard.hub import bind_server_loop
from dashboard.routing import websocket_urlpatterns
from hoofhearted.access import AccessTokenASGIMiddleware

application = bind_server_loop(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(
                AccessTokenASGIMiddleware(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
