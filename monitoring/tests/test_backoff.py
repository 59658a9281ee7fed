"""The one back-off the worker and the GPU sources share."""

from __future__ import annotations

import pytest

from monitoring.telemetry.backoff import Backoff


def test_waits_double_up_to_the_cap_and_start_again_after_a_success():
    backoff = Backoff(1.0, 5.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.delay == 1.0
    assert backoff.next() == 1.0


def test_a_back_off_that_could_not_wait_is_refused():
    with pytest.raises(ValueError, match="first"):
        Backoff(0.0, 10.0)
    with pytest.raises(ValueError, match="max"):
        Backoff(20.0, 10.0)
