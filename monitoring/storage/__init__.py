"""Durable storage of what the worker samples, and the history read back from it.

:mod:`.writer` (``SnapshotStore``: batched writes through a bounded buffer) is what the
worker uses; :mod:`.history` answers ``/api/history``; :mod:`.rollup` and :mod:`.retention`
keep the tables small. The plain-Python parts (:mod:`.buffer`, :mod:`.sessions`) import
without Django settings.
"""
