"""The garbage collector's settings for a controller once it is up.

A controller's heap is mostly its view (every chassis, port and network it follows) and its flow
state, made at start-up and long-lived; a move or a heartbeat allocates a few thousand short-lived
objects around it. With CPython's defaults (a young collection every 700 allocations, an older one
every 10 of those) every NB event pays for collections that walk objects which will never be garbage:
in the stand-in fleet (benchmarks/standin_cloud.py) ~15-20 % of a lone move's CPU on each chassis.
"""
from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000  # allocations between young collections (CPython's default: 700)


def settle_after_startup() -> None:
    """What start-up made and still holds goes out of the collector's sight (collected once, then
    gc.freeze: never walked again); young collections come less often (collect_young_less_often)."""
    gc.collect()
    gc.freeze()
    collect_young_less_often()


def collect_young_less_often() -> None:
    """Young collections every YOUNG_THRESHOLD allocations (a few MB of young objects at most), the older
    generations' thresholds as they were (a full collection still comes within ~10 M allocations)."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
