"""Textual figures as nvidia-smi writes them: numbers with units, or why there is none."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.telemetry import values
from monitoring.telemetry.schema import NOT_REPORTED, NOT_SUPPORTED
from monitoring.telemetry.values import Missing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("698.59 W", 698.59),
        ("100 %", 100.0),
        ("68", 68.0),
        ("-8 C", -8.0),
        ("16x", 16.0),
        ("1410 MHz", 1410.0),
    ],
)
def test_it_reads_numbers_with_units(text, expected):
    assert values.number(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("N/A", NOT_REPORTED),
        ("[N/A]", NOT_REPORTED),
        ("[Not Supported]", NOT_SUPPORTED),
        ("ERR!", "the driver reported an error reading this value"),
        ("Requested functionality has been deprecated", "deprecated by this driver"),
        ("[Insufficient Permissions]", "insufficient permissions to read this value"),
        (None, NOT_REPORTED),
    ],
)
def test_it_turns_every_missing_spelling_into_a_reason(text, reason):
    value = values.number(text)
    assert value == Missing(reason)
    assert not value


def test_a_zero_is_a_zero_not_missing():
    assert values.number("0 %") == 0.0
    assert values.integer("0") == 0


def test_it_converts_memory_to_mebibytes():
    assert values.mebibytes("81559 MiB") == 81559
    assert values.mebibytes("2 GiB") == 2048
    assert values.mebibytes("1048576 B") == 1
    assert values.mebibytes("2048", default_unit="kib") == 2


def test_it_reads_masks_and_flags():
    assert values.hex_mask("0x0000000000000004") == 4
    assert values.flag("Enabled") is True
    assert values.flag("Not Active") is False
    assert values.flag("[N/A]") == Missing(NOT_REPORTED)


def test_garbage_is_a_value_error():
    with pytest.raises(ValueError, match="not a number"):
        values.number("hot")


@given(st.text(max_size=40))
def test_number_never_raises_anything_but_value_error(text):
    try:
        result = values.number(text)
    except ValueError:
        return
    assert isinstance(result, (float, Missing))
