"""The sync's comparison and repair on a real redis, without neutron-server: what Neutron holds is given as
a `NeutronState`; the NB's followers are real NB-bus subscribers."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dfflow.models import LogicalPort, LogicalSwitch, Subnet
from dfflow.nb.bus import Subscriber
from dfflow.neutron import sync
from dfflow.neutron.nbclient import NbClient
from dfflow.neutron.sync import NeutronState, Wanted
from neutron_fixtures import flush_nb

MAC1, MAC2 = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"


@pytest.fixture
def client(nb_url):
    client = NbClient(nb_url, timeout=10)
    yield client
    client.close()


def switch(sw_id: str) -> Wanted:
    return Wanted(LogicalSwitch, sw_id, "t", {"name": sw_id, "segmentation_id": 100 + int(sw_id[-1])})


def port(port_id: str, sw_id: str, mac: str, **more) -> Wanted:
    return Wanted(LogicalPort, port_id, "t", {"lswitch": sw_id, "mac": mac, "ips": [], **more})


def test_changed_fields_compares_as_the_nb_stores_them():
    stored = LogicalPort(id="p", topic="t", lswitch="n1", mac=MAC1, ips=["10.0.0.5"], name="a")
    assert sync.changed_fields(stored, {"mac": MAC1.upper(), "ips": ["10.0.0.5"], "name": "a"}) == []
    assert sync.changed_fields(stored, {"mac": MAC2, "name": "b", "lswitch": "n1"}) == ["mac", "name"]


def test_log_mode_reports_and_writes_nothing(client):
    client.put(LogicalSwitch, "n9", "t", {"name": "extra", "segmentation_id": 9})
    drift = sync.run(client, lambda: NeutronState.of([switch("n1")]), "log")
    assert ([w.id for w in drift.tables["lswitch"].missing], [o.id for o in drift.tables["lswitch"].extra]) == (
        ["n1"], ["n9"])
    assert [s.id for s in client.list("lswitch")] == ["n9"]
    with pytest.raises(ValueError, match="mode"):
        sync.run(client, lambda: NeutronState.of([]), "fix")


def test_repair_deletes_an_extra_holding_a_mac_first_and_recreates_a_port_found_on_another_switch(client):
    client.put(LogicalSwitch, "n1", "t", {"name": "n1", "segmentation_id": 101})
    client.put(LogicalSwitch, "ghost", "t", {"name": "ghost", "segmentation_id": 77})
    client.put(LogicalPort, "p1", "t", {"lswitch": "ghost", "mac": MAC1})  # drifted: on a switch Neutron lacks
    client.put(LogicalPort, "stale", "t", {"lswitch": "n1", "mac": MAC2})  # extra, holding p2's MAC
    state = NeutronState.of([switch("n1"), port("p1", "n1", MAC1), port("p2", "n1", MAC2),
                             Wanted(Subnet, "s1", "t", {"lswitch": "n1", "cidr": "10.0.0.0/24"})])
    drift = sync.run(client, lambda: state, "repair")
    assert drift.failed == 0, drift.details()
    assert {t: (len(d.missing), len(d.drifted), len(d.extra), d.fixed) for t, d in drift.tables.items()
            if d.count} == {"lswitch": (0, 0, 1, 1), "subnet": (1, 0, 0, 1), "lport": (1, 1, 1, 3)}
    assert sorted(p.id for p in client.list("lport")) == ["p1", "p2"]
    assert client.get("lport", "p1").lswitch == "n1" and client.get("lswitch", "ghost") is None
    assert sync.run(client, lambda: state, "log").count == 0


def test_a_follower_of_a_flushed_nb_gets_the_restored_objects_and_drops_what_vanished(client, nb_url):
    client.put(LogicalSwitch, "n1", "t", {"name": "n1", "segmentation_id": 101})
    for port_id, mac in (("p1", MAC1), ("p2", MAC2)):
        client.put(LogicalPort, port_id, "t", {"lswitch": "n1", "mac": mac})
    events: list[tuple[str, str, str]] = []
    follower_ready = []

    async def follow(stop: asyncio.Event) -> Subscriber:
        sub = Subscriber(nb_url, callback=lambda e: events.append((e["action"], e["table"], e["id"])),
                         reconnect_delay=0.05)
        await sub.start()
        await sub.add_topic("t")
        follower_ready.append(sub)
        await stop.wait()
        await sub.stop()
        return sub

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(follow(stop)), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(events) == 3, "the follower saw the NB")
        flush_nb(nb_url)  # p2 is deleted in Neutron while the NB is lost: no event ever says so
        state = NeutronState.of([switch("n1"), port("p1", "n1", MAC1, name="back")])
        drift = sync.run(client, lambda: state, "repair")
        assert drift.followers_resynced >= 1 and drift.failed == 0
        wait_for(lambda: ("delete", "lport", "p2") in events, "the follower dropped p2 after the resync")
        sub = follower_ready[0]
        assert sub.version_of("lport", "p1") == client.get("lport", "p1").version  # the restored p1 is seen
        client.put(LogicalPort, "p1", "t", {"lswitch": "n1", "mac": MAC1, "name": "later"})
        wait_for(lambda: sub.version_of("lport", "p1") == client.get("lport", "p1").version,
                 "a later change is not taken for stale")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)
