"""ASGI entry point: HTTP through Django, WebSockets (the live page) through Channels.

Production runs ``daphne --websocket_timeout -1 hoofhearted.asgi:application``: daphne's
default closes every socket after 24 h with code 1000, from which the htmx ws extension does
not reconnect. WebSockets are accepted only from the site's own origins (ALLOWED_HOSTS).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hoofhearted.settings")
# Django must be set up before anything imports models or consumers.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from dashboard.hub import bind_server_loop  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402

application = bind_server_loop(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
        }
    )
)
