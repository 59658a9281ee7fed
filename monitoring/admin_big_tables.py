"""Admin lists over tables of millions of rows: counting and the date hierarchy, bounded.

Django's changelist counts every row of the selection (``COUNT(*)``) and builds its date
hierarchy with a ``SELECT DISTINCT`` over every row: seconds each on a year of samples. These
replacements cost a bounded count and two index look-ups whatever the table's size.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, QuerySet
from django.utils import timezone
from django.utils.functional import cached_property

COUNT_CAP = 10_000  # rows a list counts exactly; beyond, an estimate (or the cap)


class EstimatedCountPaginator(Paginator):
    """Counts at most ``cap`` rows (``COUNT(*)`` over a ``LIMIT`` subquery). Past the cap, an
    unfiltered list on PostgreSQL takes the planner's row estimate (``pg_class.reltuples``,
    kept by autovacuum); any other list reports the cap, so the last pages of a huge
    selection are not offered - narrow it with the filters or the date hierarchy instead."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        bounded = queryset.order_by()[: self.cap + 1].count()
        if bounded <= self.cap:
            return bounded
        if not queryset.query.where:
            estimate = table_estimate(queryset)
            if estimate is not None and estimate > self.cap:
                return estimate
        return self.cap


def table_estimate(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows in the queryset's table; None elsewhere or unknown."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


class SpanDatesQuerySet(QuerySet):
    """The date hierarchy's years, months and days from the first and last row (two index
    look-ups) instead of ``SELECT DISTINCT`` over every row. Samples are continuous, so
    every day in between has rows; a day the worker was down is still offered (and empty)."""

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        if kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order, tzinfo)
        span = self.aggregate(first=Min(field_name), last=Max(field_name))
        if span["first"] is None:
            return []
        tz = tzinfo or timezone.get_current_timezone()
        first = timezone.localtime(span["first"], tz).date()
        last = timezone.localtime(span["last"], tz).date()
        days = _calendar(first, last, kind)
        out = [datetime.combine(d, time(), tzinfo=tz) for d in days]
        return out if order == "ASC" else out[::-1]


def _calendar(first: date, last: date, kind: str) -> list[date]:
    """The first day of every year, month or day from ``first`` to ``last``."""
    if kind == "year":
        return [date(y, 1, 1) for y in range(first.year, last.year + 1)]
    if kind == "month":
        months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
        return [date(m // 12, m % 12 + 1, 1) for m in months]
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
