"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

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
    sys.exit(f"configuration error: {exc}")

from channels.routing import ProtocolTypeRouter

application = ProtocolTypeRouter({"http": django_asgi_app})
