"""``manage.py serve``: the dashboard and its collector in one process, for one command.

daphne serves the pages and WebSockets on ``HOST:PORT`` (127.0.0.1:8000 by default) while
the collect worker samples this machine in a thread of the same process and hands each
snapshot to the live hub directly: no Redis, no second process. ``--demo`` replays the
bundled H100 capture (under load, then idle, in turn). Every ``collect`` option works.

If another collector already holds this host's lock (``manage.py collect`` runs), the page
is served from what it stores instead. Production runs the two apart: daphne, and
``manage.py collect`` publishing through Redis.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from dashboard.embedded import HubPublisher
from dashboard.hub import get_hub
from monitoring.host_names import checked_host_name
from monitoring.management.commands.collect import Command as CollectCommand
from monitoring.telemetry.replay import DEFAULT_REPLAY_DIR

log = logging.getLogger(__name__)

#: The host name ``--demo`` records under (``--host-name`` or HOOFHEARTED_HOST_NAME to change).
DEMO_HOST = "h100-demo"


class Command(CollectCommand):
    help = "Serve the live dashboard with the collector running inside the server."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--host", default=settings.SERVE_HOST, help="address to listen on")
        parser.add_argument("--port", type=int, default=settings.SERVE_PORT, help="port")
        parser.add_argument(
            "--demo", action="store_true", help="replay the bundled H100 capture (load, idle)"
        )
        parser.add_argument(
            "--no-collector", action="store_true", help="serve only (a collector runs apart)"
        )

    def handle(self, *args, **options) -> None:
        if options["once"] or options["from_file"]:
            raise CommandError(
                "serve runs continuously: use `manage.py collect` for --once/--from-file"
            )
        if options["demo"]:
            options["replay"] = options["replay"] or str(DEFAULT_REPLAY_DIR)
            options["state"] = options["state"] or "load,idle"
            # a host of its own: the replayed H100 never joins this machine's history
            options["host_name"] = (
                options["host_name"] or os.environ.get("HOOFHEARTED_HOST_NAME") or DEMO_HOST
            )
            settings.HOST_NAME = options["host_name"]  # the page opens on it
        checked_host_name(options["host_name"] or settings.HOST_NAME)  # before anything starts
        _check_free(options["host"], options["port"])
        hub = get_hub()
        hub.embedded = not options["no_collector"]
        self.worker = None
        self._stopping = threading.Event()
        collector = None
        if hub.embedded:
            collector = threading.Thread(
                target=self._collect, args=args, kwargs=options, name="hoofhearted-collect"
            )
            collector.start()
        try:
            self._serve(options["host"], options["port"])
        finally:
            self._stopping.set()
            if self.worker is not None:
                self.worker.request_stop("server stopped")
            if collector is not None:
                collector.join(settings.WORKER_STOP_TIMEOUT_S + 15)

    def publisher(self, host_name: str) -> HubPublisher:
        return HubPublisher(host_name, get_hub())

    def run(self, worker) -> int:
        self.worker = worker
        if self._stopping.is_set():
            return 0
        return worker.run()

    def _collect(self, *args, **options) -> None:
        try:
            CollectCommand.handle(self, *args, **options)
        except CommandError as exc:  # another collector holds the lock, or a bad option
            get_hub().embedded = False  # hear that collector instead
            self.stderr.write(f"collector not started here: {exc}")
            self.stderr.write("serving the figures that collector stores and publishes")
        except Exception:
            log.exception("the in-process collector stopped; the page goes on")

    def _serve(self, host: str, port: int) -> None:
        from hoofhearted.web import plain_autobahn_log_arguments, use_uvloop

        use_uvloop()  # before daphne.server: it creates its loop when imported
        plain_autobahn_log_arguments()
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from hoofhearted.asgi import application

        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        self.stdout.write(f"Hoof Hearted is running: open http://{shown}:{port}/  (Ctrl-C stops)")
        self.stdout.flush()
        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            websocket_timeout=-1,  # never close live pages after 24 h (code 1000: no reconnect)
            verbosity=0,
        ).run()


def _check_free(host: str, port: int) -> None:
    """Fail with a clear line, before the collector starts, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            hint = (
                "is Hoof Hearted already running? Open that one, or choose another port "
                "with PORT=8001"
                if getattr(exc, "errno", None) == errno.EADDRINUSE
                else "check the address (HOST=127.0.0.1, or 0.0.0.0 for every interface)"
            )
            raise CommandError(f"cannot listen on {host}:{port} ({reason}): {hint}") from None
