"""GPU processes get their owner, redacted command, container and start time from /proc.

These run real processes on this machine: NVML would report their host PIDs the same way.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from monitoring.telemetry import attribution
from monitoring.telemetry.attribution import (
    DENIED_REASON,
    GONE_REASON,
    HIDDEN_NOTE,
    HIDDEN_REASON,
    ProcessAttributor,
)
from monitoring.telemetry.cgroup import container_from_cgroup
from monitoring.telemetry.schema import GpuProcess, GpuSample

SECRET = "abc123secret"


@pytest.fixture
def job() -> Iterator[subprocess.Popen[bytes]]:
    """A long-running "training job" started with a token on its command line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", f"--token={SECRET}", "--epochs", "3"]
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def gpu_with(*pids: int, name: str | None = None) -> GpuSample:
    # What an NVML source gives for a process: pid and memory, nothing else.
    processes = [
        GpuProcess(pid=pid, gpu_index=0, gpu_uuid="GPU-x", name=name, used_memory_mib=1024)
        for pid in pids
    ]
    return GpuSample(index=0, uuid="GPU-x", processes=processes)


def test_it_attributes_a_real_process(job: subprocess.Popen[bytes]) -> None:
    gpu = gpu_with(job.pid)
    ProcessAttributor().attribute([gpu])
    proc = gpu.processes[0]
    assert proc.user == getpass.getuser()
    assert proc.command is not None
    assert SECRET not in proc.command
    assert "--token=***" in proc.command and "--epochs 3" in proc.command
    assert proc.name == psutil.Process(job.pid).name()
    assert proc.start_time is not None and proc.start_time.tzinfo is not None
    assert abs(datetime.now(UTC) - proc.start_time) < timedelta(seconds=30)
    expected = container_from_cgroup(Path(f"/proc/{job.pid}/cgroup").read_text())
    assert proc.container == expected
    assert proc.used_memory_mib == 1024
    assert gpu.processes_note is None


def test_it_keeps_the_name_nvml_gave(job: subprocess.Popen[bytes]) -> None:
    gpu = gpu_with(job.pid, name="trainer")
    ProcessAttributor().attribute([gpu])
    assert gpu.processes[0].name == "trainer"


def test_it_resolves_a_process_once_while_it_lives(
    job: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    attributor = ProcessAttributor()
    attributor.attribute([gpu_with(job.pid)])
    calls = []
    monkeypatch.setattr(attributor, "_resolve", lambda *args: calls.append(args))
    again = gpu_with(job.pid)
    attributor.attribute([again])
    assert calls == []
    assert again.processes[0].command is not None and SECRET not in again.processes[0].command


def test_a_known_process_needs_no_psutil_look_up(
    job: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    attributor = ProcessAttributor()
    attributor.attribute([gpu_with(job.pid)])

    def no_psutil(pid: int) -> None:
        raise AssertionError("the cached path must not set up a psutil.Process")

    monkeypatch.setattr(attribution.psutil, "Process", no_psutil)
    again = gpu_with(job.pid)
    attributor.attribute([again])
    assert again.processes[0].user == getpass.getuser()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfds here")
def test_a_known_running_process_costs_no_proc_read(
    job: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    attributor = ProcessAttributor()
    attributor.attribute([gpu_with(job.pid)])

    def no_read(pid: int, proc_root: str) -> None:
        raise AssertionError("a process its pidfd says is running needs no /proc read")

    monkeypatch.setattr(attribution, "_start_ticks", no_read)
    again = gpu_with(job.pid)
    attributor.attribute([again])
    assert again.processes[0].user == getpass.getuser()


def test_a_known_process_that_exits_is_reported_gone(job: subprocess.Popen[bytes]) -> None:
    attributor = ProcessAttributor()
    attributor.attribute([gpu_with(job.pid, os.getpid())])
    job.kill()
    job.wait()
    gpu = gpu_with(job.pid, os.getpid())
    attributor.attribute([gpu])
    assert gpu.processes[0].unsupported["command"] == GONE_REASON
    assert gpu.processes[0].user is None
    assert job.pid not in attributor._owners
    assert gpu.processes[1].user == getpass.getuser()


def test_a_recycled_pid_is_resolved_again(
    job: subprocess.Popen[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same pid with another start time in /proc/<pid>/stat is another process
    stat = Path(f"/proc/{job.pid}/stat").read_text()
    head, _, tail = stat.rpartition(")")
    fields = tail.split()
    (tmp_path / str(job.pid)).mkdir()
    fake = tmp_path / str(job.pid) / "stat"
    fake.write_text(stat)
    attributor = ProcessAttributor(proc_root=str(tmp_path))
    resolved = []
    real = attributor._resolve
    monkeypatch.setattr(attributor, "_resolve", lambda *a: resolved.append(a[0]) or real(*a))
    attributor.attribute([gpu_with(job.pid)])
    attributor.attribute([gpu_with(job.pid)])
    assert resolved == [job.pid]
    fields[19] = str(int(fields[19]) + 100)
    fake.write_text(f"{head}) {' '.join(fields)}\n")
    attributor.attribute([gpu_with(job.pid)])
    assert resolved == [job.pid, job.pid]


def test_it_forgets_processes_no_longer_reported(job: subprocess.Popen[bytes]) -> None:
    attributor = ProcessAttributor()
    attributor.attribute([gpu_with(job.pid)])
    assert job.pid in attributor._owners
    attributor.attribute([gpu_with(os.getpid())])
    assert job.pid not in attributor._owners
    attributor.attribute([GpuSample(index=0)])
    assert attributor._owners == {}


def test_it_says_when_a_process_exited_before_lookup() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    gpu = gpu_with(proc.pid, os.getpid())  # one visible pid: the namespace is the host's
    ProcessAttributor().attribute([gpu])
    gone = gpu.processes[0]
    assert gone.user is None and gone.command is None
    assert gone.unsupported["command"] == GONE_REASON
    assert gpu.processes[1].user == getpass.getuser()


def test_it_notes_pids_hidden_by_the_pid_namespace() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    gpu = gpu_with(pid_max + 1, pid_max + 7)
    ProcessAttributor().attribute([gpu])
    assert gpu.processes_note == HIDDEN_NOTE
    assert [p.pid for p in gpu.processes] == [pid_max + 1, pid_max + 7]
    assert all(p.used_memory_mib == 1024 for p in gpu.processes)
    assert all(p.user is None and p.command is None for p in gpu.processes)
    assert gpu.processes[0].unsupported == {"user": HIDDEN_REASON, "command": HIDDEN_REASON}


def test_it_notes_hidden_pids_in_a_container_proc(
    tmp_path: Path, job: subprocess.Popen[bytes]
) -> None:
    # A collector in a container sees its own /proc, where the host's PIDs do not exist.
    (tmp_path / "1").mkdir()
    gpu = gpu_with(job.pid)
    idle = GpuSample(index=1)
    ProcessAttributor(proc_root=str(tmp_path)).attribute([gpu, idle])
    assert gpu.processes_note == HIDDEN_NOTE
    assert idle.processes_note is None
    assert gpu.processes[0].command is None


def test_it_falls_back_to_the_status_uid_when_denied(
    job: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a non-root collector meets for another user's process under hidepid=2 / macOS.
    def denied(self: psutil.Process) -> list[str]:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "cmdline", denied)
    monkeypatch.setattr(psutil.Process, "username", denied)
    gpu = gpu_with(job.pid)
    ProcessAttributor().attribute([gpu])
    proc = gpu.processes[0]
    assert proc.user == getpass.getuser()
    assert proc.command is None
    assert proc.unsupported["command"] == DENIED_REASON
    assert proc.start_time is not None


def test_it_reads_the_owner_uid_without_psutil(tmp_path: Path) -> None:
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "status").write_text("Name:\tx\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    assert attribution._user_from_status(77, str(tmp_path)) == "root"
    (tmp_path / "78").mkdir()
    (tmp_path / "78" / "status").write_text("Uid:\t4000000\t0\t0\t0\n")
    assert attribution._user_from_status(78, str(tmp_path)) == "4000000"
    assert attribution._user_from_status(79, str(tmp_path)) is None
