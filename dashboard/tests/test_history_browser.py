"""The history page in a real browser (headless Chromium) against a real server whose
collector replays the H100 under load with processes named as an HTML injection: charts
drawn, a session one click from "who was on it then", text not markup, a phone without
sideways scrolling, and axe finds no serious accessibility violation."""

from __future__ import annotations

import time

import pytest

from dashboard.tests.browser import DESKTOP, PHONE, served
from dashboard.tests.live_helpers import HOSTILE, hostile_capture

pytestmark = pytest.mark.browser
HOST = "history-browser"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history")
    captures = hostile_capture(tmp / "hostile")
    with served(tmp, "--replay", str(captures), "--state", "load", host_name=HOST) as url:
        yield url


def open_history(browser, url, viewport=DESKTOP, scheme="dark", query="&gpu=0"):
    """The GPU's history page once its first process session is stored (a flush or two)."""
    context = browser.new_context(viewport=viewport, color_scheme=scheme)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}") or dialog.dismiss())
    deadline = time.monotonic() + 20
    while True:
        page.goto(f"{url}/history/?host={HOST}{query}")
        if page.locator(".session-bar").count() or time.monotonic() > deadline:
            return page, errors
        time.sleep(0.5)


def test_a_session_on_the_axis_is_one_click_from_who_was_on_the_gpu(browser, server):
    page, errors = open_history(browser, server)

    charts = page.locator("figure svg[role=img]")
    assert charts.count() == 4
    assert all(charts.nth(n).get_attribute("aria-label") for n in range(4))
    assert "Utilization of GPU 0, the last hour" in page.locator("#chart-utilization").inner_text()
    page.locator(".session-bar").first.click()
    page.wait_for_selector("#at")
    assert "at=" in page.url
    panel = page.locator("#at").inner_text()
    assert "Who was on GPU 0 at" in panel and HOSTILE in panel and "root" in panel
    assert page.locator("img[src=x]").count() == 0
    assert errors == []  # no alert() ran
    page.context.close()


def test_on_a_phone_the_charts_stack_and_nothing_scrolls_sideways(browser, server):
    page, errors = open_history(browser, server, viewport=PHONE)

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    boxes = [page.locator(f"#chart-{key}").bounding_box() for key in ("utilization", "memory")]
    assert boxes[0]["x"] == boxes[1]["x"]
    assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"]
    assert errors == []
    page.context.close()


@pytest.mark.parametrize(("scheme", "query"), [("dark", "&gpu=0&at=-1s"), ("light", "")])
def test_axe_finds_no_serious_violation_on_the_gpu_and_host_history(browser, server, scheme, query):
    from axe_playwright_python.sync_playwright import Axe

    page, _ = open_history(browser, server, scheme=scheme, query=query)
    results = Axe().run(page)
    serious = [
        (v["id"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    page.context.close()
