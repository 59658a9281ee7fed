"""Bytes that are not UTF-8, or not text, cost the field that holds them and nothing else:
in saved captures of every format, in the live nvidia-smi stream, and in NVML's answers.

The property tests insert random bytes into any text field of each real capture (the H100's,
and every field input): reading must raise nothing but ParseError, and when it reads, every
GPU is still there with the figures the damaged field does not feed."""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.telemetry import schema
from monitoring.telemetry.capture_file import read_capture_bytes, read_capture_file
from monitoring.telemetry.decoding import REPLACEMENT, decode_output
from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.nvml_capture import CapturedNvml, load_capture
from monitoring.telemetry.nvml_capture import with_mig as nvml_with_mig
from monitoring.telemetry.nvml_source import READ_FAILED, NvmlSource
from monitoring.telemetry.serialize import to_data
from monitoring.telemetry.smi_csv import KNOWN_GPU_FIELDS as KNOWN
from monitoring.telemetry.smi_csv import _is_header, _split, canonical
from monitoring.telemetry.smi_source import NvidiaSmiSource
from monitoring.telemetry.smi_xml import parse_smi_xml
from monitoring.tests.conftest import FIELD, H100
from monitoring.tests.helpers import FAKE, FAST

LOAD_XML = H100 / "smi_qx_load.xml"
GBK = "电脑管家".encode("gbk")  # the QQ PC Manager name of the Windows field capture


# --- saved captures: encodings ------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: codecs.BOM_UTF8 + t.encode(),
        lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"),  # PowerShell's `>`
        lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
        lambda t: t.encode("utf-16-le"),  # no byte-order mark
    ],
    ids=["utf-8-bom", "utf-16-le-bom", "utf-16-be-bom", "utf-16-le-no-bom"],
)
def test_a_capture_in_another_unicode_encoding_reads_the_same(encode):
    text = LOAD_XML.read_text()
    expected = parse_smi_xml(text)
    reading = read_capture_bytes(encode(text), origin="capture.xml")
    assert to_data(reading.gpus) == to_data(expected.gpus)
    assert not any("not valid text" in m for m in reading.messages)


def test_text_that_is_not_utf_8_is_not_taken_for_utf_16():
    # The old reader fell back to UTF-16 without a byte-order mark and read garbage.
    raw = (FIELD / "windows-gbk-process-name.xml").read_bytes()
    text, replaced = decode_output(raw)
    assert text.startswith('<?xml version="1.0" ?>') and replaced == 4


def test_binary_data_is_refused_plainly(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ParseError, match="not text"):
        read_capture_file(path)


# --- saved captures: each format ----------------------------------------------------------


def test_unescaped_markup_in_a_process_name_costs_that_name_only():
    # nvidia-smi does not escape process names: "a&b <x" makes the XML not well-formed.
    text = LOAD_XML.read_text().replace(
        "<process_name>python3</process_name>", "<process_name>R&D <tool> x</process_name>", 1
    )
    reading = read_capture_bytes(text.encode(), origin="capture.xml")
    (gpu,) = reading.gpus
    assert gpu.utilization == 100 and len(gpu.processes) == 2
    assert gpu.processes[0].name.startswith("R&D")
    assert "not well-formed" in reading.messages[0]


def test_control_bytes_left_by_a_concurrent_write_cost_their_characters():
    raw = LOAD_XML.read_bytes().replace(
        b"python3</process_name>", b"py\x00\x1b[0mthon3</process_name>", 1
    )
    (gpu,) = read_capture_bytes(raw, origin="capture.xml").gpus
    assert gpu.processes[0].name == f"py{REPLACEMENT}{REPLACEMENT}[0mthon3"
    assert gpu.temperature == 68 and gpu.memory_used is not None


def test_a_gbk_name_in_a_query_csv_costs_its_characters():
    raw = (H100 / "smi_csv_load.csv").read_bytes().replace(b"NVIDIA H100 80GB HBM3", GBK)
    reading = read_capture_bytes(raw, origin="gpus.csv")
    (gpu,) = reading.gpus
    assert REPLACEMENT in gpu.name and gpu.utilization == 100 and gpu.power_usage == 698.59


def test_a_gbk_command_line_in_an_nvtop_snapshot_costs_its_characters():
    raw = (
        (FIELD / "nvtop-apple-m2-max.json")
        .read_bytes()
        .replace(b'"cmdline": null', b'"cmdline": "/Applications/' + GBK + b'\\t.app"', 1)
    )
    reading = read_capture_bytes(raw, origin="nvtop.json")
    (gpu,) = reading.gpus
    assert REPLACEMENT in gpu.processes[0].name and gpu.memory_total == 65536


# --- the live nvidia-smi stream -----------------------------------------------------------


def test_the_live_source_reads_a_document_that_is_not_utf_8(monkeypatch):
    for name in list(os.environ):
        if name.startswith("FAKE_SMI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FAKE_SMI_XML", str(FIELD / "windows-gbk-process-name.xml"))
    with NvidiaSmiSource(FAKE, **FAST) as source:
        (gpu,) = source.read().gpus
    assert gpu.name == "GeForce GTX 1060 6GB" and gpu.utilization == 2
    assert REPLACEMENT in gpu.processes[1].name


# --- NVML: only an NVML error loses a GPU -------------------------------------------------


def _raising(exc: Exception):
    def call(*args, **kwargs):
        raise exc

    return call


@pytest.mark.parametrize(
    ("call", "fields"),
    [
        ("nvmlDeviceGetTemperature", ("temperature",)),  # hot tier
        ("nvmlDeviceGetPowerManagementLimit", ("power_limit",)),  # slow tier
        ("nvmlDeviceGetEncoderUtilization", ("encoder_utilization",)),
    ],
)
def test_an_exception_that_is_not_an_nvml_error_costs_that_call_alone(call, fields):
    nvml = CapturedNvml(load_capture(H100, "load"))
    setattr(nvml, call, _raising(TypeError("a binding bug")))
    source = NvmlSource(nvml)
    for _ in range(2):
        (gpu,) = source.read(processes=True, slow=True).gpus
        assert gpu.state == schema.GPU_OK
        for field in fields:
            assert getattr(gpu, field) is None
            assert gpu.unsupported[field] == f"{READ_FAILED}: TypeError('a binding bug')"
        assert gpu.utilization == 100 and gpu.memory_used is not None
        assert {p.pid for p in gpu.processes} == {447, 448}


def test_a_process_list_that_raises_costs_the_list_alone():
    nvml = CapturedNvml(load_capture(H100, "load"))
    nvml.nvmlDeviceGetComputeRunningProcesses = _raising(ValueError("bad struct"))
    (gpu,) = NvmlSource(nvml).read().gpus
    assert gpu.state == schema.GPU_OK and gpu.temperature == 69
    assert gpu.unsupported["processes"].startswith(READ_FAILED)


def test_a_mig_device_name_nvml_cannot_decode_keeps_its_slice():
    nvml = CapturedNvml(nvml_with_mig(load_capture(H100, "load")))
    nvml.nvmlDeviceGetName = lambda handle: b"MIG 1g.20gb \xfe".decode()  # raises
    source = NvmlSource(nvml)
    (gpu,) = source.read().gpus
    assert gpu.state == schema.GPU_OK and gpu.name.endswith(REPLACEMENT)
    assert len(gpu.mig_instances) == 4
    assert all(m.name == f"MIG 1g.20gb {REPLACEMENT}" for m in gpu.mig_instances)


def test_bytes_an_older_binding_returns_are_decoded_with_replacement():
    # nvidia-ml-py before 11.5 returned C strings as bytes, undecoded.
    nvml = CapturedNvml(load_capture(H100, "load"))
    nvml.nvmlDeviceGetVbiosVersion = lambda handle: b"96.00.\xff\x00junk"
    (gpu,) = NvmlSource(nvml).read().gpus
    assert gpu.vbios == f"96.00.{REPLACEMENT}" and gpu.state == schema.GPU_OK


# --- property: random bytes in any text field of every real capture ------------------------

_CAPTURES = sorted(
    [
        *(H100 / f"smi_qx_{s}.xml" for s in ("idle", "load")),
        *(H100 / f"smi_csv{v}_{s}.csv" for v in ("", "_nounits") for s in ("idle", "load")),
        *(H100 / f"nvml_{s}.json" for s in ("idle", "load")),
        *(p for p in FIELD.iterdir() if p.suffix in (".xml", ".csv", ".json")),
    ]
)
# Where a format keeps its text values, and the bytes that are its structure there (a comma
# in a CSV cell makes another cell; a quote ends a JSON string): those are not field text.
_FIELDS = {
    ".xml": (re.compile(rb">([^<>\n]+)</"), b""),
    ".csv": (re.compile(rb"(?:^|,)([^,\n]+)", re.M), b",\r\n"),
    # (an NVML capture's "error" holds a pynvml class name: an identifier, like a key)
    ".json": (re.compile(rb'"(?!error")[A-Za-z_]+"\s*:\s*"([^"\\]*)"'), b'"\\'),
}


def _spans(path: Path) -> list[tuple[int, int]]:
    raw = path.read_bytes()
    pattern, _ = _FIELDS[path.suffix]
    spans = [m.span(1) for m in pattern.finditer(raw)]
    first_line = raw.split(b"\n", 1)[0].decode()
    if path.suffix == ".csv" and _is_header(_split(first_line), lambda n: canonical(n) in KNOWN):
        spans = [s for s in spans if s[0] > len(first_line)]  # a header names, holds no data
    return spans


_SPANS = {path: _spans(path) for path in _CAPTURES}


def _figures(data: object, prefix: str = "") -> dict[str, object]:
    """A GPU's figures as path -> value, without its reasons and process rows."""
    if isinstance(data, dict):
        out: dict[str, object] = {}
        for key, value in data.items():
            if key not in ("unsupported", "processes", "migInstances"):
                out.update(_figures(value, f"{prefix}{key}."))
        return out
    return {prefix: data}


def _read(raw: bytes, path: Path) -> schema.GpuReading:
    return read_capture_bytes(raw, origin=path.name)


_ORIGINAL = {path: _read(path.read_bytes(), path) for path in _CAPTURES}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_CAPTURES),
    st.data(),
    st.binary(min_size=1, max_size=16),
)
def test_random_bytes_in_any_text_field_cost_that_field_alone(path, data, junk):
    start, end = data.draw(st.sampled_from(_SPANS[path]), label="field")
    at = data.draw(st.integers(min_value=start, max_value=end), label="offset")
    structure = _FIELDS[path.suffix][1]
    junk = bytes(b for b in junk if b not in structure) or b"\xff"
    raw = path.read_bytes()
    damaged = raw[:at] + junk + raw[at:]
    try:
        reading = _read(damaged, path)
    except ParseError:
        pytest.fail(f"{path.name}: {junk!r} at {at} lost the whole capture")
    original = _ORIGINAL[path]
    assert len(reading.gpus) == len(original.gpus)
    for before, after in zip(original.gpus, reading.gpus, strict=True):
        assert after.state == before.state
        old, new = _figures(to_data(before)), _figures(to_data(after))
        changed = [key for key in old if old[key] != new.get(key)]
        # one element feeds at most a few figures (gpu_temp: the temperature and the two
        # thresholds computed from it; uuid: the uuid and the identity)
        assert len(changed) <= 3, (path.name, junk, changed)
        assert len(after.processes) >= len(before.processes) - 1  # a damaged pid: that row
        assert len(after.mig_instances) == len(before.mig_instances)
