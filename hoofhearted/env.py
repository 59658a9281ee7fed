"""Read configuration from environment variables, failing loudly at start.

Every setting goes through one of these helpers so that a bad value
(``POLL_INTERVAL_MS=abc``) stops the program at start with the variable's name
and value, instead of surfacing later as a confusing error deep inside.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off"
    )


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}")
    return number


def env_choice(
    name: str, default: str, choices: Iterable[str], environ: Mapping[str, str] | None = None
) -> str:
    allowed = tuple(choices)
    value = env_str(name, default, environ).lower()
    if value not in allowed:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(allowed)}")
    return value


def env_list(
    name: str, default: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> list[str]:
    value = _raw(name, environ)
    if value is None or value == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_time_zone(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """An IANA time zone name (``Europe/Paris``), checked against the zone database, so a
    typo is one line here and not Django's ``Incorrect timezone setting`` traceback."""
    value = env_str(name, default, environ)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a time zone: use an IANA name such as UTC or Europe/Paris"
        ) from None
    return value


REDIS_URL_SCHEMES = ("redis", "rediss", "unix")


def env_redis_url(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A Redis URL as redis-py reads it (``redis://[user:password@]host[:port][/db]``,
    ``rediss://`` for TLS, ``unix:///path/to/redis.sock``), or "" when unset.

    Checked here because channels-redis only reads it on the first message: a malformed
    value would otherwise look like a Redis that is down, for ever.
    """
    value = env_str(name, "", environ)
    if not value:
        return ""
    problem = _redis_url_problem(value)
    if problem:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a Redis URL ({problem}): use redis://host:6379/0, "
            "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock"
        )
    return value


def _redis_url_problem(value: str) -> str:
    try:
        url = urlsplit(value)
        port = url.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        return str(exc)
    if url.scheme not in REDIS_URL_SCHEMES:
        return "no redis://, rediss:// or unix:// scheme"
    if url.scheme == "unix":
        return "" if url.path else "no socket path"
    if not url.hostname:
        return "no host"
    if port == 0:
        return "port 0"
    db = url.path.strip("/")
    if db and not db.isdigit():
        return f"database {db!r} is not a number"
    return ""
