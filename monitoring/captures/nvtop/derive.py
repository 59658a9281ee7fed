"""Derive ``nvtop -s`` output for the H100 from the real NVML captures, by nvtop's own rules.

No nvtop ever ran on that H100, so this script plays nvtop's part: it takes the NVML
answers in ``../nvidia/h100/nvml_<state>.json`` and prints them the way nvtop's
``print_snapshot`` (src/interface.c, current master: the version that prints ``encode`` /
``decode``, ``mem_total/used/free`` and the ``processes`` array) would, after nvtop's NVIDIA
backend (src/extract_gpuinfo_nvidia.c) and ``gpuinfo_fix_dynamic_info_from_process_info``
(src/extract_gpuinfo.c) turned those answers into figures. Every rule below names the
nvtop code it reproduces. Run it from anywhere; it rewrites ``nvtop_s_<state>.json`` here.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
H100 = HERE.parent / "nvidia" / "h100"

# print_snapshot's indents: two spaces for the device braces, then 3, 5 and 7 (sic).
I2, I4, I6, I8 = "  ", "   ", "     ", "       "


def _value(answer: dict) -> object | None:
    """An NVML answer from the capture, or None when the call failed (nvtop: field invalid)."""
    return None if "error" in answer else answer["value"]


def _quoted(text: str | None) -> str:
    return "null" if text is None else f'"{text}"'


def _escape_cmdline(cmdline: str) -> str:
    """print_snapshot escapes \\n \\b \\f \\r \\t, backslash and double quote, nothing else."""
    out = []
    for ch in cmdline:
        special = {"\n": "\\n", "\b": "\\b", "\f": "\\f", "\r": "\\r", "\t": "\\t"}
        if ch in special:
            out.append(special[ch])
            continue
        if ch in '\\"':
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _processes(gpu: dict) -> list[dict]:
    """gpuinfo_nvidia_get_running_processes + gpuinfo_nvidia_get_process_utilization."""
    memory = _value(gpu["memory"])
    total = memory["total"] if memory else None
    samples = _value(gpu["process_util"]) or []
    procs = []
    # Graphics processes first, then compute (nvtop queries them in that order).
    for kind, key in (("graphic", "graphics_procs"), ("compute", "compute_procs")):
        for info in _value(gpu[key]) or []:
            pid = info["pid"]
            sample = next((s for s in samples if s["pid"] == pid and s["smUtil"] <= 100), None)
            resolved = info.get("resolved") or {}
            # get_command_from_pid: /proc/<pid>/cmdline with the NULs turned into spaces.
            cmd = resolved.get("cmd")
            procs.append(
                {
                    "pid": pid,
                    "cmdline": " ".join(cmd) if cmd else None,
                    "kind": kind,
                    "user": resolved.get("user"),
                    # A process with no utilization sample since the last query is set to 0 %.
                    "gpu_usage": sample["smUtil"] if sample else 0,
                    "encode": sample["encUtil"] if sample else 0,
                    "decode": sample["decUtil"] if sample else 0,
                    "mem_bytes": info["usedGpuMemory"],
                    # gpuinfo_populate_process_info: roundf(100 * used / total).
                    "mem_percent": (
                        round(100.0 * info["usedGpuMemory"] / total) if total else None
                    ),
                }
            )
    return procs


def nvtop_snapshot(capture: dict) -> str:
    """The exact text ``nvtop -s`` prints for the GPUs of one NVML capture."""
    lines = ["["]
    gpus = capture["gpus"]
    for position, gpu in enumerate(gpus):
        dev: list[str] = []
        dev.append(f'{I4}"device_name": {_quoted(_value(gpu["name"]))},')

        # GPU clock: the larger of the graphics and SM clocks, "%uMHz".
        graphics, sm = _value(gpu["clock_graphics"]), _value(gpu["clock_sm"])
        clocks = [c for c in (graphics, sm) if c is not None]
        clock = max(clocks) if clocks else None
        dev.append(f'{I4}"gpu_clock": {_quoted(None if clock is None else f"{clock}MHz")},')
        mem_clock = _value(gpu["clock_mem"])
        dev.append(f'{I4}"mem_clock": {_quoted(None if mem_clock is None else f"{mem_clock}MHz")},')

        temp = _value(gpu["temperature"])
        dev.append(f'{I4}"temp": {_quoted(None if temp is None else f"{temp}C")},')

        # Fan: nvmlDeviceGetFanSpeed answers NotSupported on the H100; the NVIDIA backend
        # never sets fan_rpm and marks the board not integrated, so nvtop prints null.
        fan = _value(gpu["fan_speed"])
        dev.append(f'{I4}"fan_speed": {_quoted(None if fan is None else f"{min(fan, 100)}%")},')

        # Power: nvmlDeviceGetPowerUsage in mW, printed as power_draw / 1000 (integer: floors).
        power_mw = _value(gpu["power_usage_mw"])
        power = None if power_mw is None else f"{power_mw // 1000}W"
        dev.append(f'{I4}"power_draw": {_quoted(power)},')

        procs = _processes(gpu)
        # gpu_util: the larger of nvmlDeviceGetUtilizationRates().gpu and the per-process
        # SM utilization summed (capped at 100) - gpuinfo_fix_dynamic_info_from_process_info.
        util = _value(gpu["utilization"])
        reported = util["gpu"] if util else None
        summed = min(100, sum(p["gpu_usage"] for p in procs)) if procs else None
        candidates = [u for u in (reported, summed) if u is not None]
        gpu_util = max(candidates) if candidates else None
        dev.append(f'{I4}"gpu_util": {_quoted(None if gpu_util is None else f"{gpu_util}%")},')

        # NVIDIA encoders and decoders are separate engines: "encode" and "decode".
        enc, dec = _value(gpu["encoder"]), _value(gpu["decoder"])
        dev.append(f'{I4}"encode": {_quoted(None if enc is None else f"{enc[0]}%")},')
        dev.append(f'{I4}"decode": {_quoted(None if dec is None else f"{dec[0]}%")},')

        # Memory. nvtop asks nvmlDeviceGetMemoryInfo_v2 with version = 2 rather than
        # NVML_STRUCT_VERSION(Memory, 2), which NVML rejects, then falls back to v1: real
        # nvtop output shows the v1 meaning (used + free == total, see README), so the
        # capture's v1 ``memory`` answer is used. mem_util is used * 100 / total (integer):
        # memory occupancy, not nvmlUtilization.memory.
        memory = _value(gpu["memory"])
        if memory:
            mem_util = f"{memory['used'] * 100 // memory['total']}%"
            total, used, free = (str(memory[k]) for k in ("total", "used", "free"))
        else:
            mem_util = total = used = free = None
        dev.append(f'{I4}"mem_util": {_quoted(mem_util)},')
        dev.append(f'{I4}"mem_total": {_quoted(total)},')
        dev.append(f'{I4}"mem_used": {_quoted(used)},')
        dev.append(f'{I4}"mem_free": {_quoted(free)},')

        dev.append(f'{I4}"processes" : [')
        for i, proc in enumerate(procs):
            cmdline = None if proc["cmdline"] is None else _escape_cmdline(proc["cmdline"])
            mem_percent = proc["mem_percent"]
            dev.append(f"{I6}{{")
            dev.append(f'{I8}"pid": "{proc["pid"]}",')
            dev.append(f'{I8}"cmdline": {_quoted(cmdline)},')
            dev.append(f'{I8}"kind": "{proc["kind"]}",')
            dev.append(f'{I8}"user": {_quoted(proc["user"])},')
            dev.append(f'{I8}"gpu_usage": "{proc["gpu_usage"]}%",')
            dev.append(f'{I8}"gpu_mem_bytes_alloc": "{proc["mem_bytes"]}",')
            dev.append(
                f'{I8}"gpu_mem_usage": {_quoted(None if mem_percent is None else f"{mem_percent}%")},'
            )
            dev.append(f'{I8}"encode": "{proc["encode"]}%",')
            dev.append(f'{I8}"decode": "{proc["decode"]}%"')
            dev.append(f"{I6}}}" + ("," if i != len(procs) - 1 else ""))
        dev.append(f"{I4}]")

        lines.append(f"{I2}{{")
        lines.extend(dev)
        lines.append(f"{I2}}}" + ("," if position != len(gpus) - 1 else ""))
    lines.append("]")
    return "\n".join(lines) + "\n"


def main() -> None:
    for state in ("idle", "load"):
        capture = json.loads((H100 / f"nvml_{state}.json").read_text())
        text = nvtop_snapshot(capture)
        json.loads(text)  # what nvtop prints is valid JSON since 3.3.2
        (HERE / f"nvtop_s_{state}.json").write_text(text)


if __name__ == "__main__":
    main()
