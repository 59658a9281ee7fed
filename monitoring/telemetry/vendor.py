"""Which company made a GPU, from its name: nvtop lists every vendor's GPUs but says none.

nvtop reads NVIDIA, AMD, Intel, Apple, Qualcomm (Adreno), Arm (Mali), Broadcom (VideoCore),
Huawei (Ascend) and others through one JSON shape without a vendor key, and the names it
prints are the drivers' own ("AMD Radeon RX 7900 XTX", "DG2 (Arc A770)", "CometLake-H GT2
(UHD Graphics)", "Apple M2 Max", and for an AMD APU the CPU's name). The patterns below
come from such real outputs (monitoring/captures/field/README.md). A name none of them
matches gives no vendor rather than a guess.
"""

from __future__ import annotations

import re

NVIDIA = "nvidia"
AMD = "amd"
INTEL = "intel"
APPLE = "apple"
QUALCOMM = "qualcomm"
ARM = "arm"
BROADCOM = "broadcom"
HUAWEI = "huawei"
UNKNOWN_REASON = "nvtop does not say who made this GPU, and its name does not tell"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (vendor, re.compile(pattern, re.IGNORECASE))
    for vendor, pattern in (
        (NVIDIA, r"\bnvidia\b|\bgeforce\b|\bquadro\b|\btesla\b|\btitan\b|\bjetson\b|\btegra\b"),
        (AMD, r"\bamd\b|\bradeon\b|\bati\b|\binstinct\b|\bryzen\b|\bfirepro\b"),
        (
            INTEL,
            r"\bintel\b|\barc\b|\buhd graphics\b|\biris\b|\bbattlemage\b|\balchemist\b"
            r"|\bdg[12]\b|\b(?:alder|amber|arrow|cannon|coffee|comet|elkhart|gemini|ice"
            r"|jasper|kaby|lunar|meteor|panther|raptor|rocket|tiger|whiskey) ?lake",
        ),
        (APPLE, r"\bapple\b"),
        (QUALCOMM, r"\badreno\b|\bqualcomm\b|\bsnapdragon\b"),
        (ARM, r"\bmali\b"),
        (BROADCOM, r"\bv3d\b|\bvideocore\b|\bbroadcom\b"),
        (HUAWEI, r"\bascend\b|\bhuawei\b"),
    )
)


def vendor_from_name(name: str | None) -> str | None:
    """``"AMD Radeon RX 7900 XTX"`` -> ``"amd"``; None when the name does not tell."""
    if not name:
        return None
    for vendor, pattern in _PATTERNS:
        if pattern.search(name):
            return vendor
    return None
