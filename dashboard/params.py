"""Query parameters every endpoint reads the same way: validated, and a 400 naming the bad one.

One error type for all of them (``HistoryError``, which the history module raises for its own
parameters): ``bad_parameter`` turns it into ``{"error": …, "parameter": …}`` with status 400.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.http import JsonResponse

from monitoring.storage.history import HistoryError as BadParameter

__all__ = ["BadParameter", "bad_parameter", "choices_param", "name_param", "number_param"]

#: Host names and GPU indexes/UUIDs are short; anything longer is not one of ours.
MAX_NAME = 255


def name_param(params: Mapping[str, str], name: str) -> str | None:
    """A host or GPU name: trimmed, printable, at most ``MAX_NAME`` characters; None if empty."""
    value = params.get(name, "").strip()
    if not value:
        return None
    if not value.isprintable():
        raise BadParameter(name, f"{name}={value!r} has control characters")
    if len(value) > MAX_NAME:
        raise BadParameter(name, f"{name}= is longer than {MAX_NAME} characters")
    return value


def number_param(
    params: Mapping[str, str], name: str, default: float, minimum: float, maximum: float
) -> float:
    """A finite number within ``[minimum, maximum]``; ``default`` when absent or empty."""
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadParameter(name, f"{name}={raw!r} is not a number") from None
    if not minimum <= value <= maximum:  # NaN fails this too
        raise BadParameter(name, f"{name}={raw} must be between {minimum:g} and {maximum:g}")
    return value


def choices_param(
    params: Mapping[str, str], name: str, allowed: tuple[str, ...]
) -> tuple[str, ...]:
    """A comma-separated subset of ``allowed`` (all of them when absent), in ``allowed``'s order."""
    raw = params.get(name, "").strip()
    if not raw:
        return allowed
    chosen = {item.strip() for item in raw.split(",") if item.strip()}
    unknown = sorted(chosen - set(allowed))
    if unknown or not chosen:
        raise BadParameter(name, f"{name}={raw!r}: each must be one of {', '.join(allowed)}")
    return tuple(item for item in allowed if item in chosen)


def bad_parameter(error: BadParameter) -> JsonResponse:
    return JsonResponse({"error": str(error), "parameter": error.param}, status=400)
