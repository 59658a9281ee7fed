"""A real server and a real browser for the page tests: ``manage.py serve`` on a free port
(its own SQLite database, the collector inside, replaying a capture) and Debian's headless
Chromium driven by Playwright (``playwright install`` cannot download a browser here)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("HOOFHEARTED_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running ``manage.py serve``: its base URL, its process, and the environment it runs in
    (another process given it shares the server's database)."""

    url: str
    process: subprocess.Popen
    env: dict[str, str]
    manage: list[str]


@contextlib.contextmanager
def served(tmp: Path, *serve_args: str, host_name: str = "browser-test") -> Iterator[str]:
    """``manage.py serve`` with the collector inside; yields the base URL once it answers."""
    with serving(tmp, *serve_args, host_name=host_name) as server:
        yield server.url


@contextlib.contextmanager
def serving(tmp: Path, *serve_args: str, host_name: str = "browser-test") -> Iterator[Server]:
    """:func:`served`, yielding the whole :class:`Server` (a test may stop it under a page)."""
    port = free_port()
    env = {
        **os.environ,
        "DB": "sqlite",
        "DB_NAME": str(tmp / "db.sqlite3"),
        "REDIS_URL": "",
        "HOOFHEARTED_HOST_NAME": host_name,
        "PORT": str(port),
        "HOOFHEARTED_TOP_PROCESSES_INTERVAL_MS": "2000",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, timeout=120)
    log = (tmp / "serve.log").open("w")
    server = subprocess.Popen([*manage, "serve", *serve_args], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/live/fragments", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "serve.log").read_text()) from None
                time.sleep(0.2)
        yield Server(url, server, env, manage)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@contextlib.contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


#: Stands in for a proxy that refuses WebSocket upgrades: every socket fails before opening.
REFUSE_WEBSOCKETS = """
window.WebSocket = class RefusedWebSocket {
  constructor(url) {
    this.url = url; this.readyState = 0; this.listeners = {};
    setTimeout(() => {
      this.readyState = 3;
      if (this.onerror) this.onerror(new Event("error"));
      if (this.onclose) this.onclose({ code: 1006, reason: "", wasClean: false });
    }, 30);
  }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  send() {}
  close() {}
};
window.WebSocket.CONNECTING = 0; window.WebSocket.OPEN = 1;
window.WebSocket.CLOSING = 2; window.WebSocket.CLOSED = 3;
"""
