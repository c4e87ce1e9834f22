"""The controller makes its garbage collections visible: a full one stops the loop for a while."""
import gc

from controller import collector
from controller.status import GcPauses


def test_every_garbage_collection_is_counted_with_its_pause():
    pauses = GcPauses()
    pauses.install()
    try:
        gc.collect()
        status = pauses.status()
    finally:
        pauses.uninstall()
    assert status["collections"]["2"] >= 1
    when, generation, pause_ms = status["recent"][-1]
    assert generation == 2 and pause_ms >= 0 and when > 0
    gc.collect()
    assert pauses.status()["collections"]["2"] == status["collections"]["2"]  # uninstalled: no longer counted


def test_what_start_up_made_is_out_of_the_collections_and_young_ones_come_less_often():
    threshold = gc.get_threshold()
    made_at_start_up = [[] for _ in range(10)]  # containers: tracked by the collector
    try:
        collector.settle_after_startup()
        made_later = []
        tracked = {id(o) for o in gc.get_objects()}
        assert gc.get_freeze_count() >= len(made_at_start_up)
        assert not any(id(o) in tracked for o in made_at_start_up)
        assert id(made_later) in tracked
        assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, threshold[1], threshold[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
