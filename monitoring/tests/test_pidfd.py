"""The exit watch says which GPU processes still run, with real processes on this machine."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from monitoring.telemetry import pidfd
from monitoring.telemetry.pidfd import ExitWatch

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfds here")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_watched_process_is_running_until_it_exits(sleeper: subprocess.Popen[bytes]) -> None:
    watch = ExitWatch()
    assert watch.watch(sleeper.pid)
    assert watch.running() == {sleeper.pid}
    sleeper.kill()
    sleeper.wait()
    assert watch.running() == set()


def test_an_exited_zombie_is_not_running(sleeper: subprocess.Popen[bytes]) -> None:
    # killed but not yet reaped: its pid still exists, the process it named has ended
    watch = ExitWatch()
    watch.watch(sleeper.pid)
    sleeper.kill()
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)
    assert os.path.exists(f"/proc/{sleeper.pid}")
    assert watch.running() == set()


def test_a_gone_pid_cannot_be_watched() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    watch = ExitWatch()
    assert not watch.watch(proc.pid)
    assert watch.available and len(watch) == 0


def test_forgetting_and_closing_release_the_pidfds(sleeper: subprocess.Popen[bytes]) -> None:
    before = open_fds()
    watch = ExitWatch()
    watch.watch(sleeper.pid)
    watch.watch(os.getpid())
    watch.watch(os.getpid())  # re-armed, not doubled
    assert open_fds() == before + 2
    watch.forget(os.getpid())
    assert open_fds() == before + 1 and watch.running() == {sleeper.pid}
    watch.close()
    assert open_fds() == before and not watch.available
    assert not watch.watch(sleeper.pid) and watch.running() == set()


def test_a_watch_dropped_without_close_releases_its_pidfds(
    sleeper: subprocess.Popen[bytes],
) -> None:
    before = open_fds()
    watch = ExitWatch()
    watch.watch(sleeper.pid)
    del watch
    assert open_fds() == before


def test_a_kernel_that_refuses_pidfds_turns_the_watch_off(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # what a seccomp profile without pidfd_open answers
    def refused(pid: int) -> int:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(pidfd.os, "pidfd_open", refused)
    watch = ExitWatch()
    assert not watch.watch(sleeper.pid)
    assert not watch.available and watch.running() == set()
