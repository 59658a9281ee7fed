"""The name a collector's host is stored and shown under, checked before anything starts.

It comes from ``--host-name`` or HOOFHEARTED_HOST_NAME (else the machine's host name), is
``Host.name`` in the database and part of the page's address (``/hosts/<name>/``), so a name
the page could not link to is refused at start with the reason, not met later as an error.
"""

from __future__ import annotations

from django.core.management.base import CommandError

#: ``Host.name``'s length.
MAX_HOST_NAME = 255


def checked_host_name(name: str) -> str:
    """``name`` unchanged, or CommandError saying what is wrong with it."""
    problem = None
    if not name.strip():
        problem = "is empty"
    elif "/" in name:
        problem = "has a '/', which cannot be part of the page's address /hosts/<name>/"
    elif not name.isprintable():
        problem = "has control characters"
    elif len(name) > MAX_HOST_NAME:
        problem = f"is longer than {MAX_HOST_NAME} characters"
    if problem:
        raise CommandError(
            f"host name {name!r} {problem}: set another with --host-name or HOOFHEARTED_HOST_NAME",
            returncode=2,  # bad input, as a bad file or environment value
        )
    return name
