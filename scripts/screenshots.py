"""Screenshots for the README: the live page on a desktop and a phone, dark and light, and
the history of a GPU.

    .venv/bin/python scripts/screenshots.py     # writes docs/screenshots/*.png

Runs ``manage.py serve --demo`` (the H100 capture under load) on a free port with its own
database, waits for the sparklines to fill (about 3 minutes), and shoots with Debian's Chromium.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboard.tests.browser import DESKTOP, PHONE, chromium, served  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        served(Path(tmp), "--demo", "--state", "load", host_name="gpu-box") as url,
        chromium() as browser,
    ):
        time.sleep(200)  # most of the 5-minute sparklines filled, as a page open a while
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            for scheme in ("dark", "light"):
                context = browser.new_context(viewport=viewport, color_scheme=scheme)
                page = context.new_page()
                page.goto(url)
                page.wait_for_selector("#conn[data-state=live]", timeout=15_000)
                time.sleep(1.5)
                path = OUT / f"{name}-{scheme}.png"
                page.screenshot(path=str(path), full_page=name == "desktop")
                print(path.relative_to(ROOT))
                context.close()
        context = browser.new_context(viewport=DESKTOP, color_scheme="dark")
        page = context.new_page()
        page.goto(url + "/history/?host=gpu-box&gpu=0")
        path = OUT / "history-dark.png"
        page.screenshot(path=str(path), full_page=True)
        print(path.relative_to(ROOT))
        context.close()


if __name__ == "__main__":
    main()
