"""One table in the README names every environment variable settings.py reads."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def variables_read() -> set[str]:
    source = (ROOT / "hoofhearted" / "settings.py").read_text()
    return set(
        re.findall(
            r'env_(?:str|int|bool|choice|list|time_zone|redis_url)\(\s*"([A-Z][A-Z0-9_]*)"', source
        )
    )


def variables_in_the_table() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration (environment variables)", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {
        name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split(" | ")[0])
    }


def test_every_variable_settings_reads_is_in_the_readme_table():
    assert len(variables_read()) > 40
    assert variables_read() - variables_in_the_table() == set()


def test_the_table_names_no_variable_that_is_not_read():
    assert variables_in_the_table() - variables_read() == set()
