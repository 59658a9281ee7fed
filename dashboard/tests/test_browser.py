"""The page in a real browser (headless Chromium) against a real server replaying the H100:
it loads live, figures move with the replay, a process appears and the banner names it,
polling takes over where WebSockets are refused, a phone gets stacked cards and the busiest
processes' figures without scrolling, a hostile process name stays text, and axe finds no
serious accessibility violation."""

from __future__ import annotations

import re
import time

import pytest

from dashboard.tests.browser import DESKTOP, PHONE, REFUSE_WEBSOCKETS, served
from dashboard.tests.live_helpers import HOSTILE, hostile_capture

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The H100 replayed idle, then under load, four seconds each, in turn."""
    tmp = tmp_path_factory.mktemp("demo")
    with served(tmp, "--demo", "--state", "idle,load", "--switch-s", "4") as url:
        yield url


#: What a table in ``selector`` shows: its headers, those past its right edge, its widths, and
#: per row of the last column whether the text is clipped and on how many lines.
TABLE_ON_SCREEN = """selector => {
  const box = document.querySelector(selector), right = box.getBoundingClientRect().right;
  const ths = [...box.querySelectorAll("thead th")];
  const lineHeight = td => parseFloat(getComputedStyle(td).lineHeight);
  return {
    headers: ths.map(th => th.textContent),
    offScreen: ths.filter(th => th.getBoundingClientRect().right > right + 0.5)
      .map(th => th.textContent),
    scrollWidth: box.scrollWidth, clientWidth: box.clientWidth,
    commands: [...box.querySelectorAll("tbody td:last-child")].map(td => ({
      clipped: td.scrollWidth > td.clientWidth,
      lines: Math.round(td.getBoundingClientRect().height / lineHeight(td) - 0.4),
      title: td.title, text: td.textContent,
    })),
  };
}"""


def open_page(browser, url, viewport=DESKTOP, scheme="dark", init_script=None):
    context = browser.new_context(viewport=viewport, color_scheme=scheme)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}") or dialog.dismiss())
    page.goto(url)
    return page, errors


def test_the_page_goes_live_and_follows_the_replay_as_a_process_appears(browser, demo):
    page, errors = open_page(browser, demo)
    page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    page.wait_for_function(
        "document.querySelector('#banner').innerText.includes('GPU 0 at 100 %: python3 (root)')",
        timeout=15_000,
    )
    assert "python3" in page.locator("#gpu-0-procs").inner_text()
    assert "447" in page.locator("#gpu-0-procs").inner_text()
    # the replay moves on to idle: the figures follow without a reload
    page.wait_for_function(
        "document.querySelector('#banner').innerText.includes('idle')", timeout=15_000
    )
    assert page.locator("#gpu-0-util .fig-value").inner_text() == "0 %"
    assert "No process is using this GPU" in page.locator("#gpu-0-procs").inner_text()
    assert page.locator("#conn").get_attribute("data-state") == "live"
    assert errors == []
    page.context.close()


def test_where_websockets_are_refused_the_page_polls_and_still_updates(browser, demo):
    page, errors = open_page(browser, demo, init_script=REFUSE_WEBSOCKETS)
    page.wait_for_selector("#conn[data-state=polling]", timeout=15_000)
    first = page.locator("#data-status time").get_attribute("datetime")
    page.wait_for_function(
        "t => document.querySelector('#data-status time').getAttribute('datetime') !== t",
        arg=first,
        timeout=10_000,
    )
    assert "polling" in page.locator("#conn").inner_text()
    assert errors == []
    page.context.close()


def test_a_phone_gets_the_cards_stacked_and_a_desktop_side_by_side(browser, demo):
    def boxes(viewport):
        page, _ = open_page(browser, demo, viewport=viewport)
        page.wait_for_selector("#smi-procs")
        smi = page.locator("#procs-title").locator("xpath=..").bounding_box()
        users = page.locator("#users").locator("xpath=..").bounding_box()
        width = page.evaluate("document.documentElement.scrollWidth")
        page.context.close()
        return smi, users, width

    smi, users, width = boxes(PHONE)
    assert users["y"] >= smi["y"] + smi["height"] - 1  # one under the other
    assert width <= PHONE["width"]  # nothing wider than the phone: tables scroll inside
    smi, users, _ = boxes(DESKTOP)
    assert abs(users["y"] - smi["y"]) < 2 and users["x"] > smi["x"]  # side by side


def test_a_phone_sees_the_busiest_processes_figures_and_the_command_clipped_last(browser, demo):
    page, _ = open_page(browser, demo, viewport=PHONE)
    page.wait_for_selector("#host-top table", timeout=15_000)  # read every 2 s here
    # one look at the table: it is swapped in anew on every reading
    seen = page.evaluate(TABLE_ON_SCREEN, "#host-top")
    assert seen["headers"] == ["PID", "User", "CPU", "Memory", "Command"]
    assert seen["offScreen"] == []  # CPU and memory without scrolling sideways
    assert seen["scrollWidth"] <= seen["clientWidth"]  # nothing off to the side
    # a long command line is clipped to one line (the whole of it in the title), not wrapped
    assert any(c["clipped"] for c in seen["commands"])
    assert all(c["lines"] == 1 and c["title"] == c["text"] for c in seen["commands"])
    page.context.close()


def test_the_theme_toggle_switches_between_dark_and_light(browser, demo):
    page, _ = open_page(browser, demo, scheme="dark")
    assert page.evaluate("document.documentElement.classList.contains('dark')")
    page.click("#theme-toggle")
    assert not page.evaluate("document.documentElement.classList.contains('dark')")
    page.reload()
    assert not page.evaluate("document.documentElement.classList.contains('dark')")  # kept
    page.context.close()


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_axe_finds_no_serious_accessibility_violation_on_the_dashboard(browser, demo, scheme):
    from axe_playwright_python.sync_playwright import Axe

    page, _ = open_page(browser, demo, scheme=scheme)
    page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    page.wait_for_selector("#banner")
    results = Axe().run(page)
    serious = [
        (v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    page.context.close()


def test_axe_finds_no_serious_accessibility_violation_on_the_history_page(browser, demo):
    from axe_playwright_python.sync_playwright import Axe

    page, _ = open_page(browser, demo + "/history/?host=browser-test")
    results = Axe().run(page)
    serious = [
        v["id"] for v in results.response["violations"] if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    page.context.close()


def test_a_hostile_process_name_is_shown_as_text(browser, tmp_path):
    captures = hostile_capture(tmp_path / "hostile")
    with served(tmp_path, "--replay", str(captures), "--state", "load") as url:
        page, errors = open_page(browser, url)
        page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
        page.wait_for_function(
            "document.querySelector('#gpu-0-procs').innerText.includes('onerror')", timeout=15_000
        )
        assert HOSTILE in page.locator("#gpu-0-procs").inner_text()
        assert HOSTILE in page.locator("#banner").inner_text()
        assert page.locator("img[src=x]").count() == 0
        assert errors == []  # no alert() ran
        assert re.search(r"--token=\*+", page.locator("#gpu-0-procs").inner_html())
        page.context.close()


def live_through_a_proxy(browser, url):
    """The page live through a WebSocket the test can close as a server or proxy would."""
    page, errors = open_page(browser, url)
    sockets = []

    def through(ws):
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r".*/ws/live/.*"), through)
    page.reload()
    page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    return page, errors, sockets


def test_a_server_restart_shows_reconnecting_and_comes_back_live(browser, demo):
    page, errors, sockets = live_through_a_proxy(browser, demo)
    sockets[-1].close(code=1012, reason="service restart")  # as a restarting server does
    page.wait_for_selector("#conn[data-state=reconnecting]", timeout=5_000)
    assert "reconnecting" in page.locator("#conn").inner_text()
    # figures that may be old are dimmed until the page is live again
    assert float(page.eval_on_selector("#gpu-0-util", "e => getComputedStyle(e).opacity")) < 1
    page.wait_for_selector("#conn[data-state=live]", timeout=15_000)
    assert len(sockets) == 2 and errors == []
    page.context.close()


def test_a_closed_connection_says_offline_and_the_button_reconnects(browser, demo):
    page, errors, sockets = live_through_a_proxy(browser, demo)
    sockets[-1].close(code=1000, reason="closed")  # the extension does not retry this
    page.wait_for_selector("#conn[data-state=offline]", timeout=5_000)
    assert page.locator("#reconnect").is_visible()
    page.click("#reconnect")
    page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    assert not page.locator("#reconnect").is_visible()
    assert errors == []
    page.context.close()


def pcie_wants_sent(url: str) -> float:
    """What the server's /metrics says it asked its collector for PCIe (the scrape counts)."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    (line,) = [
        row
        for row in text.splitlines()
        if row.startswith("hoofhearted_web_pcie_wants_total") and 'result="sent"' in row
    ]
    return float(line.rsplit(" ", 1)[1])


def test_opening_a_gpus_pcie_detail_asks_the_collector_and_stays_open_as_ticks_arrive(
    browser, demo
):
    page, errors = open_page(browser, demo)
    page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    before = pcie_wants_sent(demo)  # this scrape asked for every GPU: the next is throttled
    page.locator("details.pcie-detail summary").first.click()
    page.wait_for_function("document.querySelector('details.pcie-detail').open", timeout=5_000)
    deadline = time.monotonic() + 5
    while pcie_wants_sent(demo) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pcie_wants_sent(demo) == before + 1  # the detail's ask, over the WebSocket
    first = page.locator("#data-status time").get_attribute("datetime")
    page.wait_for_function(
        "t => document.querySelector('#data-status time').getAttribute('datetime') !== t",
        arg=first,
        timeout=10_000,
    )
    assert page.locator("details.pcie-detail").first.evaluate("d => d.open")
    assert "Receive" in page.locator("#gpu-0-pcie").inner_text()
    assert errors == []
    page.context.close()


def test_a_polling_page_with_the_pcie_detail_open_asks_too_and_keeps_it_open(browser, demo):
    page, errors = open_page(browser, demo, init_script=REFUSE_WEBSOCKETS)
    page.wait_for_selector("#conn[data-state=polling]", timeout=15_000)
    time.sleep(10)  # past the throttle of the other tests' asks and scrapes
    before = pcie_wants_sent(demo)
    page.locator("details.pcie-detail summary").first.click()
    deadline = time.monotonic() + 5
    while pcie_wants_sent(demo) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pcie_wants_sent(demo) == before + 1  # asked with the next poll
    first = page.locator("#data-status time").get_attribute("datetime")
    page.wait_for_function(
        "t => document.querySelector('#data-status time').getAttribute('datetime') !== t",
        arg=first,
        timeout=10_000,
    )
    assert page.locator("details.pcie-detail").first.evaluate("d => d.open")  # a poll swapped
    assert errors == []
    page.context.close()


def test_a_host_nobody_reports_under_is_said_plainly_and_not_retried(browser, demo):
    page, errors = open_page(browser, demo)
    attempts = []

    def as_the_server_answers_an_unknown_host(ws):  # see test_live_consumer for the server
        attempts.append(ws)
        ws.close(code=4404, reason="No host named 'gone' reports here")

    page.route_web_socket(re.compile(r".*/ws/live/.*"), as_the_server_answers_an_unknown_host)
    page.reload()
    page.wait_for_selector("#conn[data-state=unknown]", timeout=10_000)
    assert page.locator("#conn").inner_text().strip() == "No host named 'gone' reports here"
    assert not page.locator("#reconnect").is_visible()
    page.wait_for_timeout(3_000)  # the first retry would have come after 1 s
    assert len(attempts) == 1
    assert page.locator("#conn").get_attribute("data-state") == "unknown"
    assert errors == []
    page.context.close()
