"""Which addresses a server listens on, read from the command line that started it."""

import pytest

from hoofhearted.exposure import UNKNOWN, is_loopback, listen_hosts, public_hosts


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"])
def test_loopback_addresses_are_local(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gpu01.example.com", "0"])
def test_every_other_address_is_public(host):
    assert not is_loopback(host)


@pytest.mark.parametrize(
    ("argv", "hosts"),
    [
        (["/venv/bin/daphne", "hoofhearted.asgi:application"], ["127.0.0.1"]),
        (["daphne", "-p", "9000", "hoofhearted.asgi:application"], ["127.0.0.1"]),
        (["daphne", "-b", "0.0.0.0", "-p", "8000", "app"], ["0.0.0.0"]),
        (["daphne", "--bind", "::1", "app"], ["::1"]),
        (["daphne", "-u", "/run/hoofhearted.sock", "app"], ["localhost"]),
        (["daphne", "--fd", "3", "app"], [UNKNOWN]),
        (["daphne", "-e", "tcp:8000:interface=127.0.0.1", "app"], ["127.0.0.1"]),
        (["daphne", "-e", r"tcp6:port=8000:interface=\:\:1", "app"], ["::1"]),
        (["daphne", "-e", "tcp:8000", "app"], ["0.0.0.0"]),
        (
            ["/venv/lib/python3.11/site-packages/daphne/__main__.py", "-b", "10.0.0.2", "app"],
            ["10.0.0.2"],
        ),
        (["/srv/app/hoofhearted/web.py", "-b", "0.0.0.0", "-p", "8000", "app"], ["0.0.0.0"]),
        (["/srv/app/hoofhearted/web.py", "hoofhearted.asgi:application"], ["127.0.0.1"]),
        (["manage.py", "runserver"], ["127.0.0.1"]),
        (["manage.py", "runserver", "8001"], ["127.0.0.1"]),
        (["manage.py", "runserver", "0.0.0.0:8001"], ["0.0.0.0"]),
        (["./manage.py", "runserver", "--noreload", "[::1]:8001"], ["[::1]"]),
        (["manage.py", "serve"], ["127.0.0.1"]),
        (["manage.py", "serve", "--demo", "--host", "0.0.0.0"], ["0.0.0.0"]),
        (["manage.py", "serve", "--host=::1", "--port", "8001"], ["::1"]),
        (["manage.py", "collect"], []),
        (["manage.py", "migrate"], []),
        (["/venv/bin/pytest", "-q"], []),
        ([], []),
    ],
)
def test_it_reads_the_addresses_from_the_servers_command_line(argv, hosts):
    assert listen_hosts(argv) == hosts


def test_only_non_loopback_addresses_count_as_public():
    assert public_hosts(["daphne", "-b", "127.0.0.1", "-e", "tcp:9000", "app"]) == ["0.0.0.0"]
    assert public_hosts(["daphne", "-b", "127.0.0.1", "app"]) == []
    assert public_hosts(["daphne", "--fd", "3", "app"]) == [UNKNOWN]


def test_serve_listens_where_the_HOST_setting_says_without_host():
    assert listen_hosts(["manage.py", "serve"], serve_host="0.0.0.0") == ["0.0.0.0"]
    assert public_hosts(["manage.py", "serve", "--host", "127.0.0.1"], serve_host="0.0.0.0") == []
