"""Shared test fixtures: the real captures that ship with the project."""

from __future__ import annotations

from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "nvidia"
H100 = CAPTURES / "h100"
#: Real outputs from other monitors' users (see its README for where each came from).
FIELD = CAPTURES.parent / "field"
STATES = ("idle", "load")


@pytest.fixture
def h100() -> Path:
    return H100
