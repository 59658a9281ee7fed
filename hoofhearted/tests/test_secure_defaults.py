"""Secure by default: what compose and the nginx guide set passes Django's deploy check, and a
server other machines can reach refuses to start on the development key or without a token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAPHNE = Path(sys.executable).with_name("daphne")
A_SECRET_KEY = "k" * 10 + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
A_TOKEN = "read-only-token-0123456789"
#: What docker-compose.yml and deploy/nginx/README.md set for a site behind nginx with TLS.
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": A_SECRET_KEY,
    "ALLOWED_HOSTS": "gpu.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://gpu.example.com",
    "HOOFHEARTED_ACCESS_TOKEN": A_TOKEN,
}
_OURS = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "HOOFHEARTED_ACCESS",
    "HOOFHEARTED_ACCESS_TOKEN",
    "HOOFHEARTED_TLS_PROXY",
)


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in _OURS}
    clean.update(env, DB="sqlite", REDIS_URL="")
    return subprocess.run(command, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "manage.py", *args], **env)


def test_the_production_settings_pass_the_deploy_check_with_no_issue():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_an_https_origin_the_deploy_check_names_what_tls_would_set():
    plain = {k: v for k, v in PRODUCTION.items() if k != "CSRF_TRUSTED_ORIGINS"}
    result = manage("check", "--deploy", **plain)
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stderr


def test_behind_tls_cookies_are_secure_and_nginx_says_what_is_https():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS > 0, s.SECURE_PROXY_SSL_HEADER, s.DEBUG)"
    )
    result = manage("shell", "--no-imports", "-c", code, **PRODUCTION)
    assert result.stdout.strip() == (
        "True True True True ('HTTP_X_FORWARDED_PROTO', 'https') False"
    )


def test_debug_is_off_unless_asked():
    result = manage(
        "shell", "--no-imports", "-c", "from django.conf import settings; print(settings.DEBUG)"
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "command",
    [
        [str(DAPHNE), "-b", "0.0.0.0", "-p", "1", "hoofhearted.asgi:application"],
        [sys.executable, "manage.py", "runserver", "--noreload", "0.0.0.0:1"],
        [sys.executable, "manage.py", "serve", "--host", "0.0.0.0", "--port", "1"],
    ],
    ids=["daphne", "runserver", "serve"],
)
def test_a_public_server_refuses_the_development_key_in_one_line(command):
    result = run(command, HOOFHEARTED_ACCESS_TOKEN=A_TOKEN)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "configuration error: SECRET_KEY is not set: the built-in development key is refused "
        "when listening on 0.0.0.0 (set SECRET_KEY to a long random value)"
    )


def test_a_public_server_refuses_to_start_without_the_access_token():
    result = run(
        [str(DAPHNE), "-b", "::", "-p", "1", "hoofhearted.asgi:application"],
        SECRET_KEY=A_SECRET_KEY,
    )
    assert result.returncode != 0
    assert result.stderr.strip().startswith(
        "configuration error: HOOFHEARTED_ACCESS_TOKEN is not set: it is required when "
        "listening on ::"
    )


def test_a_short_access_token_is_refused():
    result = manage("check", HOOFHEARTED_ACCESS_TOKEN="secret")
    assert result.returncode == 2
    assert "HOOFHEARTED_ACCESS_TOKEN is shorter than 16 characters" in result.stderr


def test_a_loopback_server_starts_on_the_development_key():
    """The one-command local run needs no configuration (the server serves, then is stopped)."""
    process = subprocess.Popen(
        [str(DAPHNE), "-b", "127.0.0.1", "-p", "0", "hoofhearted.asgi:application"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in _OURS} | {"DB": "sqlite"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in process.stdout:
            if "Listening on TCP address" in line or "configuration error" in line:
                break
        assert "Listening on TCP address 127.0.0.1" in line
    finally:
        process.terminate()
        process.wait(timeout=10)
