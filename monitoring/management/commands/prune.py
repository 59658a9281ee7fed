"""``manage.py prune``: roll up finished buckets and delete what retention no longer keeps.

The same maintenance the worker runs every ``MAINTENANCE_INTERVAL_S``; run it by hand after
changing the retention settings, or from cron when no worker runs.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.models import Host
from monitoring.storage.retention import run_maintenance, timescaledb_installed


class Command(BaseCommand):
    help = "Roll up finished buckets, then delete samples and roll-ups past their retention."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count, change nothing")
        parser.add_argument("--host", metavar="NAME", help="only this host (default: every host)")

    def handle(self, *args, **options) -> None:
        host = options["host"]
        if host is not None and not Host.objects.filter(name=host).exists():
            raise CommandError(f"--host {host}: no such host")
        result = run_maintenance(host_name=host, dry_run=options["dry_run"])
        for line in result.lines():
            self.stdout.write(line)
        if timescaledb_installed():
            self.stdout.write(
                "TimescaleDB is installed but not used: history is kept in plain tables."
            )
