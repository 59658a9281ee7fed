"""Peers measured through their own code against the same captured H100, NVML costs charged.

Glances, nvitop and gpustat each import ``pynvml``; each case here runs in its own Python
process, puts :mod:`fake_pynvml` (the H100 capture, every call charged its recorded cost) in
``sys.modules["pynvml"]`` first, then imports the peer and times one sample the way the peer
takes it. Nothing of the peers is re-implemented: only their entry points are called.

    bench/peers/setup.sh                          # once: creates .bench-venv with the peers
    .bench-venv/bin/python bench/peers/run_peers.py [--quick] [--json]

Figures are wall time per sample (median, p90). CPU time is not reported: on the VM these
were taken on, process CPU accounting of the busy-waits was unreliable (a 5 ms spin counted
as 0.2 ms). gpustat sleeps 100 ms per GPU with processes inside each query; that sleep is
timed separately and reported apart from its active time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # bench/: harness
sys.path.insert(0, str(HERE))  # bench/peers/: fake_pynvml

from harness import Sleepers, fmt_us, local_capture, stats_us  # noqa: E402

#: The issue's figures, measured the same way on the same capture (for the table).
ISSUE = {
    "glances_gpu_backend": "75 µs",
    "glances_gpu_plugin": "75 µs",
    "nvitop_tui": "3.8 ms",
    "nvitop_tui_processes_every_tick": "3.3 ms (issue 12)",
    "gpustat_active": "11 ms",
    "nvitop_api": "48 ms",
    "glances_host": "2.2 ms",
    "plain_psutil": "0.33 ms",
}
HOST_PLUGINS = ("cpu", "percpu", "mem", "memswap", "load", "diskio", "network")


def timed(fn: Callable[[], Any], n: int, warmup: int = 3, setup=None) -> dict[str, Any]:
    """Wall time of ``fn`` (µs): median, p90, mean …; ``setup`` runs untimed before each call."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    wall: list[int] = []
    for _ in range(n):
        if setup:
            setup()
        t0 = time.perf_counter_ns()
        fn()
        wall.append(time.perf_counter_ns() - t0)
    return stats_us(wall)


# --- cases (each runs in its own process) ----------------------------------------------------


def install_fake(sleepers: Sleepers | None, *, function_pointers: bool):
    from fake_pynvml import FakeNvml

    capture = local_capture("load", sleepers) if sleepers else local_capture_no_procs()
    fake = FakeNvml(capture, function_pointers=function_pointers)
    fake.install()
    return fake


def local_capture_no_procs() -> dict[str, Any]:
    from harness import load_capture

    return load_capture("load")


def import_glances_nvidia():
    """Glances imports pynvml only if ``CDLL('libnvidia-ml.so.1')`` loads: let that one pass."""
    import ctypes

    real = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        if name == "libnvidia-ml.so.1":
            return None
        return real(name, *args, **kwargs)

    ctypes.CDLL = cdll
    try:
        from glances.plugins.gpu.cards import nvidia
    finally:
        ctypes.CDLL = real
    assert nvidia.nvidia_gpu_enable, "glances did not enable its NVIDIA backend"
    return nvidia


def glances_args():
    from glances.main import GlancesMain

    argv, sys.argv = sys.argv, ["glances", "--disable-history"]
    try:
        core = GlancesMain()
        return core.get_args(), core.get_config()
    finally:
        sys.argv = argv


def glances_plugin(name: str, args, config):
    """As ``GlancesStats._load_plugin`` does: ``<Name>Plugin`` enabled through args."""
    import importlib

    module = importlib.import_module(f"glances.plugins.{name}")
    plugin = getattr(module, name.capitalize() + "Plugin")(args=args, config=config)
    setattr(args, f"disable_{name}", False)
    return plugin


def force_refresh(*plugins) -> Callable[[], None]:
    """Glances skips an update until its refresh timer runs out: make every call a refresh."""

    def setup() -> None:
        for plugin in plugins:
            plugin.refresh_timer.target = 0

    return setup


def case_glances_gpu(n: int) -> dict[str, Any]:
    fake = install_fake(None, function_pointers=True)
    nvidia = import_glances_nvidia()
    backend = nvidia.NvidiaGPU()
    stats = backend.get_device_stats()
    assert stats and stats[0]["name"].startswith("NVIDIA H100"), stats
    out = {"glances_gpu_backend": timed(backend.get_device_stats, n)}
    args, config = glances_args()
    from glances.plugins.gpu import GpuPlugin

    args.disable_gpu = False
    plugin = GpuPlugin(args=args, config=config)
    setup = force_refresh(plugin)
    setup()
    assert plugin.update(), "glances GPU plugin returned nothing"
    out["glances_gpu_plugin"] = timed(plugin.update, n, setup=setup)
    out["_calls"] = sorted(k for k in fake.nv.calls if k.startswith("nvmlDevice"))
    out["_absent"] = sorted(fake.absent)
    return out


def case_glances_host(n: int) -> dict[str, Any]:
    import psutil

    args, config = glances_args()
    plugins = [glances_plugin(name, args, config) for name in HOST_PLUGINS]
    setup = force_refresh(*plugins)

    def refresh() -> None:
        for plugin in plugins:
            plugin.update()

    setup()
    refresh()
    time.sleep(0.05)
    out = {"glances_host": timed(refresh, n, setup=setup)}
    for name, plugin in zip(HOST_PLUGINS, plugins, strict=True):
        one = force_refresh(plugin)
        out[f"glances_{name}"] = timed(plugin.update, max(n // 4, 20), setup=one)

    def plain() -> None:
        psutil.cpu_percent(interval=None, percpu=True)
        psutil.virtual_memory()
        psutil.swap_memory()
        os.getloadavg()
        psutil.disk_io_counters()
        psutil.net_io_counters()

    out["plain_psutil"] = timed(plain, n)
    return out


def case_nvitop_api(n: int) -> dict[str, Any]:
    with Sleepers(2) as sleepers:
        fake = install_fake(sleepers, function_pointers=False)
        import logging

        from nvitop import Device, GpuProcess

        logging.getLogger("nvitop").setLevel(logging.CRITICAL)
        devices = Device.all()

        def snapshot() -> None:
            for device in devices:
                device.as_snapshot()

        def snapshot_processes() -> None:
            for device in devices:
                device.as_snapshot()
                GpuProcess.take_snapshots(list(device.processes().values()), failsafe=True)

        procs = devices[0].processes()
        assert len(procs) == 2, procs
        out = {
            "nvitop_api": timed(snapshot, n, warmup=1),
            "nvitop_api_processes": timed(snapshot_processes, n, warmup=1),
        }
        out["_absent"] = sorted(fake.absent)
    return out


def case_nvitop_tui(n: int) -> dict[str, Any]:
    """The TUI's refresh at its default 1 s interval, without curses.

    The TUI's device panel snapshots every device each second (``take_snapshots``, ttl 1 s)
    with its own Device class (no PCIe throughput, several figures cached 5 s); its process
    panel snapshots the GPU processes every 2 s (ttl 2 s). Here each sample advances the
    clock nvitop's ``ttl_cache`` reads by 1 s, so its caches expire as in a live TUI.
    """
    offset = [0.0]
    real_monotonic = time.monotonic
    time.monotonic = lambda: real_monotonic() + offset[0]  # before nvitop binds its timer
    with Sleepers(2) as sleepers:
        fake = install_fake(sleepers, function_pointers=False)
        import itertools
        import logging

        from nvitop.tui.library.device import Device
        from nvitop.tui.library.process import GpuProcess

        logging.getLogger("nvitop").setLevel(logging.CRITICAL)
        devices = Device.all()
        tick = [0]

        def advance() -> None:
            offset[0] += 1.0
            tick[0] += 1

        process_every = [2]

        def refresh() -> None:
            for device in devices:
                device.as_snapshot()
            if tick[0] % process_every[0] == 0:
                processes = list(
                    itertools.chain.from_iterable(d.processes().values() for d in devices)
                )
                GpuProcess.take_snapshots(processes, failsafe=True)

        n = -(-n // 10) * 10  # whole 10 s periods: the 2 s and 5 s caches both line up
        all_ticks = timed(refresh, n, setup=advance)
        all_ticks["median_us"] = all_ticks["mean_us"]  # per-tick amortised: the mean
        tick_stats: dict[str, list[int]] = {"device": [], "process": []}
        for _ in range(max(n, 20)):
            advance()
            t0 = time.perf_counter_ns()
            refresh()
            kind = "process" if tick[0] % 2 == 0 else "device"
            tick_stats[kind].append(time.perf_counter_ns() - t0)
        process_every[0] = 1  # the process panel asked every tick (its caches still apply)
        every_tick = timed(refresh, n, setup=advance)
        every_tick["median_us"] = every_tick["mean_us"]
        out = {
            "nvitop_tui": all_ticks,
            "nvitop_tui_processes_every_tick": every_tick,
            "nvitop_tui_device_tick": stats_us(tick_stats["device"]),
            "nvitop_tui_process_tick": stats_us(tick_stats["process"]),
            "_absent": sorted(fake.absent),
        }
    time.monotonic = real_monotonic
    return out


def case_gpustat(n: int) -> dict[str, Any]:
    slept = [0]
    real_sleep = time.sleep

    def counted_sleep(seconds: float) -> None:  # still sleeps; only counts how long
        t0 = time.perf_counter_ns()
        real_sleep(seconds)
        slept[0] += time.perf_counter_ns() - t0

    with Sleepers(2) as sleepers:
        fake = install_fake(sleepers, function_pointers=True)
        import gpustat

        query = gpustat.new_query()
        assert len(query.gpus[0].processes) == 2, query.jsonify()
        out = {"gpustat": timed(gpustat.new_query, n, warmup=1)}
        time.sleep = counted_sleep
        active: list[int] = []
        for _ in range(n):
            slept[0] = 0
            t0 = time.perf_counter_ns()
            gpustat.new_query()
            active.append(time.perf_counter_ns() - t0 - slept[0])
        time.sleep = real_sleep
        out["gpustat_active"] = stats_us(active)
        out["_absent"] = sorted(fake.absent)
        out["_proxied"] = sorted(fake.proxied)
        out["_init_ms"] = fake.init_ns / 1e6
    return out


CASES = {
    "glances_gpu": case_glances_gpu,
    "glances_host": case_glances_host,
    "nvitop_api": case_nvitop_api,
    "nvitop_tui": case_nvitop_tui,
    "gpustat": case_gpustat,
}
ITERATIONS = {  # full run; --quick divides by 5
    "glances_gpu": 2000,
    "glances_host": 1000,
    "nvitop_api": 40,
    "nvitop_tui": 200,
    "gpustat": 20,
}

LABELS = {
    "glances_gpu_backend": "Glances GPU: NvidiaGPU.get_device_stats() (no processes)",
    "glances_gpu_plugin": "Glances GPU plugin update() (NVIDIA+AMD+Intel+ARM backends)",
    "nvitop_tui": "nvitop TUI refresh, mean per 1 s tick (processes every 2 s)",
    "nvitop_tui_device_tick": "  of which a device-only tick",
    "nvitop_tui_process_tick": "  of which a tick with process snapshots",
    "nvitop_tui_processes_every_tick": "nvitop TUI refresh, mean per 1 s tick (processes every tick)",
    "gpustat": "gpustat.new_query(), wall (re-inits NVML, processes, sleeps)",
    "gpustat_active": "  of which active (wall minus its time.sleep(0.1))",
    "nvitop_api": "nvitop API: Device.as_snapshot() (no processes)",
    "nvitop_api_processes": "nvitop API: as_snapshot() + processes() + take_snapshots",
    "glances_host": "Glances host refresh: cpu,percpu,mem,memswap,load,diskio,network",
    "plain_psutil": "plain psutil (same figures)",
}


def run_case(name: str, quick: bool) -> dict[str, Any]:
    n = ITERATIONS[name] // (5 if quick else 1)
    return CASES[name](max(n, 4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each case N times, keep each figure's lowest median (for a busy machine)",
    )
    args = parser.parse_args()
    if args.case:  # child: one case, JSON on the last stdout line
        result = run_case(args.case, args.quick)
        print(json.dumps(result))
        return 0
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for name in args.only or CASES:
        cmd = [sys.executable, __file__, "--case", name] + (["--quick"] if args.quick else [])
        for _ in range(max(1, args.repeat)):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                failures[name] = proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"
                break
            for key, value in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                if key.startswith("_"):
                    results[f"_{name}{key}"] = value
                elif key not in results or value["median_us"] < results[key]["median_us"]:
                    results[key] = value
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"# peers on {os.uname().nodename}: {os.cpu_count()} cores, load average {load}; "
        "NVML charged from the H100 load capture"
    )
    if args.repeat > 1:
        print(f"# best of {args.repeat} runs: each row is the run with its lowest median")
    print(f"{'peer (one sample, 1 GPU)':<66} {'median':>9} {'p90':>9}  issue")
    for key, label in LABELS.items():
        row = results.get(key)
        if row is None:
            continue
        print(
            f"{label:<66} {fmt_us(row['median_us']):>9} {fmt_us(row['p90_us']):>9}  "
            f"{ISSUE.get(key, '')}"
        )
    for key in sorted(results):
        if key.startswith("glances_") and key[8:] in HOST_PLUGINS:
            print(f"  glances {key[8:]:<10} update() {fmt_us(results[key]['median_us']):>9}")
    notes = {k: v for k, v in results.items() if k.startswith("_")}
    if notes:
        print("harness notes:", json.dumps(notes))
    for name, why in failures.items():
        print(f"FAILED {name}: {why}")
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
