"""The terminal summary: real snapshots of this GPU-less machine and of the replayed H100."""

from __future__ import annotations

import dataclasses

from monitoring.telemetry.factory import build_sampler
from monitoring.telemetry.summary import SummaryPrinter, summary_lines
from monitoring.tests.conftest import H100


def no_gpu_snapshot():
    sampler = build_sampler(
        "auto", nvidia_smi="/nonexistent/nvidia-smi", nvtop="/nonexistent/nvtop"
    )
    try:
        return sampler.sample(processes=False, slow=False)
    finally:
        sampler.close()


def test_a_machine_without_a_gpu_says_why_once_and_again_only_when_it_changes():
    snapshot = no_gpu_snapshot()
    assert snapshot.driver.source == "none"
    printer = SummaryPrinter()

    first = printer.lines(snapshot)
    second = printer.lines(snapshot)

    assert "No NVIDIA GPU found" in "\n".join(first)
    assert sum("note: nvidia-smi" in line for line in first) == 1
    assert second == first[:1] != first  # the host line alone
    changed = dataclasses.replace(snapshot, messages=[*snapshot.messages, "nvml: reloaded"])
    assert "  note: nvml: reloaded" in printer.lines(changed)
    assert printer.lines(changed) == first[:1]


def test_new_notices_replace_the_old_and_notices_that_go_away_are_said_to_no_longer_apply():
    printer = SummaryPrinter()
    printer.lines(no_gpu_snapshot())
    sampler = build_sampler("replay", replay_dir=H100, replay_state="load")
    try:
        replayed = sampler.sample()
    finally:
        sampler.close()

    lines = printer.lines(replayed)

    assert lines[1].startswith("  note: Replaying captured GPU telemetry (load)")
    assert not any("No NVIDIA GPU found" in line for line in lines)
    assert any("GPU 0 NVIDIA H100 80GB HBM3: util 100 %" in line for line in lines)
    live = dataclasses.replace(replayed, messages=[])  # as a live GPU would say nothing
    assert printer.lines(live)[1] == "  (the notices above no longer apply)"
    assert printer.lines(live) == summary_lines(live)  # nothing to say: every tick the same
