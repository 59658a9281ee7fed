"""Bounded in-memory queues between the sampling loop and the database. No Django here.

The worker must keep sampling while the database is away, but must not grow without bound
over a long outage: snapshots wait in a ring that drops its OLDEST entry when full (the
newest data is what an operator looks at first) and counts every drop so the worker can say
how much was lost. Events and alert changes are rare and matter more than one second of
figures, so they wait in their own, larger queue: dropped only past that bound, and never
silently (logged and counted).

Writers take a batch out, and either drop it once written or put it back in front when the
write failed, so a failed flush loses nothing and the order stays oldest first. Every method
is guarded by a lock: the loop may add while a flush runs in another thread.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class DropOldestBuffer(Generic[T]):
    """A FIFO of at most ``capacity`` items that drops the oldest when full."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._dropped_total = 0
        self._dropped_unreported = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def dropped_total(self) -> int:
        """Items dropped since this buffer was made."""
        return self._dropped_total

    def append(self, item: T) -> int:
        """Add one item (O(1)); returns how many old items it pushed out (0 or 1)."""
        with self._lock:
            self._items.append(item)
            return self._trim()

    def take(self, limit: int | None = None) -> list[T]:
        """Remove and return up to ``limit`` of the oldest items, oldest first."""
        with self._lock:
            count = len(self._items) if limit is None else min(limit, len(self._items))
            return [self._items.popleft() for _ in range(count)]

    def put_back(self, items: Iterable[T]) -> int:
        """Return a batch taken by :meth:`take` to the front, in its order (its write failed).

        Whatever arrived meanwhile stays behind it. If that overfills the buffer, the oldest
        go, as with :meth:`append`; returns how many.
        """
        with self._lock:
            self._items.extendleft(reversed(list(items)))
            return self._trim()

    def drop(self, count: int = 1) -> None:
        """Count ``count`` items as lost that a caller took out and gave up on."""
        with self._lock:
            self._dropped_total += count
            self._dropped_unreported += count

    def take_dropped(self) -> int:
        """Items dropped since the previous call (the worker reports each loss once)."""
        with self._lock:
            count, self._dropped_unreported = self._dropped_unreported, 0
            return count

    def _trim(self) -> int:
        dropped = 0
        while len(self._items) > self.capacity:
            self._items.popleft()
            dropped += 1
        self._dropped_total += dropped
        self._dropped_unreported += dropped
        return dropped


class KeyedQueue(Generic[T]):
    """Latest state per key, in the order keys were first queued (alert changes).

    An alert sent again before it was written replaces its queued state: the record carries
    the whole state, so only the newest has to reach the database. Bounded like the others;
    past the bound the oldest key goes, logged.
    """

    def __init__(self, capacity: int, what: str = "records") -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.what = what
        self._items: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: Hashable, item: T) -> None:
        with self._lock:
            if key in self._items:
                self._items[key] = item
                return
            self._items[key] = item
            while len(self._items) > self.capacity:
                old_key, _ = self._items.popitem(last=False)
                self.dropped_total += 1
                log.error(
                    "storage queue full (%d %s): dropped the oldest, %r",
                    self.capacity,
                    self.what,
                    old_key,
                )

    def take(self) -> list[tuple[Hashable, T]]:
        with self._lock:
            items = list(self._items.items())
            self._items.clear()
            return items

    def put_back(self, items: list[tuple[Hashable, T]]) -> None:
        """Return taken items; a newer state queued meanwhile for the same key wins."""
        with self._lock:
            newer = self._items
            self._items = OrderedDict(items)
            for key, item in newer.items():
                self._items[key] = item
                self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                old_key, _ = self._items.popitem(last=False)
                self.dropped_total += 1
                log.error("storage queue full: dropped the oldest %s, %r", self.what, old_key)


class RecordQueue(DropOldestBuffer[T]):
    """A :class:`DropOldestBuffer` that logs each drop: for events, which are never lost
    without a trace."""

    def __init__(self, capacity: int, what: str = "records") -> None:
        super().__init__(capacity)
        self.what = what

    def _trim(self) -> int:
        dropped = super()._trim()
        if dropped:
            log.error(
                "storage queue full (%d %s): dropped the %d oldest (%d so far)",
                self.capacity,
                self.what,
                dropped,
                self.dropped_total,
            )
        return dropped
