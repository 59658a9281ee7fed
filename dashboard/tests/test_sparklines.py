"""A sparkline is drawn in whole units with relative steps: it is re-sent in live frames."""

from __future__ import annotations

from dashboard.sparklines import HEIGHT, WIDTH, Ring, draw


def ring_of(values: list[float | None]) -> Ring:
    ring = Ring()
    for bucket, value in enumerate([*values, None]):  # the last bucket closes the one before
        ring.add(bucket, value)
    return ring


def test_the_line_steps_two_units_a_bucket_and_jumps_over_a_gap():
    spark = draw(ring_of([0, 50, 100, None, 100]), 5, "GPU 0 utilization", "%", 100.0, "util")
    # the window ends with these buckets: x 110 to 118; 0 % at the bottom, 100 % at the top
    assert spark.line == "M110 27l2-13 2-13 4 0"
    assert spark.area == "M110 27l2-13 2-13 4 0V28H110Z"
    assert (WIDTH, HEIGHT) == (118, 28)
    assert "low 0 %, high 100 %, latest 100 %" in spark.label


def test_a_series_without_a_fixed_top_is_scaled_to_its_own_high_and_clamped():
    spark = draw(ring_of([300, 700, -5]), 3, "GPU 0 power", "W", None, "power")
    assert (
        spark.line == "M114 17l2-14 2 24"
    )  # 700 W at 1/1.1 of the height (y 3), -5 W on the floor


def test_an_empty_window_says_so_instead_of_drawing():
    spark = draw(None, 5, "host CPU", "%", 100.0, "cpu")
    assert spark.empty and spark.line == "" and "no data in the last 5 minutes" in spark.label
