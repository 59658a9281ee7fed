"""The web server on PostgreSQL borrows connections from a pool: daphne runs each request's
database work in a thread of its own, where a persistent connection would be a new
connection per request. A real daphne on the test command's PostgreSQL: many requests, few
server connections; an outage answers 503 saying so, and it serves again after."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time

import pytest

from dashboard.tests.site import DAPHNE, free_port, wait_for_port
from hoofhearted.tests.test_secure_defaults import ROOT
from monitoring.tests import pg_control

DATABASE = "hoofhearted_pool_test"
pytestmark = pytest.mark.postgres


def admin_connection():
    import psycopg

    return psycopg.connect(
        host=os.environ["DB_HOST"],
        port=os.environ["DB_PORT"],
        user=os.environ.get("DB_USER", "postgres"),
        password=os.environ.get("DB_PASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    )


def backends() -> int:
    with admin_connection() as admin:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        return admin.execute(query, [DATABASE]).fetchone()[0]


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    pg_control.skip_unless_available()
    with admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    env = dict(os.environ, DB="postgres", DB_NAME=DATABASE, REDIS_URL="", LOG_LEVEL="warning")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "manage.py", "collect", "--replay", str(ROOT / "monitoring" / "captures" / "nvidia" / "h100"),
         "--count", "2", "--interval-ms", "250", "--host-name", "h100"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with log.open("w") as out:
        daphne = subprocess.Popen(
            [*DAPHNE, "-b", "127.0.0.1", "-p", str(port), "-v", "0", "hoofhearted.asgi:application"],
            cwd=ROOT, env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_for_port(port, daphne, log)
        yield port
    finally:
        daphne.terminate()
        daphne.wait(20)
        with admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_many_requests_share_a_few_pooled_connections(web_server):
    for _ in range(40):
        status, body = get(web_server, "/api/snapshot?host=h100")
        assert status == 200 and body["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert 1 <= backends() <= 8  # DB_POOL_MAX_SIZE; one per request without the pool


def test_an_outage_is_a_503_saying_so_and_the_pool_serves_again_after(web_server):
    assert get(web_server, "/api/snapshot")[0] == 200
    with pg_control.outage():
        started = time.monotonic()
        status, body = get(web_server, "/api/snapshot")
        assert status == 503
        assert "the database cannot be reached" in body["error"]
        assert time.monotonic() - started < 15  # DB_CONNECT_TIMEOUT, not a hang
    deadline = time.monotonic() + 30
    while get(web_server, "/api/snapshot")[0] != 200:
        assert time.monotonic() < deadline, "the pool did not reconnect"
        time.sleep(0.5)
