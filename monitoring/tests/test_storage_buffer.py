"""The bounded queues between sampling and the database (plain Python, no database)."""

from __future__ import annotations

import logging
import threading

import pytest

from monitoring.storage.buffer import DropOldestBuffer, KeyedQueue, RecordQueue


def test_it_keeps_items_oldest_first():
    buffer = DropOldestBuffer[int](5)
    for i in range(3):
        assert buffer.append(i) == 0
    assert len(buffer) == 3
    assert buffer.take(2) == [0, 1]
    assert buffer.take() == [2]
    assert buffer.take() == []


def test_it_drops_the_oldest_when_full_and_counts_them():
    buffer = DropOldestBuffer[int](10)
    dropped = [buffer.append(i) for i in range(25)]
    assert sum(dropped) == 15
    assert buffer.dropped_total == 15
    assert buffer.take() == list(range(15, 25))
    assert buffer.take_dropped() == 15
    assert buffer.take_dropped() == 0  # each loss is reported once
    assert buffer.dropped_total == 15


def test_it_puts_a_failed_batch_back_in_front():
    buffer = DropOldestBuffer[int](10)
    for i in range(6):
        buffer.append(i)
    batch = buffer.take(4)
    buffer.append(6)  # arrives while the batch is being written
    assert buffer.put_back(batch) == 0
    assert buffer.take() == [0, 1, 2, 3, 4, 5, 6]


def test_it_drops_the_oldest_of_a_put_back_batch_when_the_buffer_filled_meanwhile():
    buffer = DropOldestBuffer[int](5)
    for i in range(5):
        buffer.append(i)
    batch = buffer.take(3)  # [0, 1, 2] in flight, [3, 4] queued
    for i in range(5, 8):
        buffer.append(i)  # [3..7]: full again
    assert buffer.put_back(batch) == 3
    assert buffer.take() == [3, 4, 5, 6, 7]
    assert buffer.dropped_total == 3


def test_it_counts_items_given_up_on():
    buffer = DropOldestBuffer[str](3)
    buffer.append("bad")
    assert buffer.take(1) == ["bad"]
    buffer.drop(1)
    assert buffer.dropped_total == 1
    assert buffer.take_dropped() == 1


def test_it_refuses_a_zero_capacity():
    with pytest.raises(ValueError, match="at least 1"):
        DropOldestBuffer(0)


def test_it_loses_nothing_under_concurrent_appends():
    buffer = DropOldestBuffer[int](100_000)
    threads = [
        threading.Thread(
            target=lambda base=t: [buffer.append(base * 10_000 + i) for i in range(5000)]
        )
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    taken = []
    while any(t.is_alive() for t in threads):
        taken += buffer.take(100)
    for thread in threads:
        thread.join()
    taken += buffer.take()
    assert len(taken) == 20_000
    assert len(set(taken)) == 20_000


def test_it_logs_every_event_it_has_to_drop(caplog):
    queue = RecordQueue[str](2, "events")
    with caplog.at_level(logging.ERROR, logger="monitoring.storage.buffer"):
        for name in ("a", "b", "c"):
            queue.append(name)
    assert queue.take() == ["b", "c"]
    assert queue.dropped_total == 1
    assert "dropped the 1 oldest" in caplog.text


def test_it_keeps_only_the_latest_state_of_an_alert():
    queue = KeyedQueue[str](10)
    queue.put("gpu0-temp", "warning")
    queue.put("gpu1-temp", "warning")
    queue.put("gpu0-temp", "critical")
    assert queue.take() == [("gpu0-temp", "critical"), ("gpu1-temp", "warning")]
    assert len(queue) == 0


def test_it_lets_a_newer_alert_state_win_over_a_put_back_one():
    queue = KeyedQueue[str](10)
    queue.put("a", "open")
    queue.put("b", "open")
    taken = queue.take()
    queue.put("a", "cleared")  # the evaluator moved on while the write failed
    queue.put_back(taken)
    assert dict(queue.take()) == {"a": "cleared", "b": "open"}


def test_it_bounds_the_alert_queue_and_logs_the_drop(caplog):
    queue = KeyedQueue[int](3, "alert changes")
    with caplog.at_level(logging.ERROR, logger="monitoring.storage.buffer"):
        for i in range(5):
            queue.put(f"k{i}", i)
    assert [key for key, _ in queue.take()] == ["k2", "k3", "k4"]
    assert queue.dropped_total == 2
    assert "dropped the oldest" in caplog.text
