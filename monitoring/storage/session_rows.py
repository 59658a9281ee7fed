"""``ProcessSession`` rows for the tracker's sessions: insert new, update changed, reload open.

Open sessions are rewritten every ``SESSION_REFRESH_S`` (their last sighting, peak and means
move), all of a host's at once: on PostgreSQL one ``UPDATE … FROM unnest(arrays)`` for them
all, its arrays bound server-side in binary; elsewhere one UPDATE per session in a batch.
(Django's ``bulk_update`` builds a CASE per column and row in Python: ~6 ms per session
here, more than the samples' COPY.)
"""

from __future__ import annotations

from typing import Any

from monitoring.models import ProcessSession
from monitoring.storage.sessions import Session

UPDATE_FIELDS = (
    "last_seen",
    "open",
    "name",
    "user",
    "container",
    "command",
    "peak_memory_mib",
    "mean_memory_mib",
    "mean_sm_utilization",
    "samples",
)


def row_fields(session: Session) -> dict[str, Any]:
    """The row's columns (text cut to the columns' lengths)."""
    return {
        "pid": session.pid,
        "name": session.name[:255],
        "user": session.user[:128],
        "container": session.container[:255],
        "command": session.command,
        "process_start": session.process_start,
        "first_seen": session.first_seen,
        "last_seen": session.last_seen,
        "open": session.open,
        "peak_memory_mib": session.peak_memory_mib,
        "mean_memory_mib": session.mean_memory_mib,
        "mean_sm_utilization": session.mean_sm_utilization,
        "samples": session.samples,
    }


def insert_sessions(connection, sessions: list[tuple[Session, int]]) -> None:
    """Insert (session, gpu id) pairs; sets each session's ``db_id``."""
    if not sessions:
        return
    rows = ProcessSession.objects.using(connection.alias)
    objects = rows.bulk_create(
        [ProcessSession(gpu_id=gpu_id, **row_fields(session)) for session, gpu_id in sessions]
    )
    for (session, _gpu_id), obj in zip(sessions, objects, strict=True):
        if obj.pk is None:  # a backend that returns no ids from bulk inserts
            obj = rows.filter(gpu_id=obj.gpu_id, pid=obj.pid, first_seen=obj.first_seen).latest(
                "id"
            )
        session.db_id = obj.pk


def update_sessions(connection, sessions: list[Session]) -> list[Session]:
    """Write the moving columns of sessions that already have a row; returns those whose row
    is gone (the database was recreated or emptied under the worker), to be inserted anew."""
    if not sessions:
        return []
    if connection.vendor == "postgresql":
        updated = _update_postgresql(connection, sessions)
    else:
        fields = _fields()
        rows = []
        for session in sessions:
            values = row_fields(session)
            rows.append(
                [*(f.get_db_prep_save(values[f.name], connection) for f in fields), session.db_id]
            )
        with connection.cursor() as cursor:
            cursor.executemany(_sql(connection, _plain_update), rows)
            updated = cursor.rowcount
    if updated == len(sessions):
        return []
    ids = [session.db_id for session in sessions]
    found = set(
        ProcessSession.objects.using(connection.alias)
        .filter(pk__in=ids)
        .values_list("pk", flat=True)
    )
    return [session for session in sessions if session.db_id not in found]


def _update_postgresql(connection, sessions: list[Session]) -> int:
    """One statement, one array per column, bound server-side in binary: its text never
    changes, and no value is quoted into SQL in Python."""
    import psycopg

    columns: list[list[Any]] = [[] for _ in range(len(UPDATE_FIELDS) + 1)]
    for session in sessions:
        values = row_fields(session)
        columns[0].append(session.db_id)
        for i, name in enumerate(UPDATE_FIELDS, start=1):
            columns[i].append(values[name])
    connection.ensure_connection()
    with (
        connection.wrap_database_errors,
        psycopg.Cursor(connection.connection) as cursor,
    ):
        cursor.execute(_sql(connection, _unnest_update), columns, binary=True)
        return cursor.rowcount


def _fields():
    meta = ProcessSession._meta
    return [meta.get_field(name) for name in UPDATE_FIELDS]


def _plain_update(connection) -> str:
    quote = connection.ops.quote_name
    meta = ProcessSession._meta
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in _fields())
    return f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"


def _unnest_update(connection) -> str:
    quote = connection.ops.quote_name
    meta = ProcessSession._meta
    fields = _fields()
    casts = [meta.pk.rel_db_type(connection), *(f.db_type(connection) for f in fields)]
    names = ", ".join(["id", *(quote(f.column) for f in fields)])
    arrays = ", ".join(f"%s::{cast}[]" for cast in casts)
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in fields)
    return (
        f"UPDATE {quote(meta.db_table)} AS s SET {assignments} "
        f"FROM unnest({arrays}) AS v({names}) WHERE s.{quote(meta.pk.column)} = v.id"
    )


_SQL: dict[tuple[str, str], str] = {}


def _sql(connection, build) -> str:
    """Statements are built once per database vendor (field types, quoting)."""
    key = (connection.vendor, build.__name__)
    sql = _SQL.get(key)
    if sql is None:
        sql = _SQL[key] = build(connection)
    return sql


def load_open_sessions(connection, host_id: int) -> list[Session]:
    """Sessions a previous worker of this host left open, for the tracker to decide."""
    loaded = []
    query = ProcessSession.objects.using(connection.alias).filter(gpu__host_id=host_id, open=True)
    for row in query.select_related("gpu"):
        count = row.samples or 0
        loaded.append(
            Session(
                gpu_uuid=row.gpu.uuid,
                pid=row.pid,
                process_start=row.process_start,
                first_seen=row.first_seen,
                last_seen=row.last_seen,
                name=row.name,
                user=row.user,
                container=row.container,
                command=row.command,
                peak_memory_mib=row.peak_memory_mib,
                # means are stored, not their sums: weigh them by the sample count
                memory_total=(row.mean_memory_mib or 0.0) * count,
                memory_samples=count if row.mean_memory_mib is not None else 0,
                sm_total=(row.mean_sm_utilization or 0.0) * count,
                sm_samples=count if row.mean_sm_utilization is not None else 0,
                samples=count,
                db_id=row.pk,
            )
        )
    return loaded
