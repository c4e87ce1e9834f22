"""The controller makes its garbage collections visible: a full one stops the loop for a while."""
import gc

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
