"""Decode the driver's numeric codes into the names the UI shows.

Shared by every source: NVML hands bit masks and enums, nvidia-smi writes hex masks or
per-reason ``Active`` lines; all end up as the same names.
"""

from __future__ import annotations

# Clock event (formerly "throttle") reasons, by NVML bit.
CLOCK_EVENT_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clocks_setting",
}

# nvidia-smi XML element suffixes (after clocks_event_reason_ / clocks_throttle_reason_).
XML_REASON_NAMES: dict[str, str] = {
    "gpu_idle": "gpu_idle",
    "applications_clocks_setting": "applications_clocks_setting",
    "sw_power_cap": "sw_power_cap",
    "hw_slowdown": "hw_slowdown",
    "hw_thermal_slowdown": "hw_thermal_slowdown",
    "hw_power_brake_slowdown": "hw_power_brake_slowdown",
    "sync_boost": "sync_boost",
    "sw_thermal_slowdown": "sw_thermal_slowdown",
    "display_clocks_setting": "display_clocks_setting",
    "display_clock_setting": "display_clocks_setting",
    "unknown": "unknown",
}

# Human labels for the UI.
REASON_LABELS: dict[str, str] = {
    "gpu_idle": "idle",
    "applications_clocks_setting": "application clocks",
    "sw_power_cap": "power cap",
    "hw_slowdown": "hardware slowdown",
    "sync_boost": "sync boost",
    "sw_thermal_slowdown": "thermal (software)",
    "hw_thermal_slowdown": "thermal (hardware)",
    "hw_power_brake_slowdown": "power brake",
    "display_clocks_setting": "display clocks",
    "unknown": "unknown",
}

COMPUTE_MODES: dict[int, str] = {
    0: "Default",
    1: "Exclusive_Thread",
    2: "Prohibited",
    3: "Exclusive_Process",
}

ARCHITECTURES: dict[int, str] = {
    2: "Kepler",
    3: "Maxwell",
    4: "Pascal",
    5: "Volta",
    6: "Turing",
    7: "Ampere",
    8: "Ada Lovelace",
    9: "Hopper",
    10: "Blackwell",
}


def decode_clock_events(mask: int) -> list[str]:
    """Bit mask -> reason names, lowest bit first; unknown bits become ``unknown``."""
    names = [name for bit, name in CLOCK_EVENT_BITS.items() if mask & bit]
    known = 0
    for bit in CLOCK_EVENT_BITS:
        known |= bit
    if mask & ~known:
        names.append("unknown")
    return names


def pstate_name(value: int) -> str | None:
    """NVML pstate enum -> ``P0``; 32 means unknown."""
    return f"P{value}" if 0 <= value <= 15 else None


def compute_mode_name(value: int) -> str:
    return COMPUTE_MODES.get(value, f"Unknown({value})")
