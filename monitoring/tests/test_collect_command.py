"""`manage.py collect` end to end, as a user runs it: real process, real exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitoring.tests.conftest import H100
from monitoring.tests.helpers import collect

ROOT = Path(__file__).resolve().parents[2]


def test_it_shows_the_host_and_says_plainly_that_no_gpu_was_found():
    result = collect("--once", "--json", env={"HOOFHEARTED_NVIDIA_SMI": "/nonexistent/nvidia-smi"})
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert snapshot["gpus"] == []
    assert snapshot["driver"]["status"] == "no-gpu"
    assert snapshot["driver"]["message"] == "No NVIDIA GPU found: showing the host only."
    assert any(note.startswith("nvml:") for note in snapshot["messages"])
    system = snapshot["system"]
    assert 0 <= system["cpuUsage"] <= 100
    assert 0 < system["memoryUsage"] < 100
    assert len(system["loadAverage"]) == 3
    assert system["uptime"] > 0
    assert snapshot["host"]["cores"] >= 1
    assert snapshot["timestamp"].endswith("Z")


def test_it_replays_the_h100_under_load():
    result = collect("--once", "--json", "--replay", str(H100), "--state", "load")
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert snapshot["driver"]["source"] == "replay"
    assert snapshot["driverVersion"] == "580.159.04"
    assert snapshot["cudaVersion"] == "13.0"
    (gpu,) = snapshot["gpus"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["utilization"] == 100
    assert gpu["fanSpeed"] is None and gpu["fans"] == []
    assert "fans" in gpu["unsupported"]
    assert sorted(p["pid"] for p in gpu["processes"]) == [447, 448]
    assert {p["user"] for p in gpu["processes"]} == {"root"}
    assert {p["usedMemoryMiB"] for p in gpu["processes"]} == {3590, 1130}
    assert sorted(p["pid"] for p in snapshot["processes"]) == [447, 448]


@pytest.mark.parametrize(
    "name",
    ["smi_qx_load.xml", "smi_csv_load.csv", "smi_csv_nounits_load.csv", "nvml_load.json"],
)
def test_it_normalises_a_saved_capture_of_any_kind(name):
    result = collect("--once", "--json", "--from-file", str(H100 / name))
    assert result.returncode == 0, result.stderr
    (gpu,) = json.loads(result.stdout)["gpus"]
    assert gpu["uuid"] == "GPU-997b6e6a-4ec9-046f-d06e-072fb17657d7"
    assert gpu["memoryTotal"] == 81559
    assert abs(gpu["memoryUsed"] - 4735) <= 1
    assert gpu["utilization"] == 100


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file"),
        (b"hello world\n", "not a recognised capture"),
        (b"<nvidia_smi_log><gpu>", ""),
        (b'{"gpus": 3}', ""),
        (bytes(range(256)), ""),
    ],
)
def test_broken_input_is_one_line_and_exit_status_2(tmp_path, content, expected):
    path = tmp_path / "capture.txt"
    path.write_bytes(content)
    result = collect("--once", "--json", "--from-file", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert expected in lines[0]


def test_a_missing_file_is_exit_status_2():
    result = collect("--once", "--from-file", "/nonexistent/capture.xml")
    assert result.returncode == 2
    assert "No such file" in result.stderr


def test_a_bad_environment_value_is_named():
    result = collect("--once", env={"HOOFHEARTED_GPU_SOURCE": "cuda"})
    assert result.returncode == 2
    assert "HOOFHEARTED_GPU_SOURCE='cuda'" in result.stderr


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("lab/gpu-1", "has a '/', which cannot be part of the page's address"),
        ("gpu\tbox", "has control characters"),
        ("g" * 256, "is longer than 255 characters"),
    ],
)
def test_a_host_name_the_page_could_not_link_to_is_refused_saying_why(name, words):
    result = collect("--once", "--host-name", name)
    assert result.returncode == 2
    assert words in result.stderr and "HOOFHEARTED_HOST_NAME" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_prints_a_readable_summary_without_json():
    result = collect("--once", "--replay", str(H100), "--state", "load")
    assert result.returncode == 0, result.stderr
    assert "GPU 0 NVIDIA H100 80GB HBM3: util 100 %" in result.stdout
    assert "pid 448 root python3 3.5 GiB" in result.stdout


def test_a_compute_apps_csv_is_refused_saying_what_to_save_instead():
    result = collect("--from-file", str(H100 / "smi_apps_load.csv"))
    assert result.returncode == 2
    assert "lists processes only" in result.stderr and "-q -x" in result.stderr
