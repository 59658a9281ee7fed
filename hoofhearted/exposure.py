"""Is this server reachable from other machines? Read from the command line that started it.

Settings use it to refuse the built-in development ``SECRET_KEY`` (and a missing access
token) when the web server listens on anything but loopback. Only the servers we document
are understood: ``daphne`` (``-b``, ``-p``, ``-u``, ``--fd``, ``-e`` parsed by daphne's own
argument parser), ``manage.py serve [--host H]`` (``HOST`` by default) and
``manage.py runserver [addr:]port``. Any other command (the worker,
``migrate``, the test suite) serves nothing and answers ``[]``; per-request checks in
:mod:`hoofhearted.access` cover servers this cannot see (uvicorn, gunicorn).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import PurePath

#: Listening on a file descriptor handed over by someone else (systemd socket activation):
#: the address is not on the command line, so it is treated as public.
UNKNOWN = "<inherited socket>"
_INTERFACE = re.compile(r"(?:^|:)interface=((?:\\:|[^:])*)")


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``; ``0.0.0.0`` / ``::`` are every interface."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, it was chosen to be reachable


def _is_daphne(argv: Sequence[str]) -> bool:
    """daphne's command line: ``daphne``, ``python -m daphne`` or ``python -m hoofhearted.web``."""
    path = PurePath(argv[0]) if argv else PurePath()
    return (
        path.name == "daphne"
        or (path.name == "__main__.py" and path.parent.name == "daphne")
        or (path.name == "web.py" and path.parent.name == "hoofhearted")
    )


def _endpoint_host(endpoint: str) -> str:
    """The address a twisted endpoint string listens on (``tcp:8000:interface=::1``)."""
    kind = endpoint.split(":", 1)[0]
    if kind == "unix":
        return "localhost"  # a Unix socket: only this machine
    if kind not in ("tcp", "tcp6", "ssl"):
        return UNKNOWN
    found = _INTERFACE.search(endpoint)
    if not found:
        return "::" if kind == "tcp6" else "0.0.0.0"  # twisted's default: every interface
    return found[1].replace("\\:", ":")


def _option(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` (the last one given)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
    return value


def listen_hosts(argv: Sequence[str], serve_host: str = "127.0.0.1") -> list[str]:
    """Addresses the server started by ``argv`` listens on; ``[]`` when it is no web server.

    ``serve_host`` is where ``manage.py serve`` listens without ``--host`` (settings' HOST).
    """
    if _is_daphne(argv):
        from daphne.cli import DEFAULT_HOST, CommandLineInterface

        args, _ = CommandLineInterface().parser.parse_known_args(list(argv[1:]))
        hosts = [_endpoint_host(endpoint) for endpoint in args.socket_strings]
        if args.unix_socket:
            hosts.append("localhost")
        if args.file_descriptor is not None:
            hosts.append(UNKNOWN)
        if args.host or args.port is not None or not hosts:
            hosts.append(args.host or DEFAULT_HOST)
        return hosts
    command = argv[1] if len(argv) >= 2 and PurePath(argv[0]).name == "manage.py" else None
    if command == "serve":
        return [_option(argv, "--host") or serve_host]
    if command == "runserver":
        positional = [arg for arg in argv[2:] if not arg.startswith("-")]
        addrport = positional[0] if positional else ""
        if addrport.isdigit() or not addrport:
            return ["127.0.0.1"]
        host, _, _ = addrport.rpartition(":")
        return [host or "127.0.0.1"]
    return []


def public_hosts(argv: Sequence[str], serve_host: str = "127.0.0.1") -> list[str]:
    """The non-loopback addresses among :func:`listen_hosts` (``[]``: local only)."""
    return [host for host in listen_hosts(argv, serve_host) if not is_loopback(host)]
