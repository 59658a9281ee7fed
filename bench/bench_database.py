"""Open (creating if needed) a throw-away PostgreSQL database for a benchmark, migrated.

Shared by the storage benchmarks so each measures its own database, never the user's.
"""

from __future__ import annotations

import os
import sys


def setup_django(database: str, benchmark: str) -> None:
    if os.environ.get("DB") != "postgres":
        sys.exit(f"{benchmark} measures PostgreSQL: run with DB=postgres (see the docstring)")
    os.environ["DB_NAME"] = database
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hoofhearted.settings")
    os.environ.setdefault("LOG_LEVEL", "warning")
    create_database(database)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def create_database(database: str) -> None:
    """Create ``database`` on the server of this shell's DB_* unless it exists."""
    import psycopg

    admin = psycopg.connect(
        host=os.environ.get("DB_HOST", "localhost"),
        port=os.environ.get("DB_PORT", "5432"),
        user=os.environ.get("DB_USER", "postgres"),
        password=os.environ.get("DB_PASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            pass
        else:
            admin.execute(f'CREATE DATABASE "{database}"')
