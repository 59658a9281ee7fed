"""Fragments reused from the last tick are the ones a fresh render would give."""

from __future__ import annotations

from dashboard import fragments as frag
from dashboard.present import view
from dashboard.sparklines import Recent
from dashboard.tests.live_helpers import captured, later

LIVE = frag.Status("live", "live", 0.0)


def render(snapshot, recent, memo=None) -> frag.Frame:
    return frag.render_frame(
        view(snapshot, "memo-test"),
        recent,
        host="memo-test",
        version=1,
        status=LIVE,
        alerts=[],
        hosts=[],
        memo=memo,
    )


def test_a_frame_rendered_with_last_ticks_fragments_equals_a_fresh_render():
    load, idle = captured("load", "memo-test"), captured("idle", "memo-test")
    recent = Recent()
    memo: dict = {}
    ticks = [
        later(load, 1),
        later(load, 2),  # nothing but the time changed
        later(load, 3, temperature=(load.gpus[0].temperature or 0) + 5),
        later(idle, 4),  # every GPU figure changed, the processes left
        later(load, 5),
    ]
    for snapshot in ticks:
        recent.add(snapshot)
        assert render(snapshot, recent, memo).fragments == render(snapshot, recent).fragments


def test_an_unchanged_fragment_is_not_rendered_again():
    load = captured("load", "memo-test")
    recent = Recent()
    memo: dict = {}
    first = render(later(load, 1), recent, memo)
    second = render(later(load, 2, temperature=(load.gpus[0].temperature or 0) + 1), recent, memo)
    reused = [fid for fid in first.fragments if first.fragments[fid] is second.fragments[fid]]
    assert "gpu-0-util" in reused and "gpu-0-temp" not in reused
    assert "data-status" not in reused  # it carries the sample's time


def test_an_alert_closed_in_place_is_rendered_again():
    load = captured("load", "memo-test")
    recent = Recent()
    memo: dict = {}
    row = {"key": "k", "severity": "warning", "message": "GPU 0 at 90 °C", "rule": "threshold",
           "metric": "temperature", "started": load.timestamp, "ended": None, "active": True,
           "live": True}  # fmt: skip

    def frame(snapshot):
        return frag.render_frame(
            view(snapshot, "memo-test"), recent, host="memo-test", version=1, status=LIVE,
            alerts=[row], hosts=[], memo=memo,
        )  # fmt: skip

    opened = frame(later(load, 1)).fragments["alerts"]
    row.update(active=False, ended=later(load, 2).timestamp)  # as the hub closes it
    assert frame(later(load, 2)).fragments["alerts"] != opened
