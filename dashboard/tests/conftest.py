"""Fixtures shared by the dashboard's tests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.tests.helpers import gpu_rows, host_rows, make_host


@pytest.fixture
def rig():
    """A host with two GPUs and the last ten minutes of samples (every 5 s)."""
    host, gpus = make_host("rig")
    start = timezone.now() - timedelta(minutes=10)
    gpu_rows(gpus[0], start, 120, step_s=5, utilization=lambda i: i % 100)
    gpu_rows(gpus[1], start, 120, step_s=5, utilization=lambda i: 50)
    host_rows(host, start, 120, step_s=5, cpu_usage=lambda i: 25.0)
    return host, gpus
