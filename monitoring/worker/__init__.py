"""The collect worker and what only it uses.

- :mod:`.loop`: the worker itself (sampling thread, storage thread, stop);
- :mod:`.tiers`: the steady clock and which tiers each tick reads;
- :mod:`.lock`: one worker per host name (file lock, PostgreSQL advisory lock);
- :mod:`.publish`: each snapshot to the live dashboard's Channels group;
- :mod:`.setup`: what ``manage.py collect`` checks and wires before the worker starts.

Imports go one way: telemetry ← storage ← worker ← management commands.
"""

from monitoring.worker.loop import CollectWorker, WorkerConfig

__all__ = ["CollectWorker", "WorkerConfig"]
