"""Two processes sharing one database, each with its own in-memory channel layer: the page
of one server shows a host that another process collects dated from the database, as
``/api/health`` dates it, and says so; when the server goes away under the page, the hosts
overview stops claiming anything is live and counts each host's age on."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest

from dashboard.tests.browser import DESKTOP, serving
from monitoring.tests.conftest import H100
from monitoring.tests.helpers import another_board_dir

pytestmark = pytest.mark.browser

ELSEWHERE = "elsewhere"


def until_reported(url: str, host: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/health?checks=database") as response:
            if host in [h["host"] for h in json.load(response)["hosts"]]:
                return
        time.sleep(0.25)
    raise AssertionError(f"{host} never reported")


def card(page, host: str):
    return page.locator(f'.host-card:has(a[href="/hosts/{host}/"])')


def age_s(page, host: str) -> int:
    """The age the hosts card gives ``host``, in seconds."""
    text = card(page, host).locator(".host-age").inner_text()
    number, unit = re.match(r"(\d+) (s|min) ago", text).groups()
    return int(number) * (60 if unit == "min" else 1)


def test_a_host_another_process_collects_is_dated_from_the_database_and_not_live_once_cut_off(
    browser, tmp_path
):
    with serving(tmp_path, "--replay", str(H100), "--state", "load") as server:
        log = (tmp_path / "collect.log").open("w")
        board = another_board_dir(tmp_path / ELSEWHERE, "idle")  # a machine of its own GPU
        collect = [*server.manage, "collect", "--replay", str(board), "--state", "idle"]
        other = subprocess.Popen(
            [*collect, "--host-name", ELSEWHERE], env=server.env, stdout=log, stderr=log
        )
        try:
            until_reported(server.url, ELSEWHERE)
            context = browser.new_context(viewport=DESKTOP)
            page = context.new_page()
            page.goto(f"{server.url}/hosts/{ELSEWHERE}/")
            page.wait_for_selector("#conn[data-state=live]", timeout=10_000)
            first = page.locator("#data-status time").get_attribute("datetime")
            time.sleep(7)  # longer than the page once took to call a quiet host stale
            status = page.locator("#data-status")
            assert status.get_attribute("data-stale") == "false", status.inner_text()
            assert "from the database, not live" in status.inner_text()
            assert page.locator("#data-status time").get_attribute("datetime") != first
            assert card(page, ELSEWHERE).locator(".host-live").is_visible()
            assert age_s(page, ELSEWHERE) <= 5

            # the server goes away under the page: the overview claims nothing live
            server.process.terminate()
            server.process.wait(timeout=20)
            page.wait_for_selector("#conn[data-state=reconnecting]", timeout=10_000)
            for host in (ELSEWHERE, "browser-test"):
                assert not card(page, host).locator(".host-live").is_visible()
                assert card(page, host).locator(".host-lost").inner_text() == "not updating"
            opacity = card(page, ELSEWHERE).evaluate("e => getComputedStyle(e).opacity")
            assert float(opacity) < 1
            before = age_s(page, ELSEWHERE)
            time.sleep(3)
            assert age_s(page, ELSEWHERE) >= before + 2  # counted on, not "0 s ago"
            context.close()
        finally:
            other.terminate()
            other.wait(timeout=20)
            log.close()
