"""Every parser of GPU output, on input nobody planned for: it reads, or it raises ParseError
naming where the input came from and what was wrong (never another exception).

One parametrised test for all parsers, so a new parser is covered by adding a row. The
inputs: arbitrary text, random bytes (as a file in an unknown code page decodes), and each
parser's real capture cut at any point (a child killed mid-write).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.telemetry import schema
from monitoring.telemetry.capture_file import read_capture_bytes
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.nvtop import parse_nvtop_snapshot
from monitoring.telemetry.smi_csv import parse_compute_apps_csv, parse_query_gpu_csv
from monitoring.telemetry.smi_xml import parse_smi_xml
from monitoring.tests.conftest import FIELD, H100

# (parser, what it returns when it reads, a real capture of its input)
PARSERS: dict[str, tuple[Callable[[str, str], object], type, object]] = {
    "smi-xml": (parse_smi_xml, schema.GpuReading, H100 / "smi_qx_load.xml"),
    "smi-csv": (parse_query_gpu_csv, schema.GpuReading, H100 / "smi_csv_load.csv"),
    "smi-csv-nounits": (parse_query_gpu_csv, schema.GpuReading, H100 / "smi_csv_nounits_load.csv"),
    "smi-apps-csv": (parse_compute_apps_csv, list, H100 / "smi_apps_load.csv"),
    "nvtop": (parse_nvtop_snapshot, schema.GpuReading, FIELD / "nvtop-apple-m2-max.json"),
    "any-capture": (
        lambda text, origin: read_capture_bytes(text.encode("latin-1", "replace"), origin),
        schema.GpuReading,
        H100 / "nvml_load.json",
    ),
}
SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


def _reads_or_raises_parse_error(name: str, text: str) -> None:
    parse, returns, _ = PARSERS[name]
    try:
        result = parse(text, "input.txt")
    except ParseError as exc:
        assert exc.origin == "input.txt" and exc.detail
        return
    assert isinstance(result, returns)


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=150, deadline=None, suppress_health_check=SLOW)
@given(st.text())
def test_arbitrary_text_reads_or_raises_parse_error(name, text):
    _reads_or_raises_parse_error(name, text)


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=150, deadline=None, suppress_health_check=SLOW)
@given(st.binary())
def test_random_bytes_read_or_raise_parse_error(name, data):
    _reads_or_raises_parse_error(name, data.decode("latin-1"))


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=100, deadline=None, suppress_health_check=SLOW)
@given(st.data())
def test_a_real_capture_cut_anywhere_reads_or_raises_parse_error(name, data):
    text = PARSERS[name][2].read_text()
    cut = data.draw(st.integers(min_value=0, max_value=len(text)), label="cut")
    _reads_or_raises_parse_error(name, text[:cut])


def _nested_too_deep(name: str) -> str:
    """The parser's real capture with one value nested 3000 levels deep (json.loads stops
    at about 1000)."""
    text = PARSERS[name][2].read_text()
    deep = "[" * 3000 + "]" * 3000
    if name == "nvtop":
        return text.replace('"device_name"', f'"deep": {deep}, "device_name"', 1)
    return text.replace('"gpus"', f'"deep": {deep}, "gpus"', 1)


@pytest.mark.parametrize("name", ["nvtop", "any-capture"])
def test_json_nested_deeper_than_the_decoder_goes_raises_parse_error(name):
    with pytest.raises(ParseError, match="nested too deeply"):
        PARSERS[name][0](_nested_too_deep(name), "input.txt")


@pytest.mark.parametrize("name", PARSERS)
def test_one_long_line_of_brackets_reads_or_raises_parse_error(name):
    # 100 KB on one line once took the CSV header check 36 s (a regex scanning from every "[")
    _reads_or_raises_parse_error(name, "[" * 100_000)
