"""Recognise a saved capture by its content and normalise it with the matching parser.

``collect --from-file`` accepts what users already have lying around: ``nvidia-smi -q -x``
XML, ``--query-gpu`` CSV (with or without header and units), an NVML capture
(``nvml_*.json``) or ``nvtop -s`` JSON. A file holding only nvidia-smi's own error (a GPU
fallen off the bus, a driver mismatch …) is a ParseError that relays those words and says
what they mean; anything else unrecognised is a ParseError naming the file. Bytes that are
not UTF-8 cost the characters they stand for, never the file (:mod:`decoding`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from monitoring.telemetry import smi_errors
from monitoring.telemetry.decoding import decode_output
from monitoring.telemetry.errors import TOO_DEEP, ParseError
from monitoring.telemetry.schema import GpuReading

# Larger than any real capture by far; guards against being pointed at a disk image.
MAX_CAPTURE_BYTES = 64 * 1024 * 1024
_XML_START = re.compile(r"<[?!A-Za-z_]")
_JSON_OBJECT_START = re.compile(r'\{\s*("|\})')
_JSON_ARRAY_START = re.compile(r"\[\s*(\{|\])")
# C0 control characters other than tab, LF and CR: text has next to none, binary data many.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def detect_format(text: str) -> str:
    """``'smi-xml'``, ``'nvml-json'``, ``'nvtop-json'`` or ``'query-gpu-csv'``; else ParseError."""
    from monitoring.telemetry.smi_csv import looks_like_compute_apps_csv, looks_like_query_gpu_csv

    head = text.lstrip()[:200]
    # By how each format opens, so a stray byte before a CSV's first cell ("[0, GPU-…")
    # does not make it look like JSON.
    if _XML_START.match(head):
        return "smi-xml"
    if _JSON_OBJECT_START.match(head):
        return "nvml-json"
    if _JSON_ARRAY_START.match(head) or head.rstrip() == "[":
        return "nvtop-json"  # nvtop -s prints a JSON array of objects
    if looks_like_query_gpu_csv(text):
        return "query-gpu-csv"
    if looks_like_compute_apps_csv(text):
        raise ParseError(
            "input",
            "--query-compute-apps output lists processes only, with no GPU figures: save "
            "'nvidia-smi -q -x' or '--query-gpu=... --format=csv' instead",
        )
    raise ParseError(
        "input", "not a recognised capture (nvidia-smi XML or CSV, NVML JSON, nvtop JSON)"
    )


def parse_capture_text(text: str, origin: str) -> GpuReading:
    errors = smi_errors.only_errors(text)
    if errors:
        raise ParseError(origin, smi_errors.summary(errors))
    # nvidia-smi prints a GPU it cannot open as an error line before the others' output.
    errors, rest = smi_errors.split_leading_errors(text)
    reading = _parse(rest if errors else text, origin)
    reading.messages[:0] = [str(error) for error in errors]
    return reading


def _parse(text: str, origin: str) -> GpuReading:
    try:
        kind = detect_format(text)
    except ParseError as exc:
        raise ParseError(origin, exc.detail) from None
    try:
        return _parse_as(kind, text, origin)
    except ParseError:
        # A stray byte before a CSV's first cell can look like another format's opening.
        from monitoring.telemetry.smi_csv import looks_like_query_gpu_csv, parse_query_gpu_csv

        if kind != "query-gpu-csv" and looks_like_query_gpu_csv(text):
            return parse_query_gpu_csv(text, origin=origin)
        raise


def _parse_as(kind: str, text: str, origin: str) -> GpuReading:
    if kind == "smi-xml":
        from monitoring.telemetry.smi_xml import parse_smi_xml

        return parse_smi_xml(text, origin=origin)
    if kind == "query-gpu-csv":
        from monitoring.telemetry.smi_csv import parse_query_gpu_csv

        return parse_query_gpu_csv(text, origin=origin)
    if kind == "nvtop-json":
        from monitoring.telemetry.nvtop import parse_nvtop_snapshot

        return parse_nvtop_snapshot(text, origin=origin)
    try:
        data = json.loads(text, strict=False)  # a control character costs its string only
    except ValueError as exc:
        raise ParseError(origin, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ParseError(origin, f"invalid JSON: {TOO_DEEP}") from None
    from monitoring.telemetry.replay import read_nvml_capture

    return read_nvml_capture(data, origin=origin)


def read_capture_file(path: str | Path) -> GpuReading:
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_CAPTURE_BYTES:
        raise ParseError(str(path), f"{size} bytes is too large for a capture")
    return read_capture_bytes(path.read_bytes(), origin=str(path))


def read_capture_bytes(raw: bytes, origin: str) -> GpuReading:
    """A capture's bytes -> GpuReading, whatever their encoding. Raises ParseError only."""
    text, replaced = decode_output(raw)
    if not text.strip():
        raise ParseError(origin, "empty file")
    if replaced + len(_CONTROL.findall(text)) > max(len(text) // 10, 16):
        raise ParseError(origin, "not text (binary data)")
    reading = parse_capture_text(text, origin=origin)
    if replaced:
        reading.messages.append(
            f"{Path(origin).name}: {replaced} character(s) were not valid text (not UTF-8, "
            "e.g. a process name in a Windows code page) and are shown as \ufffd"
        )
    return reading
