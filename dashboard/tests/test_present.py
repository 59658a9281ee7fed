"""What the page says about a snapshot: the "why" banner first, then cards, on real captures."""

from __future__ import annotations

from datetime import timedelta

from dashboard.present import banner, gpu_card, human_duration, memory_by_user, short_command, view
from dashboard.tests.live_helpers import captured, later
from monitoring.telemetry.schema import (
    GPU_LOST,
    STATUS_NO_GPU,
    Container,
    DriverInfo,
    GpuProcess,
    HostProcess,
)


def test_a_busy_gpu_is_explained_by_its_busiest_process():
    snapshot = captured("load")
    (line,) = banner(snapshot)
    assert line.level == "busy"
    # the capture: pid 447 (python3 -, SM 100 %, 1.1 GiB) and pid 448 (python3 -c, 3.5 GiB)
    assert (
        line.text
        == "GPU 0 at 100 %: python3 (root), 1.1 GiB (+1 more process); slowed by power cap"
    )


def test_the_banner_says_who_where_how_much_and_for_how_long():
    snapshot = captured("load")
    gpu = snapshot.gpus[0]
    gpu.clock_event_reasons = []
    gpu.processes = [
        GpuProcess(
            pid=4242,
            gpu_index=0,
            gpu_uuid=gpu.uuid,
            name="python3",
            used_memory_mib=3686,
            sm_utilization=97,
            user="alice",
            command="python3 train.py --lr 3e-4",
            container=Container(runtime="docker", id="ab" * 32, name="llm-train"),
            start_time=snapshot.timestamp - timedelta(hours=2, minutes=14),
        )
    ]
    assert [line.text for line in banner(snapshot)] == [
        "GPU 0 at 100 %: python3 train.py (alice, container llm-train), 3.6 GiB, for 2 h 14 min"
    ]


def test_idle_gpus_are_one_line_with_the_hottest_temperature():
    snapshot = captured("idle")
    assert [line.text for line in banner(snapshot)] == ["The GPU is idle, hottest 46 °C"]
    two = later(snapshot)
    two.gpus.append(later(snapshot, temperature=41).gpus[0])
    two.gpus[1].index = 1
    assert [line.text for line in banner(two)] == ["All 2 GPUs idle, hottest 46 °C"]


def test_a_machine_without_a_gpu_says_so_and_how_to_try_the_demo():
    snapshot = captured("idle")
    snapshot.gpus = []
    snapshot.driver = DriverInfo("none", STATUS_NO_GPU, message="No NVIDIA GPU found")
    (line,) = banner(snapshot)
    assert "No NVIDIA GPU found on live-test" in line.text
    assert "./scripts/run --demo" in line.text


def test_a_lost_gpu_says_why():
    snapshot = captured("load")
    snapshot.gpus[0].state = GPU_LOST
    snapshot.gpus[0].lost_reason = "GPU is lost (fell off the bus)"
    assert banner(snapshot)[0].text == "GPU 0 is lost: GPU is lost (fell off the bus)"
    assert gpu_card(snapshot.gpus[0], snapshot.timestamp).lost


def test_the_card_of_the_captured_h100_under_load():
    snapshot = captured("load")
    card = gpu_card(snapshot.gpus[0], snapshot.timestamp)
    assert (card.utilization.value, card.utilization.percent) == ("100 %", 100)
    assert (card.memory.value, card.memory.detail) == ("4.6 GiB", "of 79.6 GiB")
    assert (card.temperature.value, card.temperature.detail) == ("69 °C", "slowdown at 89 °C")
    assert (card.power.value, card.power.detail, card.power.level) == (
        "697 W",
        "limit 700 W",
        "crit",
    )
    assert card.fan.value == "passive"  # the H100 SXM has no fan of its own
    assert (card.clocks.value, card.clocks.detail) == ("1350 MHz", "max 1980 MHz")
    assert card.pstate == "P0"
    assert card.slowdown == ["power cap"]
    assert [row.pid for row in card.processes] == [448, 447]  # most memory first


def test_gpu_memory_is_summed_per_user():
    snapshot = captured("load")
    (root,) = memory_by_user(snapshot)
    assert (root.user, root.memory, root.processes) == ("root", "4.6 GiB", 2)


def test_jobs_are_named_as_people_name_them():
    def named(command, name="python3"):
        return short_command(
            GpuProcess(pid=1, gpu_index=0, gpu_uuid=None, name=name, command=command)
        )

    assert named("/usr/bin/python3 -u /srv/train.py --epochs 3") == "python3 train.py"
    assert named("python3 -m vllm.entrypoints.openai.api_server --model x") == (
        "python3 -m vllm.entrypoints.openai.api_server"
    )
    assert named("python3 -c 'import torch'") == "python3 -c"
    assert named(None, name="ollama") == "ollama"
    assert named("unbalanced 'quote") == "unbalanced 'quote"  # split on spaces, never raise


def test_durations_read_as_words():
    assert human_duration(40) == "40 s"
    assert human_duration(5 * 60 + 3) == "5 min"
    assert human_duration(2 * 3600 + 14 * 60) == "2 h 14 min"
    assert human_duration(3 * 86400 + 4 * 3600) == "3 d 4 h"


def test_the_view_of_a_snapshot_counts_busy_gpus_and_the_hottest():
    v = view(captured("load"))
    assert (v.gpu_count, v.busy_count, v.hottest) == (1, 1, "69 °C")
    assert v.system.cores >= 1 and v.system.cpu.label == "CPU"


def _from_capture(name: str):
    from datetime import UTC, datetime
    from pathlib import Path

    from monitoring.telemetry.capture_file import read_capture_file
    from monitoring.telemetry.host import read_host_info
    from monitoring.telemetry.schema import Snapshot

    captures = Path(__file__).resolve().parents[2] / "monitoring" / "captures" / "field"
    reading = read_capture_file(captures / name)
    return Snapshot(datetime.now(UTC), read_host_info(), reading.driver, reading.gpus)


def test_mig_instances_are_shown_under_their_parent_gpu_from_the_real_a100_capture():
    from dashboard.fragments import render_frame, status_for

    snapshot = _from_capture("a100-sxm4-mig-v12.xml")
    frame = render_frame(
        view(snapshot),
        None,
        host="a100",
        version=1,
        status=status_for(None, 5),
        alerts=[],
        hosts=[],
    )
    card = frame.fragments["gpu-0-procs"]
    assert "MIG instances" in card
    assert card.count("GI ") == 4 and "GI 3 / CI 0" in card and "14 SMs" in card


def test_a_gpu_of_another_vendor_read_through_nvtop_is_marked_by_its_vendor():
    snapshot = _from_capture("nvtop-3.2-amd-ryzen-igpu-rx7900xtx.json")
    cards = view(snapshot).gpus
    assert "AMD" in {card.vendor for card in cards}
    assert gpu_card(captured("load").gpus[0], captured("load").timestamp).vendor is None


def test_a_kilobyte_command_line_is_cut_in_the_busiest_processes_and_the_gpu_table():
    load = captured("load", "present-test")
    browser = "/usr/lib/chromium/chromium --type=renderer " + "--flag=value " * 300
    load.system.top_processes = [HostProcess(10089, "chromium", "alice", 28.0, 210, browser)]
    load.gpus[0].processes[0].command = browser
    shown = view(load, "present-test")
    assert len(shown.system.top[0]["command"]) == 300
    assert shown.system.top[0]["command"].startswith("/usr/lib/chromium/chromium --type=renderer")
    assert shown.system.top[0]["command"].endswith("…")
    assert len(shown.gpus[0].processes[0].command) == 300
