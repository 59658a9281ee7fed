"""Driver codes decode to the same names whichever source reported them."""

from monitoring.telemetry import codes


def test_it_decodes_the_power_cap_bit_of_the_h100_under_load():
    # nvml_load.json: clock_event_reasons = 4; smi_csv_extra_load.csv: 0x...04
    assert codes.decode_clock_events(4) == ["sw_power_cap"]


def test_it_decodes_several_bits_and_flags_unknown_ones():
    assert codes.decode_clock_events(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert codes.decode_clock_events(0x8000) == ["unknown"]
    assert codes.decode_clock_events(0) == []


def test_it_names_pstates_and_compute_modes():
    assert codes.pstate_name(0) == "P0"
    assert codes.pstate_name(32) is None
    assert codes.compute_mode_name(0) == "Default"
    assert codes.compute_mode_name(3) == "Exclusive_Process"
