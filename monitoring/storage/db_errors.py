"""What a database failure means: away for now, lacking our schema, or a real error.

The collect worker keeps its queue through the first two and the history API answers them
with a 503 that says what to do, so both read a failure the same way, from here.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

#: Failures that mean "the database is not there right now": retried, never a bad record.
UNREACHABLE: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
try:  # raised as is by COPY when Django's wrapper is bypassed
    import psycopg

    UNREACHABLE += (psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # pragma: no cover - psycopg is a dependency
    pass

SCHEMA_MISSING = (
    "the database lacks Hoof Hearted's tables or columns (recreated, restored from an older "
    "dump, or not migrated): run `python manage.py migrate`"
)
UNREACHABLE_MESSAGE = "the database cannot be reached"
#: SQLSTATEs of a missing table / column: the schema, not a record, is at fault.
_SCHEMA_SQLSTATES = {"42P01", "42703"}


def schema_missing(exc: BaseException) -> bool:
    """True when a query failed because our tables or columns are not there."""
    for err in (exc, exc.__cause__):
        if err is None:
            continue
        if getattr(err, "sqlstate", None) in _SCHEMA_SQLSTATES:
            return True
        text = str(err)  # SQLite says it in words
        if text.startswith(("no such table", "no such column")):
            return True
        if text.startswith("table ") and " has no column " in text:
            return True
    return False


def unavailable_reason(exc: BaseException) -> str | None:
    """One line for an operator when ``exc`` means the database cannot serve us now (away, or
    without our schema); None for any other error, which is a bug to report as such."""
    detail = f"{type(exc).__name__}: {exc}".strip()
    if schema_missing(exc):
        return f"{SCHEMA_MISSING}: {detail}"
    if isinstance(exc, UNREACHABLE):
        return f"{UNREACHABLE_MESSAGE}: {detail}"
    return None
