"""What both telemetry benchmarks share: the H100 captures, local stand-in processes, timing.

The captured GPU processes (pids 447 and 448 on the capture machine) do not exist here, so
the benchmarks start two sleeping Python processes and point the capture's process list at
them: attribution and the peers' psutil look-ups then read a real /proc, as on a GPU host.
Timing is per call with ``perf_counter_ns`` after a warm-up, reported as median and p90.

Imported by ``bench_telemetry.py`` (project venv) and ``peers/run_peers.py`` (peers' venv),
so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "monitoring" / "captures" / "nvidia" / "h100"
NVTOP = ROOT / "monitoring" / "captures" / "nvtop"
SLEEPER_CODE = "import time; time.sleep(3600)  # hoofhearted bench: stand-in GPU process"


def load_capture(state: str) -> dict[str, Any]:
    return json.loads((H100 / f"nvml_{state}.json").read_text())


def smi_call_ms() -> float:
    """The recorded wall time of one ``nvidia-smi --query-gpu`` call (median, ms)."""
    text = (H100 / "smi_timing.txt").read_text()
    words = text.split()
    return float(words[words.index("median") + 1])


def captured_pids(capture: dict[str, Any]) -> list[int]:
    """The GPU process pids the capture lists, in order of first appearance."""
    pids: list[int] = []
    for gpu in capture.get("gpus", []):
        for key in ("compute_procs", "graphics_procs", "process_util"):
            for proc in (gpu.get(key) or {}).get("value") or []:
                if proc["pid"] not in pids:
                    pids.append(proc["pid"])
    return pids


def remap_pids(capture: dict[str, Any], mapping: dict[int, int]) -> dict[str, Any]:
    """A copy whose process lists name local pids instead of the capture machine's."""
    out = copy.deepcopy(capture)
    for gpu in out.get("gpus", []):
        for key in ("compute_procs", "graphics_procs", "process_util"):
            for proc in (gpu.get(key) or {}).get("value") or []:
                proc["pid"] = mapping.get(proc["pid"], proc["pid"])
    return out


class Sleepers:
    """Sleeping child processes standing in for the captured GPU processes."""

    def __init__(self, count: int) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", SLEEPER_CODE]) for _ in range(count)]
        time.sleep(0.05)  # let them exec, so /proc shows their real command line

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Sleepers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def local_capture(state: str, sleepers: Sleepers) -> dict[str, Any]:
    """The capture of ``state`` with its GPU processes pointing at ``sleepers``."""
    capture = load_capture(state)
    pids = captured_pids(capture)
    if len(pids) > len(sleepers.pids):
        raise ValueError(f"{state}: {len(pids)} GPU processes, only {len(sleepers.pids)} stand-ins")
    return remap_pids(capture, dict(zip(pids, sleepers.pids, strict=False)))


def measure(
    fn: Callable[[], Any], iterations: int, warmup: int | None = None, setup=None
) -> dict[str, float]:
    """Median, p90, mean and min of ``fn``'s wall time in µs over ``iterations`` calls.

    ``setup`` (untimed) runs before each call, e.g. to give a cold cache every time.
    """
    warmup = max(1, iterations // 10) if warmup is None else warmup
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    times: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        if setup is not None:
            setup()
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return stats_us(times)


def stats_us(times_ns: list[int]) -> dict[str, float]:
    ordered = sorted(times_ns)
    n = len(ordered)
    return {
        "median_us": statistics.median(ordered) / 1000,
        "p90_us": ordered[min(n - 1, int(0.9 * n))] / 1000,
        "mean_us": sum(ordered) / n / 1000,
        "min_us": ordered[0] / 1000,
        "n": n,
    }


def fmt_us(us: float) -> str:
    """µs below 10 ms, ms above: the unit a reader compares against the targets."""
    if us >= 10_000:
        return f"{us / 1000:.1f} ms"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.0f} µs" if us >= 100 else f"{us:.1f} µs"
