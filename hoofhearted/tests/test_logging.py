"""Logs: JSON lines with timestamp, level, logger and message when LOG_FORMAT=json, the level
from LOG_LEVEL, and a worker that says once what it samples (or that there is no GPU) and
then nothing per tick: a real ``manage.py collect`` on a throw-away SQLite database."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils.module_loading import import_string

from hoofhearted.tests.test_secure_defaults import ROOT


def collect(tmp_path: Path, count: int, **env: str) -> list[str]:
    """The log lines (stderr) of a worker run of ``count`` ticks at 250 ms."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "DB"))}
    environ.update(
        DB="sqlite",
        DB_NAME=str(tmp_path / "db.sqlite3"),
        REDIS_URL="",
        HOOFHEARTED_NVIDIA_SMI="/nonexistent/nvidia-smi",
        HOOFHEARTED_NVTOP="/nonexistent/nvtop",
        **env,
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "collect", "--interval-ms", "250", "--count", str(count)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


def test_json_logs_are_one_object_a_line_with_the_usual_fields(tmp_path):
    lines = collect(tmp_path, 4, LOG_FORMAT="json")
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert records
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= set(record)
        assert datetime.fromisoformat(record["timestamp"]).utcoffset().total_seconds() == 0
    assert any(
        r["logger"].startswith("monitoring.worker") and r["level"] == "INFO" for r in records
    )


def test_the_worker_logs_nothing_per_tick_and_says_its_gpu_source_once(tmp_path):
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    short = collect(tmp_path / "short", 4, LOG_FORMAT="json")
    long = collect(tmp_path / "long", 16, LOG_FORMAT="json")
    # 12 more ticks, no more lines (the first run also creates the SQLite tables: one line)
    assert len(long) <= len(short)
    said = [
        json.loads(line)["message"]
        for line in long
        if "GPU source:" in line or "No NVIDIA GPU found" in line
    ]
    assert len(said) == 1


def test_log_level_warning_keeps_only_warnings_and_worse(tmp_path):
    records = [json.loads(x) for x in collect(tmp_path, 2, LOG_FORMAT="json", LOG_LEVEL="warning")]
    assert records  # the 250 ms interval is warned about
    assert {r["level"] for r in records} <= {"WARNING", "ERROR", "CRITICAL"}


def test_plain_logs_are_the_default(tmp_path):
    lines = collect(tmp_path, 2)
    assert lines and not lines[0].startswith("{")
    assert " INFO monitoring.worker.loop: collect worker for host " in "\n".join(lines)


def test_context_passed_as_extra_comes_out_as_json_fields():
    config = dict(settings.LOGGING["formatters"]["json"])  # as dictConfig builds it
    formatter = import_string(config.pop("()"))(**config)
    record = logging.LogRecord(
        "monitoring.worker", logging.WARNING, __file__, 1, "lost %s", ("gpu0",), None
    )
    record.host = "rig"
    data = json.loads(formatter.format(record))
    assert data["message"] == "lost gpu0"
    assert (data["level"], data["logger"], data["host"]) == ("WARNING", "monitoring.worker", "rig")


def test_the_web_server_as_the_image_runs_it_logs_only_json_lines(tmp_path):
    """daphne -v 0 (the Dockerfile's command): its own lines and Django's are JSON, with the
    request as context; no plain-text access log among them."""
    import http.client

    from dashboard.tests.site import DAPHNE, free_port, wait_for_port

    port, log = free_port(), tmp_path / "daphne.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "DB"))}
    environ.update(LOG_FORMAT="json", DB="sqlite", DB_NAME=str(tmp_path / "db.sqlite3"))
    with log.open("w") as out:
        server = subprocess.Popen(
            [*DAPHNE, "-b", "127.0.0.1", "-p", str(port), "--websocket_timeout", "-1", "-v", "0",
             "hoofhearted.asgi:application"],
            cwd=ROOT, env=environ, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_for_port(port, server, log)
        for path in ("/api/config", "/no-such-page"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
    finally:
        server.terminate()
        server.wait(10)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(r["logger"] == "daphne.server" for r in records)
    (not_found,) = [r for r in records if r["logger"] == "django.request"]
    assert (not_found["level"], not_found["status_code"]) == ("WARNING", 404)
