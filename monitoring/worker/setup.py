"""What ``manage.py collect`` checks and wires before the worker starts.

Kept apart from :mod:`monitoring.worker.loop` so the worker itself takes its collaborators as
arguments (tests hand it real ones directly) and this module is the one place that knows
where the concrete alerting and maintenance code lives.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connections

from monitoring.storage.registry import gpu_storage_key

log = logging.getLogger(__name__)


def ensure_schema(using: str = "default") -> None:
    """Make sure the tables exist before sampling into them.

    The embedded SQLite default is migrated on the spot (the one-command run needs no setup
    step); PostgreSQL is shared and managed, so a missing migration stops the worker with
    the command to run. A database that is down at start is not an error: the worker
    buffers until it is back.
    """
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[using]
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        log.warning(
            "database unreachable at start (%s): sampling into the buffer until it is back",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
        connection.close()
        return
    if plan:
        if connection.vendor != "sqlite":
            connection.close()
            raise CommandError(
                f"the database is not up to date ({len(plan)} migration(s) not applied): "
                "run `python manage.py migrate` first",
                returncode=1,
            )
        log.warning(
            "creating the tables in %s (%d migrations; embedded SQLite)",
            connection.settings_dict["NAME"],
            len(plan),
        )
        call_command("migrate", database=using, interactive=False, verbosity=0)
    connection.close()  # the sampling thread keeps no connection: storage has its own


def alerting_hooks(host_name: str) -> tuple[Callable[[], Any] | None, Callable[[Any], Any] | None]:
    """(rules loader, evaluator factory) for the worker; (None, None) without alerting."""
    try:
        from monitoring.alerting.evaluator import AlertEvaluator
        from monitoring.alerting.rules import load_rules
    except ImportError as exc:
        log.warning("alerting is not available (%s): no alerts are evaluated", exc)
        return None, None
    # GPUs are matched to per-GPU rules and alerts linked to them by their storage key
    storage_key = functools.partial(gpu_storage_key, host_name)
    return (lambda: load_rules(host_name)), functools.partial(
        AlertEvaluator, storage_key=storage_key
    )


def maintenance_hook(host_name: str) -> Callable[[], Any]:
    """Roll up and prune this host's history (the storage thread runs it on a schedule)."""
    from monitoring.storage.retention import run_maintenance

    def maintain() -> Any:
        result = run_maintenance(host_name=host_name)
        lines = result.lines()
        log.info("%s", "; ".join(lines[:3]))
        return result

    return maintain
