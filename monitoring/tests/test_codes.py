"""Driver codes decode to the same names whichever source reported them."""

import pynvml

from monitoring.telemetry import codes


def test_it_decodes_the_power_cap_bit_of_the_h100_under_load():
    # nvml_load.json: clock_event_reasons = 4; smi_csv_extra_load.csv: 0x...04
    assert codes.decode_clock_events(4) == ["sw_power_cap"]


def test_it_decodes_several_bits_and_flags_unknown_ones():
    idle_and_hot = (
        pynvml.nvmlClocksEventReasonGpuIdle | pynvml.nvmlClocksEventReasonHwThermalSlowdown
    )
    assert codes.decode_clock_events(idle_and_hot) == ["gpu_idle", "hw_thermal_slowdown"]
    assert not 0x8000 & pynvml.nvmlClocksEventReasonAll
    assert codes.decode_clock_events(0x8000) == ["unknown"]
    assert codes.decode_clock_events(pynvml.nvmlClocksEventReasonNone) == []


def test_every_reason_nvml_names_has_a_name_and_a_label():
    reasons = {
        name: value
        for name, value in vars(pynvml).items()
        if name.startswith("nvmlClocksEventReason") and name not in {"nvmlClocksEventReasonAll"}
    }
    assert len(reasons) >= 10
    for name, value in reasons.items():
        decoded = codes.decode_clock_events(value)
        assert "unknown" not in decoded, name
        assert all(reason in codes.REASON_LABELS for reason in decoded), name
    assert codes.decode_clock_events(pynvml.nvmlClocksEventReasonAll) == [
        "gpu_idle",
        "applications_clocks_setting",
        "sw_power_cap",
        "hw_slowdown",
        "sync_boost",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
        "display_clocks_setting",
    ]


def test_it_names_pstates_and_compute_modes():
    assert codes.pstate_name(0) == "P0"
    assert codes.pstate_name(32) is None
    assert codes.compute_mode_name(0) == "Default"
    assert codes.compute_mode_name(pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS) == "Exclusive_Process"
    assert codes.compute_mode_name(7) == "Unknown(7)"
