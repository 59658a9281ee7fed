"""Bytes a GPU tool printed -> text, where one bad byte costs one character, not the reading.

Real outputs are not always UTF-8: Windows ``nvidia-smi`` writes process names in the
console's code page (GBK on a Chinese locale), a run killed mid-write leaves stray bytes,
PowerShell redirects save UTF-16, and NVML on some WSL drivers hands back a GPU name that is
not UTF-8. Everything here degrades to U+FFFD (the replacement character) in the field that
holds the bad bytes, so every other figure is still read.
"""

from __future__ import annotations

import codecs
import re

REPLACEMENT = "\ufffd"

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Characters XML 1.0 forbids outright (C0 controls but tab, LF and CR; lone surrogates;
# U+FFFE/U+FFFF): one of them anywhere makes the whole document unreadable to a parser.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def decode_output(raw: bytes) -> tuple[str, int]:
    """Text of a saved or piped tool output, and how many characters had to be replaced.

    A byte-order mark decides the encoding; UTF-16 without one is recognised by its NUL
    bytes (ASCII text in UTF-16 has one in every other byte, which UTF-8 text never has);
    anything else is UTF-8 with each undecodable byte replaced by U+FFFD.
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            text = raw[len(bom) :].decode(encoding, "replace")
            return text, text.count(REPLACEMENT)
    utf16 = _utf16_without_bom(raw)
    if utf16 is not None:
        text = raw.decode(utf16, "replace")
        return text, text.count(REPLACEMENT)
    text = raw.decode("utf-8", "replace")
    return text, text.count(REPLACEMENT) - raw.count(REPLACEMENT.encode())


def _utf16_without_bom(raw: bytes) -> str | None:
    sample = raw[:512]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) >= len(odd) * 0.9 and even.count(0) == 0:
        return "utf-16-le"
    if even.count(0) >= len(even) * 0.9 and odd.count(0) == 0:
        return "utf-16-be"
    return None


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 forbids replaced by U+FFFD (same length)."""
    return _NOT_XML.sub(REPLACEMENT, text)


def lenient_text(value: object) -> str:
    """A string field from a driver or library: bytes decoded with replacement, NULs cut."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value)


def text_from_decode_error(exc: UnicodeDecodeError) -> str:
    """What a library was decoding when it raised: the same bytes, with replacement.

    nvidia-ml-py decodes C strings with strict UTF-8 inside the call, so a GPU name that is
    not UTF-8 arrives as this exception; the bytes it held are still in ``exc.object``.
    """
    return lenient_text(exc.object)
