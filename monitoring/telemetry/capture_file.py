"""Recognise a saved capture by its content and normalise it with the matching parser.

``collect --from-file`` accepts what users already have lying around: ``nvidia-smi -q -x``
XML, ``--query-gpu`` CSV (with or without header and units), an NVML capture
(``nvml_*.json``) or ``nvtop -s`` JSON. Anything else is a ParseError naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from monitoring.telemetry.errors import ParseError
from monitoring.telemetry.schema import GpuReading

# Larger than any real capture by far; guards against being pointed at a disk image.
MAX_CAPTURE_BYTES = 64 * 1024 * 1024


def detect_format(text: str) -> str:
    """``'smi-xml'``, ``'nvml-json'``, ``'nvtop-json'`` or ``'query-gpu-csv'``; else ParseError."""
    from monitoring.telemetry.smi_csv import looks_like_query_gpu_csv

    head = text.lstrip()[:200]
    if head.startswith("<"):
        return "smi-xml"
    if head.startswith("{"):
        return "nvml-json"
    if head.startswith("["):
        # nvtop -s prints a JSON array; a CSV never starts with "[".
        return "nvtop-json"
    if looks_like_query_gpu_csv(text):
        return "query-gpu-csv"
    raise ParseError(
        "input", "not a recognised capture (nvidia-smi XML or CSV, NVML JSON, nvtop JSON)"
    )


def parse_capture_text(text: str, origin: str) -> GpuReading:
    try:
        kind = detect_format(text)
    except ParseError as exc:
        raise ParseError(origin, exc.detail) from None
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
        data = json.loads(text)
    except ValueError as exc:
        raise ParseError(origin, f"invalid JSON: {exc}") from None
    from monitoring.telemetry.replay import read_nvml_capture

    return read_nvml_capture(data, origin=origin)


def read_capture_file(path: str | Path) -> GpuReading:
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_CAPTURE_BYTES:
        raise ParseError(str(path), f"{size} bytes is too large for a capture")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("utf-16")  # nvidia-smi on Windows redirected by PowerShell
        except UnicodeDecodeError:
            raise ParseError(str(path), "not text (neither UTF-8 nor UTF-16)") from None
    if not text.strip():
        raise ParseError(str(path), "empty file")
    return parse_capture_text(text, origin=str(path))
