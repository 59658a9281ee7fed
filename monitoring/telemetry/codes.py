"""Decode the driver's numeric codes into the names the UI shows.

Shared by every source: NVML hands bit masks and enums, nvidia-smi writes hex masks or
per-reason ``Active`` lines; all end up as the same names.
"""

from __future__ import annotations

import functools
import operator

import pynvml

# Clock event reasons (formerly "throttle reasons"), by NVML bit: the values are pynvml's.
CLOCK_EVENT_BITS: dict[int, str] = {
    pynvml.nvmlClocksEventReasonGpuIdle: "gpu_idle",
    pynvml.nvmlClocksEventReasonApplicationsClocksSetting: "applications_clocks_setting",
    pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
    pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
    pynvml.nvmlClocksEventReasonSyncBoost: "sync_boost",
    pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
    pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
    pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    pynvml.nvmlClocksEventReasonDisplayClockSetting: "display_clocks_setting",
}
_KNOWN_CLOCK_EVENTS = functools.reduce(operator.or_, CLOCK_EVENT_BITS)

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

# As nvidia-smi names them.
COMPUTE_MODES: dict[int, str] = {
    pynvml.NVML_COMPUTEMODE_DEFAULT: "Default",
    pynvml.NVML_COMPUTEMODE_EXCLUSIVE_THREAD: "Exclusive_Thread",
    pynvml.NVML_COMPUTEMODE_PROHIBITED: "Prohibited",
    pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS: "Exclusive_Process",
}

ARCHITECTURES: dict[int, str] = {
    pynvml.NVML_DEVICE_ARCH_KEPLER: "Kepler",
    pynvml.NVML_DEVICE_ARCH_MAXWELL: "Maxwell",
    pynvml.NVML_DEVICE_ARCH_PASCAL: "Pascal",
    pynvml.NVML_DEVICE_ARCH_VOLTA: "Volta",
    pynvml.NVML_DEVICE_ARCH_TURING: "Turing",
    pynvml.NVML_DEVICE_ARCH_AMPERE: "Ampere",
    pynvml.NVML_DEVICE_ARCH_ADA: "Ada Lovelace",
    pynvml.NVML_DEVICE_ARCH_HOPPER: "Hopper",
    pynvml.NVML_DEVICE_ARCH_BLACKWELL: "Blackwell",
}


def decode_clock_events(mask: int) -> list[str]:
    """Bit mask -> reason names, lowest bit first; unknown bits become ``unknown``."""
    names = [name for bit, name in CLOCK_EVENT_BITS.items() if mask & bit]
    if mask & ~_KNOWN_CLOCK_EVENTS:
        names.append("unknown")
    return names


def pstate_name(value: int) -> str | None:
    """NVML pstate enum -> ``P0``; 32 means unknown."""
    return f"P{value}" if 0 <= value <= 15 else None


def compute_mode_name(value: int) -> str:
    return COMPUTE_MODES.get(value, f"Unknown({value})")
