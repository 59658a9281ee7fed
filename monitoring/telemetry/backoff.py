"""Exponential back-off for retrying something that keeps failing (a lost GPU, a dead
``nvidia-smi`` child, a broken GPU source), so a retry never becomes a busy loop.

One owner per instance (not thread-safe); times are the caller's, in seconds.
"""

from __future__ import annotations


class Backoff:
    """Waits of ``first_s``, doubling after each retry up to ``max_s``; back to ``first_s``
    once the thing works again (:meth:`reset`)."""

    def __init__(self, first_s: float, max_s: float) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"back-off needs 0 < first ({first_s}) <= max ({max_s})")
        self.first_s = first_s
        self.max_s = max_s
        #: The wait the next retry will get.
        self.delay = first_s

    def next(self) -> float:
        """The wait before this retry (the following one waits twice as long)."""
        delay = self.delay
        self.delay = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay = self.first_s
