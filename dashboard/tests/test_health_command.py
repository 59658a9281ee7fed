"""``manage.py health``: the health API's checks for probes without HTTP (the worker's)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from dashboard.tests.test_operations_api import age


def health(capsys, *args: str) -> tuple[int, dict]:
    try:
        call_command("health", *args)
        code = 0
    except CommandError as exc:
        code = exc.returncode
    return code, json.loads(capsys.readouterr().out)


def test_it_exits_0_while_this_hosts_worker_writes(capsys, h100_host, settings):
    settings.HOST_NAME = "h100"
    code, body = health(capsys)
    assert code == 0 and body["status"] == "ok"


def test_it_exits_1_naming_the_stale_host(capsys, h100_host, settings):
    settings.HOST_NAME = "h100"
    age("h100", 90)
    code, body = health(capsys, "--checks", "database,samples")
    assert code == 1
    assert body["reasons"][0].startswith("host 'h100': newest sample is 90 s old")
    assert "channelLayer" not in body["checks"]
    assert health(capsys, "--stale", "600")[0] == 0


@pytest.mark.django_db
def test_it_judges_this_host_unless_told_otherwise(capsys, settings):
    settings.HOST_NAME = "nowhere"
    code, body = health(capsys)
    assert (code, body["reasons"]) == (1, ["no sample of host 'nowhere' yet"])
    code, body = health(capsys, "--all-hosts")
    assert body["reasons"] == ["no sample yet: start the worker (manage.py collect)"]


@pytest.mark.django_db
def test_bad_options_are_refused():
    with pytest.raises(CommandError, match="--checks: each must be one of"):
        call_command("health", "--checks", "disk")
    with pytest.raises(CommandError, match="--stale must be between 1 and 86400"):
        call_command("health", "--stale", "0")
