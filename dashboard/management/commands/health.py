"""``manage.py health``: what ``GET /api/health`` says, for a probe without an HTTP server.

The worker's container or unit has no web server to ask; this runs the same checks in the
probe's own process and exits 0 when healthy, 1 otherwise, printing the same JSON. By default
it judges this machine's host (``HOOFHEARTED_HOST_NAME``): is its worker writing samples?
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from dashboard.health import CHECKS, health_report
from dashboard.operations import MAX_STALE_S


class Command(BaseCommand):
    help = "Check the database, the channel layer and the newest samples; exit 1 if unhealthy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default=None, help="host to judge (default: HOOFHEARTED_HOST_NAME)"
        )
        parser.add_argument("--all-hosts", action="store_true", help="judge every host")
        parser.add_argument(
            "--stale", type=float, default=None, help="seconds (default: HOOFHEARTED_STALE_AFTER_S)"
        )
        parser.add_argument(
            "--checks",
            default=",".join(CHECKS),
            help=f"comma-separated subset of: {', '.join(CHECKS)}",
        )

    def handle(self, *args, **options) -> None:
        checks = tuple(c for c in CHECKS if c in options["checks"].split(","))
        unknown = set(options["checks"].split(",")) - set(CHECKS)
        if unknown or not checks:
            raise CommandError(f"--checks: each must be one of {', '.join(CHECKS)}", returncode=2)
        stale = options["stale"] if options["stale"] is not None else settings.STALE_AFTER_S
        if not 1 <= stale <= MAX_STALE_S:
            raise CommandError(f"--stale must be between 1 and {MAX_STALE_S}", returncode=2)
        host = None if options["all_hosts"] else (options["host"] or settings.HOST_NAME)
        report = health_report(host, stale, timezone.now(), checks)
        self.stdout.write(json.dumps(report.as_data()))
        if not report.ok:
            raise CommandError("; ".join(report.reasons), returncode=1)
