"""Bad environment values stop the program at start, naming the variable."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from hoofhearted.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_redis_url,
    env_str,
    env_time_zone,
)

ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_a_whole_number():
    assert env_int("POLL_INTERVAL_MS", 1000, environ={"POLL_INTERVAL_MS": " 500 "}) == 500


def test_it_falls_back_to_the_default_when_unset_or_empty():
    assert env_int("POLL_INTERVAL_MS", 1000, environ={}) == 1000
    assert env_int("POLL_INTERVAL_MS", 1000, environ={"POLL_INTERVAL_MS": ""}) == 1000


def test_it_names_the_variable_and_value_for_garbage():
    with pytest.raises(ImproperlyConfigured, match=r"POLL_INTERVAL_MS='abc' is not a whole number"):
        env_int("POLL_INTERVAL_MS", 1000, environ={"POLL_INTERVAL_MS": "abc"})


def test_it_enforces_bounds():
    with pytest.raises(
        ImproperlyConfigured, match="POLL_INTERVAL_MS=10 is below the minimum of 250"
    ):
        env_int("POLL_INTERVAL_MS", 1000, minimum=250, environ={"POLL_INTERVAL_MS": "10"})


def test_it_reads_booleans_strictly():
    assert env_bool("DEBUG", False, environ={"DEBUG": "yes"}) is True
    assert env_bool("DEBUG", True, environ={"DEBUG": "off"}) is False
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe'"):
        env_bool("DEBUG", False, environ={"DEBUG": "maybe"})


def test_it_restricts_choices():
    assert (
        env_choice("DB", "sqlite", ("sqlite", "postgres"), environ={"DB": "Postgres"}) == "postgres"
    )
    with pytest.raises(ImproperlyConfigured, match="DB='mysql' is not one of: sqlite, postgres"):
        env_choice("DB", "sqlite", ("sqlite", "postgres"), environ={"DB": "mysql"})


def test_it_splits_lists_and_strings():
    assert env_list("ALLOWED_HOSTS", ["x"], environ={"ALLOWED_HOSTS": "a, b,,c"}) == ["a", "b", "c"]
    assert env_str("SECRET_KEY", "d", environ={"SECRET_KEY": "  "}) == "d"


def test_a_time_zone_must_be_one_the_zone_database_knows():
    assert (
        env_time_zone("TIME_ZONE", "UTC", environ={"TIME_ZONE": "Europe/Paris"}) == "Europe/Paris"
    )
    assert env_time_zone("TIME_ZONE", "UTC", environ={}) == "UTC"
    for bogus in ("Mars/Base", "../etc/passwd", "Europe/"):
        with pytest.raises(ImproperlyConfigured, match=r"TIME_ZONE=.* is not a time zone"):
            env_time_zone("TIME_ZONE", "UTC", environ={"TIME_ZONE": bogus})


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis:6379",
        "redis://:secret@redis.internal/3",
        "rediss://user:secret@cache.example.com:6380/0",
        "redis://[::1]:6379/0",
        "unix:///run/redis/redis.sock",
    ],
)
def test_a_redis_url_redis_py_reads_is_taken_as_it_is(url):
    assert env_redis_url("REDIS_URL", environ={"REDIS_URL": url}) == url


def test_an_unset_redis_url_means_the_in_process_channel_layer():
    assert env_redis_url("REDIS_URL", environ={}) == ""
    assert env_redis_url("REDIS_URL", environ={"REDIS_URL": " "}) == ""


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("garbage", "no redis://, rediss:// or unix:// scheme"),
        ("http://redis:6379/0", "no redis://, rediss:// or unix:// scheme"),
        ("127.0.0.1:6379", "no redis://, rediss:// or unix:// scheme"),
        ("redis://", "no host"),
        ("redis:///0", "no host"),
        ("redis://redis:port/0", "Port could not be cast to integer value"),
        ("redis://redis:99999/0", "Port out of range"),
        ("redis://redis:6379/zero", "database 'zero' is not a number"),
        ("unix://", "no socket path"),
    ],
)
def test_a_redis_url_that_is_not_one_is_a_configuration_error_not_an_outage(url, why):
    with pytest.raises(ImproperlyConfigured) as refused:
        env_redis_url("REDIS_URL", environ={"REDIS_URL": url})
    assert str(refused.value).startswith(f"REDIS_URL={url!r} is not a Redis URL ({why}")
    assert "redis://host:6379/0" in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TIME_ZONE", "Mars/Base", "TIME_ZONE='Mars/Base' is not a time zone"),
        ("REDIS_URL", "garbage", "REDIS_URL='garbage' is not a Redis URL"),
        ("POLL_INTERVAL_MS", "abc", "POLL_INTERVAL_MS='abc' is not a whole number"),
        ("POLL_INTERVAL_MS", "100", "POLL_INTERVAL_MS=100 is below the minimum of 250"),
        ("HOOFHEARTED_GPU_SOURCE", "cuda", "HOOFHEARTED_GPU_SOURCE='cuda' is not one of"),
        ("DB_PORT", "x", "DB_PORT='x'"),
    ],
)
def test_manage_py_fails_at_start_with_one_clear_line(variable, value, expected):
    env = {
        "PATH": "/usr/bin:/bin",
        variable: value,
        "DB": "postgres" if variable == "DB_PORT" else "sqlite",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
