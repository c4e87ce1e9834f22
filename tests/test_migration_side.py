"""The one teardown of a migration's side resources (os-vif on both hosts, the switchover helper)."""
import pytest

from dfflow.sandbox import migration_side as side_module
from dfflow.sandbox.migration_side import migration_side


class RecordingOsVif:
    """Stands in for an os-vif agent connection: records that it was opened and closed."""

    def __init__(self, events, fail_on):
        self.events, self.fail_on = events, fail_on

    def __call__(self, sb, chassis):
        if chassis == self.fail_on:
            raise OSError(f"os-vif agent on {chassis} not reachable")
        events = self.events

        class Host:
            def close(self):
                events.append(f"closed {chassis}")
        self.events.append(f"opened {chassis}")
        return Host()


class RecordingSwitchover:
    def __init__(self, events):
        self.events = events

    def cancel(self):
        self.events.append("switchover cancelled")


@pytest.fixture
def events(monkeypatch):
    recorded = []
    monkeypatch.setattr(side_module, "OsVifHost", RecordingOsVif(recorded, fail_on=None))
    return recorded


async def test_a_failed_migration_kills_its_switchover_helper_and_closes_both_osvif_agents(events):
    with pytest.raises(RuntimeError, match="plug failed"):
        async with migration_side(None, "chassis-1", "chassis-2") as side:
            side.switchover = RecordingSwitchover(events)
            raise RuntimeError("plug failed")
    assert events == ["opened chassis-1", "opened chassis-2", "switchover cancelled",
                      "closed chassis-1", "closed chassis-2"]


async def test_a_migration_that_ends_leaves_its_switchover_to_finish_and_closes_both_osvif_agents(events):
    async with migration_side(None, "chassis-1", "chassis-2") as side:
        side.switchover = RecordingSwitchover(events)
    assert events == ["opened chassis-1", "opened chassis-2", "closed chassis-1", "closed chassis-2"]


async def test_a_failure_before_the_switchover_helper_started_closes_both_osvif_agents(events):
    with pytest.raises(RuntimeError):
        async with migration_side(None, "chassis-1", "chassis-2"):
            raise RuntimeError("binding failed")
    assert events == ["opened chassis-1", "opened chassis-2", "closed chassis-1", "closed chassis-2"]


async def test_the_source_osvif_agent_is_closed_when_the_destination_one_cannot_be_reached(monkeypatch):
    recorded = []
    monkeypatch.setattr(side_module, "OsVifHost", RecordingOsVif(recorded, fail_on="chassis-2"))
    with pytest.raises(OSError, match="chassis-2"):
        async with migration_side(None, "chassis-1", "chassis-2"):
            pass
    assert recorded == ["opened chassis-1", "closed chassis-1"]
