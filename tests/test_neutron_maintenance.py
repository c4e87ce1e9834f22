"""neutron-server's maintenance task on a real redis, without neutron-server: the sync under a lock shared by
every process, dirty marks repaired and then forgotten, the periodic sync. Neutron is given as a NeutronState."""
from __future__ import annotations

import time

import pytest

from dfflow.models import LogicalSwitch
from dfflow.neutron import maintenance
from dfflow.neutron.maintenance import DirtyMarks, Maintenance
from dfflow.neutron.nbclient import NbClient
from dfflow.neutron.sync import NeutronState, Wanted

NET = Wanted(LogicalSwitch, "n1", "t", {"name": "net", "segmentation_id": 5})


@pytest.fixture
def client(nb_url):
    client = NbClient(nb_url, timeout=10)
    yield client
    client.close()


def neutron_with(*wanted: Wanted):
    return lambda: NeutronState.of(wanted)


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def test_a_process_finding_the_sync_lock_held_skips_and_the_holder_syncs(client):
    first = Maintenance(client, neutron_with(NET), DirtyMarks(client))
    second = Maintenance(client, neutron_with(NET), DirtyMarks(client))
    client.run(lambda api: api.redis.set(maintenance.lock_key("dfflow"), "another-server"))
    assert second.sync_once("test") is None and second.stats["skipped_locked"] == 1
    assert client.get("lswitch", "n1") is None
    client.run(lambda api: api.redis.delete(maintenance.lock_key("dfflow")))
    drift = first.sync_once("test")
    assert drift is not None and drift.tables["lswitch"].fixed == 1 and client.get("lswitch", "n1") is not None
    assert client.run(lambda api: api.redis.get(maintenance.lock_key("dfflow"))) is None  # released


def test_failed_writes_are_counted_marked_and_repaired_then_forgotten(client):
    marks = DirtyMarks(client)
    with pytest.raises(TimeoutError):
        with maintenance.marked_on_failure(marks, "lswitch", "n1", "update_network"):
            raise TimeoutError("the NB did not answer")
    assert marks.pending() == {"lswitch/n1"} and maintenance.recorded_failures(client) == {"update_network": 1}
    task = Maintenance(client, neutron_with(NET), marks, on_startup=False, check_every=0.05)
    task.start()
    try:
        wait_for(lambda: client.get("lswitch", "n1") is not None and not marks.pending(), "n1 repaired")
    finally:
        task.stop()
    assert task.stats["syncs"] == 1


def test_a_mark_stays_while_its_repair_fails(client):
    marks = DirtyMarks(client)
    client.put(LogicalSwitch, "n1", "t", {"name": "net", "segmentation_id": 5})
    marks.mark("lswitch", "n1", "update_network")
    refused = Wanted(LogicalSwitch, "n1", "t", {"name": "net", "segmentation_id": 5, "mtu": 10})  # mtu too small
    task = Maintenance(client, neutron_with(refused), marks, on_startup=False)
    task._repair_dirty()
    assert task.last is not None and task.last.failed == 1 and marks.pending() == {"lswitch/n1"}


def test_the_periodic_sync_restores_what_was_deleted_behind_neutrons_back(client):
    task = Maintenance(client, neutron_with(NET), DirtyMarks(client), on_startup=True, interval=0.2,
                       check_every=0.05)
    task.start()
    try:
        wait_for(lambda: client.get("lswitch", "n1") is not None, "the start-up sync")
        client.delete("lswitch", "n1")
        wait_for(lambda: client.get("lswitch", "n1") is not None, "the periodic sync")
    finally:
        task.stop()
    assert task.stats["syncs"] >= 2 and task.stats["errors"] == 0
