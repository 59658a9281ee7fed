"""Thresholds and the "unexpected GPU user" rule, evaluated on every snapshot by the worker.

:mod:`.rules` holds the rules as plain frozen dataclasses (and loads them from the database);
:mod:`.evaluator` and :mod:`.unexpected` turn snapshots into alert changes without Django, so
they are tested (and could run) without a database.
"""
