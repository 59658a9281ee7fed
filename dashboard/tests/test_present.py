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
    gpu.throttle_reasons = []
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
