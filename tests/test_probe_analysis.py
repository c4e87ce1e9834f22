"""The downtime figures of a probe run: the reply-arrival gap as the headline, the lost-probe window
beside it, duplicates counted."""
from __future__ import annotations

from dfflow.sandbox.probe import analyse

INTERVAL = 0.001


def run(replies: list[tuple[int, float]], sent: int) -> dict:
    """A run whose probe `seq` was sent at seq ms; `replies`: (seq, receive time)."""
    return {"interval": INTERVAL, "sent": sent, "replies": [(seq, seq * INTERVAL, at) for seq, at in replies]}


def test_replies_held_in_a_queue_count_as_downtime_though_none_is_lost():
    # Probes 0..99 answered at once; 100..139 held 40 ms and then all delivered together.
    replies = [(s, s * INTERVAL + 0.0002) for s in range(100)]
    replies += [(s, 0.140 + s * 1e-6) for s in range(100, 140)]
    replies += [(s, s * INTERVAL + 0.0002) for s in range(140, 200)]
    figures = analyse(run(replies, 200))
    assert figures["lost"] == 0 and figures["lost_window_ms"] == 0
    assert 40.0 < figures["downtime_ms"] < 41.0
    assert figures["gap_start"] == replies[99][1] and figures["gap_end"] == replies[100][1]
    assert figures["recovered"] and figures["duplicates"] == 0


def test_lost_probes_give_the_lost_window_beside_the_reply_gap():
    replies = [(s, s * INTERVAL + 0.0002) for s in range(200) if not 50 <= s < 80]
    figures = analyse(run(replies, 200))
    assert figures["lost"] == 30 and figures["lost_window_ms"] == 30.0
    assert abs(figures["downtime_ms"] - 31.0) < 1e-6  # last reply before (49) to first after (80)


def test_duplicate_replies_are_counted_and_do_not_hide_a_gap():
    replies = [(s, s * INTERVAL + 0.0002) for s in range(100)]
    replies += [(s, s * INTERVAL + 0.0004) for s in range(10, 20)]  # every one answered twice
    replies += [(60, 0.0602)]  # a late duplicate does not fill the gap 50..99 -> nothing: 99 answered
    figures = analyse(run(replies, 100))
    assert figures["duplicates"] == 11 and figures["answered"] == 100 and figures["lost"] == 0
    assert figures["downtime_ms"] < 1.1


def test_only_probes_sent_after_the_start_count():
    replies = [(s, s * INTERVAL + 0.0002) for s in range(100) if not 10 <= s < 40]
    figures = analyse(run(replies, 100), after=50 * INTERVAL)
    assert figures["sent"] == 50 and figures["lost"] == 0 and figures["downtime_ms"] < 1.1


def test_a_path_that_never_comes_back_is_not_recovered():
    replies = [(s, s * INTERVAL + 0.0002) for s in range(100)]
    figures = analyse(run(replies, 400))
    assert not figures["recovered"] and figures["downtime_ms"] is None
    assert figures["lost_window_ms"] == 300.0


def test_a_window_counts_only_the_probes_sent_inside_it():
    on_time = [(s, s * INTERVAL + 0.0002) for s in range(300) if not (20 <= s < 70 or 200 <= s < 240)]
    held = [(s, 0.250 + s * 1e-6) for s in range(200, 240)]  # an outage before the window; inside, a stall
    figures = analyse(run(on_time + held, 300), after=100 * INTERVAL, until=280 * INTERVAL)
    assert figures["sent"] == 180 and figures["lost"] == 0 and figures["lost_window_ms"] == 0
    assert 40.0 < figures["downtime_ms"] < 41.5  # nothing arrived from 199 (0.1992) until 240 (0.2402)
