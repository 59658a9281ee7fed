"""nvtop names no vendor: it is told from the device names real nvtop outputs print."""

from __future__ import annotations

import pytest

from monitoring.telemetry.vendor import vendor_from_name


@pytest.mark.parametrize(
    ("name", "vendor"),
    [  # the names real nvtop outputs print (monitoring/captures/field/README.md)
        ("NVIDIA GeForce GTX 1060 6GB", "nvidia"),
        ("Tesla K20m", "nvidia"),
        ("GeForce GTX 1070 Ti", "nvidia"),
        ("AMD Radeon RX 7900 XTX", "amd"),
        ("AMD Radeon 780M Graphics", "amd"),
        ("AMD Ryzen 9 7950X 16-Core Processor", "amd"),
        ("DG2 (Arc A770)", "intel"),
        ("Battlemage G31 (Intel Graphics)", "intel"),
        ("CometLake-H GT2 (UHD Graphics)", "intel"),
        ("Apple M2 Max", "apple"),
        ("Mystery 9000", None),
        (None, None),
    ],
)
def test_the_vendor_is_told_by_the_name(name, vendor):
    assert vendor_from_name(name) == vendor
