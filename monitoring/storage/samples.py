"""Sample rows from snapshots, and the fastest insert each database offers.

Columns are the metric registry's (``monitoring.metrics``): the same readers ``gpu_values``
and ``host_values`` use, applied straight into a tuple per row (a dict per row costs more
than the insert at thousands of rows a second). A value a column cannot hold (NaN, infinity,
an integer out of its range) is stored as missing: one odd reading must never fail a batch.

PostgreSQL gets binary COPY FROM STDIN through psycopg 3 (several times the rate of
``bulk_create``'s multi-row INSERT, see bench/bench_ingest.py); other databases get
``bulk_create``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitoring.metrics import GPU_METRICS, HOST_METRICS, STORED_GPU_METRICS, STORED_HOST_METRICS
from monitoring.telemetry.schema import GPU_LOST, GpuSample, Snapshot

GPU_SAMPLE_COLUMNS = ("gpu_id", "time", *STORED_GPU_METRICS)
HOST_SAMPLE_COLUMNS = ("host_id", "time", *STORED_HOST_METRICS)


def to_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number - number == 0.0 else None  # NaN and ±inf fail this


def _integer(low: int, high: int) -> Callable[[Any], int | None]:
    def to_integer(value: Any) -> int | None:
        if value is None:
            return None
        if type(value) is not int:
            number = to_float(value)
            if number is None:
                return None
            value = round(number)
        return value if low <= value <= high else None

    return to_integer


CONVERTERS: dict[str, Callable[[Any], int | float | None]] = {
    "small": _integer(-(2**15), 2**15 - 1),
    "int": _integer(-(2**31), 2**31 - 1),
    "float": to_float,
}
_GPU_READERS = tuple(
    (GPU_METRICS[key].read, CONVERTERS[GPU_METRICS[key].column]) for key in STORED_GPU_METRICS
)
_HOST_READERS = tuple(
    (HOST_METRICS[key].read, CONVERTERS[HOST_METRICS[key].column]) for key in STORED_HOST_METRICS
)


def gpu_sample_rows(
    snapshots: list[Snapshot], gpu_ids: dict[str, int], key: Callable[[GpuSample], str]
) -> list[tuple]:
    """One row (GPU_SAMPLE_COLUMNS) per GPU per snapshot, the GPU found in ``gpu_ids`` by
    its storage ``key`` (``HostGpuRegistry.key``). A lost GPU has no figures and gets no row
    (the gap, and the ``gpu_lost`` event, say it)."""
    rows: list[tuple] = []
    for snapshot in snapshots:
        time = snapshot.timestamp
        for gpu in snapshot.gpus:
            gpu_id = gpu_ids.get(key(gpu))
            if gpu_id is None or gpu.state == GPU_LOST:
                continue
            rows.append((gpu_id, time, *[convert(read(gpu)) for read, convert in _GPU_READERS]))
    return rows


def host_sample_rows(snapshots: list[Snapshot], host_id: int) -> list[tuple]:
    """One row (HOST_SAMPLE_COLUMNS) per snapshot."""
    return [
        (
            host_id,
            snapshot.timestamp,
            *[convert(read(snapshot.system)) for read, convert in _HOST_READERS],
        )
        for snapshot in snapshots
    ]


def insert_rows(
    connection, model, columns: tuple[str, ...], rows: list[tuple], *, use_copy: bool
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) in the current transaction."""
    if not rows:
        return
    if use_copy and connection.vendor == "postgresql":
        copy_rows(connection, model, columns, rows)
    else:
        objects = [model(**dict(zip(columns, row, strict=True))) for row in rows]
        model.objects.using(connection.alias).bulk_create(objects, batch_size=500)


_COPY: dict[tuple, tuple[str, list[str]]] = {}  # built once: (COPY statement, column types)


def copy_rows(connection, model, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """PostgreSQL binary COPY FROM STDIN (psycopg 3), errors raised as Django's like any
    query. Binary with the columns' types set: about 3x the rate of text COPY in Python, as
    no value is formatted as text (the converters above give each column its exact type)."""
    key = (connection.vendor, model._meta.label, columns)
    statement = _COPY.get(key)
    if statement is None:
        quote = connection.ops.quote_name
        fields = [model._meta.get_field(column) for column in columns]
        names = ", ".join(quote(field.column) for field in fields)
        sql = f"COPY {quote(model._meta.db_table)} ({names}) FROM STDIN (FORMAT BINARY)"
        statement = _COPY[key] = (sql, [field.db_type(connection) for field in fields])
    sql, types = statement
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.copy(sql) as copy,
    ):
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
