"""The web server: daphne's own command line, on uvloop's event loop.

daphne creates the asyncio loop under its Twisted reactor when ``daphne.server`` is first
imported, before it loads the application, so only the program that imports daphne can
choose the loop: this one. On uvloop daphne spends about 15 % less CPU per WebSocket frame
(1,000 live viewers: 11.4 to 12.4 % of a core against 13.6 to 15.1 %, docs/benchmarks.md "Live
page"). Without uvloop (not installed, or Windows, where it does not exist) this is daphne
as usual. Before it listens it runs Django's system checks, as ``manage.py serve`` does
(daphne itself runs none): a setting Django refuses stops it here, exit 2. Every daphne
option works::

    python -m hoofhearted.web -b 127.0.0.1 -p 8000 --websocket_timeout -1 hoofhearted.asgi:application
"""

from __future__ import annotations

import asyncio
import os
import sys


def use_uvloop() -> bool:
    """Make uvloop the loop daphne will create; False when it cannot be (too late, or absent)."""
    if "daphne.server" in sys.modules:  # its loop and reactor exist already
        return False
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def plain_autobahn_log_arguments() -> None:
    """Have autobahn build its debug-log arguments as plain text, not click-coloured.

    autobahn's ``sendData`` formats ``hltype``/``hlval`` arguments for a debug line on every
    frame, whether debug logging is on or not; when click is importable (check-jsonschema and
    other tools bring it) each is a ``click.style`` call, about 8 % of daphne's time in a
    1,000-viewer fan-out (py-spy). Without click autobahn writes the same words uncoloured.
    """
    try:
        import autobahn.util
    except ImportError:
        return
    if getattr(autobahn.util, "_HAS_CLICK", False):
        autobahn.util._HAS_CLICK = False


def refuse_a_bad_configuration() -> None:
    """Set Django up and run its system checks (without database checks, as ``manage.py
    serve``); on a configuration error or a serious check message write them to stderr and
    exit 2. Warnings are written and the server starts. Call after :func:`use_uvloop`:
    setting Django up imports daphne's server."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hoofhearted.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management.base import BaseCommand, SystemCheckError

    try:
        django.setup()
        BaseCommand().check()  # Django's own check run and wording, as before any command
    except (ImproperlyConfigured, SystemCheckError) as exc:
        reason = str(exc).replace("SystemCheckError: ", "", 1)
        print(f"configuration error: {reason}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    use_uvloop()
    plain_autobahn_log_arguments()
    if "--help" not in sys.argv[1:] and "-h" not in sys.argv[1:]:
        refuse_a_bad_configuration()
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
