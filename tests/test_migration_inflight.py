"""A transition the destination applied to its own flows ahead of its NB write stays applied while an
older or concurrent NB version of the port (Nova's own write, committed before the record's) comes in,
until the write settles; and a transition told by another chassis' migration event, until the NB shows
it (no Redis or OVS needed: the NB write is held by the test)."""
import asyncio
import json
import time
from types import SimpleNamespace

import pytest

from controller.apps.dnat import DnatApp
from controller.apps.l2 import L2App
from controller.apps.l3 import L3App
from controller.engine import Engine
from controller.migration import Event, transition
from controller.migrator import KNOWN_HOLD, TOLD_HOLD, Migrator
from controller.view import Vif
from dfflow.errors import Conflict
from dfflow.flows import BROADCAST_MAC, ETH_TYPE_IP, ETH_TYPE_RARP
from dfflow.models import LogicalPort, LogicalSwitch, Subnet
from fakeoftable import FakeOFTable

VNI, TUNNEL_B, TUNNEL_C, A1_OFPORT, B1_OFPORT_HERE = 101, 10, 11, 5, 6


class HeldNb:
    """NbApi.modify as the migrator uses it, over ports the test writes; the write waits for `go`."""

    def __init__(self):
        self.redis, self.keys = None, SimpleNamespace(prefix="t")
        self.ports: dict[str, LogicalPort] = {}
        self.go = asyncio.Event()
        self.fail: Exception | None = None
        self.rev = 100

    def store(self, port):
        self.rev += 1
        self.ports[port.id] = port.replace(version=self.rev)
        return self.ports[port.id]

    async def modify(self, table, obj_id, change):
        await self.go.wait()
        if self.fail is not None:
            raise self.fail
        current = self.ports[obj_id]
        wanted = change(current)
        return current if wanted is None else self.store(wanted)


class TurnNb(HeldNb):
    """Each write waits for its own turn: the test decides which of two concurrent writes lands first."""

    def __init__(self):
        super().__init__()
        self.turns: list[asyncio.Event] = []

    async def modify(self, table, obj_id, change):
        turn = asyncio.Event()
        self.turns.append(turn)
        if not self.go.is_set():  # `go`: every write from now on takes its turn at once
            await turn.wait()
        current = self.ports[obj_id]
        wanted = change(current)
        return current if wanted is None else self.store(wanted)


def event(obj):
    return {"table": obj.table, "action": "update", "id": obj.id, "topic": obj.topic,
            "version": obj.version, "object": obj.to_dict()}


def destination_a(nb=None):
    """Chassis A, hosting a1, to which port b1 (bound on B) is migrating with `announce`: its VIF is
    plugged on A."""
    engine = Engine("A", [L2App(), L3App(), DnatApp()])
    engine.commit(engine.tunnels_changed({"B": TUNNEL_B, "C": TUNNEL_C}))
    nb = nb or HeldNb()
    migrator = Migrator("A", engine, nb, engine.commit, strategy="announce")
    migrator.timelines = SimpleNamespace(record=lambda *args: asyncio.sleep(0))  # no Redis here
    for obj in (LogicalSwitch(id="net1", topic="t", segmentation_id=VNI),
                Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/24"),
                nb.store(LogicalPort(id="b1", topic="t", lswitch="net1", mac="fa:16:3e:00:00:02",
                                     ips=["10.0.0.2"], binding_chassis="B")),
                nb.store(LogicalPort(id="a1", topic="t", lswitch="net1", mac="fa:16:3e:00:00:01",
                                     ips=["10.0.0.1"], binding_chassis="A"))):
        engine.commit(engine.nb_event(event(obj)))
    engine.commit(engine.vif_online(Vif("a1", "tapa1", A1_OFPORT)))
    engine.commit(engine.vif_online(Vif("b1", "tapb1", B1_OFPORT_HERE)))
    return engine, nb, migrator


def where_a_packet_from_c_goes(engine, announced=False):
    """A packet for b1 from the entry chassis C, arriving on its tunnel (`announced`: after b1's VM sent
    its RARP on A's VIF, which on a pending destination opens delivery here in the datapath)."""
    table = FakeOFTable.of(engine.desired().values())
    if announced:
        table.forward(B1_OFPORT_HERE, eth_src=0xfa163e000002, eth_dst=BROADCAST_MAC, eth_type=ETH_TYPE_RARP)
    packet = dict(eth_src=0xfa163e000001, eth_dst=0xfa163e000002, eth_type=ETH_TYPE_IP,
                  ipv4_src=0x0a000001, ipv4_dst=0x0a000002, ip_ttl=64, tunnel_id=VNI)
    return table.ports(TUNNEL_C, **packet)


def gated(engine):
    """A is b1's pending destination: what comes for b1 goes on to the source until the VM announces
    itself here, and is delivered here from then on."""
    return where_a_packet_from_c_goes(engine) == [TUNNEL_B] and where_a_packet_from_c_goes(engine, True) == [
        B1_OFPORT_HERE]


def on_b(engine):
    """b1 lives on B for A, announcement or not."""
    return where_a_packet_from_c_goes(engine) == [TUNNEL_B] and where_a_packet_from_c_goes(engine, True) == [
        TUNNEL_B]


def novas_write(nb):
    """binding:profile.migrating_to, committed before the record's compare-and-set write."""
    port = nb.ports["b1"]
    return nb.store(port.replace(binding_profile={**port.binding_profile, "migrating_to": "A"}))


async def plugged_and_applied_here(migrator):
    run = asyncio.create_task(migrator.vif_online("b1"))
    for _ in range(3):
        await asyncio.sleep(0)
    return run


def test_before_the_migration_a_packet_from_the_entry_chassis_is_forwarded_to_the_source():
    engine, _, _ = destination_a()
    assert on_b(engine)  # the port lives on B: the reason to gate


async def test_an_nb_version_without_the_record_does_not_undo_the_pending_destination_while_its_write_is_in_flight():
    engine, nb, migrator = destination_a()
    run = await plugged_and_applied_here(migrator)
    assert engine.view.is_pending(engine.view.port("b1"))
    assert gated(engine)  # until the VM announces itself here

    engine.commit(engine.nb_event(event(novas_write(nb))))  # Nova's write: no record yet
    assert engine.view.port("b1").migrating_to == "A"  # Nova's change is taken...
    assert gated(engine)  # ...with the record laid on it: still gated
    assert migrator.stats["in_flight_reapplied"] == 1

    nb.go.set()
    await run
    record = nb.ports["b1"].migration
    assert record.state == "requested" and record.prepared  # the CAS built on Nova's write
    assert migrator.stats["requested"] == 1
    assert gated(engine)  # its event has not come: still laid on
    engine.commit(engine.nb_event(event(nb.ports["b1"])))  # the record's own event
    assert engine.view.port("b1").migration == record
    assert gated(engine)
    assert not migrator._overlays

    # settled: a later NB version is the NB's alone (here: the migration cleared by someone else)
    engine.commit(engine.nb_event(event(nb.store(nb.ports["b1"].replace(migration=None)))))
    assert engine.view.port("b1").migration is None
    assert on_b(engine)
    assert migrator.stats["in_flight_reapplied"] == 1


async def test_a_write_that_returned_stays_laid_on_until_its_own_nb_event_comes():
    engine, nb, migrator = destination_a()
    run = await plugged_and_applied_here(migrator)
    nb.go.set()
    await run
    assert "b1" in migrator._overlays  # an event published before the record's may still come
    engine.commit(engine.nb_event(event(nb.ports["b1"])))
    assert not migrator._overlays and migrator.stats["requested"] == 1
    assert "in_flight_reapplied" not in migrator.stats


async def test_a_failed_write_drops_what_was_applied_here_and_takes_the_nbs_version():
    engine, nb, migrator = destination_a()
    run = await plugged_and_applied_here(migrator)
    engine.commit(engine.nb_event(event(novas_write(nb))))
    assert gated(engine)
    nb.fail = Conflict("port b1 kept changing")
    nb.go.set()
    with pytest.raises(Conflict):
        await run
    assert engine.view.port("b1").migration is None and engine.view.port("b1").migrating_to == "A"
    assert on_b(engine)
    assert migrator.stats["in_flight_dropped"] == 1 and not migrator._overlays


async def test_a_write_with_nothing_left_to_store_takes_the_version_it_found():
    engine, nb, migrator = destination_a()
    run = await plugged_and_applied_here(migrator)
    nb.store(nb.ports["b1"].replace(binding_chassis="A"))  # bound here meanwhile: no migration to record
    nb.go.set()
    await run
    assert "requested" not in migrator.stats
    assert engine.view.port("b1").binding_chassis == "A" and engine.view.port("b1").migration is None
    assert migrator.stats["in_flight_dropped"] == 1
    engine.commit(engine.nb_event(event(nb.ports["b1"])))  # the events caught up with what the write found
    assert not migrator._overlays


def what_b1_sends_reaches(engine):
    """A packet the VM behind b1's VIF on A sends to a1."""
    packet = dict(eth_src=0xfa163e000002, eth_dst=0xfa163e000001, eth_type=ETH_TYPE_IP,
                  ipv4_src=0x0a000002, ipv4_dst=0x0a000001, ip_ttl=64)
    return FakeOFTable.of(engine.desired().values()).ports(B1_OFPORT_HERE, **packet)


async def announced_twice_and_written_by_the_second():
    """b1 migrates to A (the record is in A's view: pending); Nova binds it to A, which A's NB events
    have not shown yet; the VM's RARP and GARP come in as two packet-ins: the first is applied here
    at once, the second's write lands first, and the first's write then finds nothing to store."""
    engine, nb, migrator = destination_a(TurnNb())
    requested = nb.store(transition(nb.ports["b1"], Event.DEST_PLUGGED, "A", now=100.0, strategy="announce").port)
    engine.commit(engine.nb_event(event(requested)))
    assert engine.view.is_pending(engine.view.port("b1")) and gated(engine)
    novas_binding = nb.store(requested.replace(binding_chassis="A"))  # its event comes late
    rarp = asyncio.create_task(migrator.announced(B1_OFPORT_HERE))
    garp = asyncio.create_task(migrator.announced(B1_OFPORT_HERE))
    for _ in range(3):
        await asyncio.sleep(0)
    # (an announcement is told to the other chassis by the NB write alone: no migration event published)
    assert len(nb.turns) == 2 and "event_publish_errors" not in migrator.stats
    nb.turns[1].set()
    await garp
    nb.turns[0].set()
    await rarp
    assert nb.ports["b1"].migration.state == "activated" and migrator.stats["in_flight_dropped"] == 1
    return engine, nb, migrator, novas_binding


async def test_an_activated_destination_keeps_its_vm_reachable_over_older_nb_events_arriving_late():
    """Host evacuation regression (25 VMs): the NB events of a port ran seconds behind its writes, and
    Nova's binding (an older version, record still requested) put the VM back behind the pending gate
    -- its traffic dropped both ways until the record's own events came."""
    engine, nb, migrator, novas_binding = await announced_twice_and_written_by_the_second()
    assert where_a_packet_from_c_goes(engine) == [B1_OFPORT_HERE] and what_b1_sends_reaches(engine) == [A1_OFPORT]
    engine.commit(engine.nb_event(event(novas_binding)))  # late: older than what the write found
    assert engine.view.port("b1").migration.state == "activated"
    assert where_a_packet_from_c_goes(engine) == [B1_OFPORT_HERE] and what_b1_sends_reaches(engine) == [A1_OFPORT]
    assert migrator.stats["stale_nb_versions"] == 1
    activated = nb.ports["b1"]
    done = nb.store(activated.replace(migration=None))  # step 3 ends the migration
    engine.commit(engine.nb_event(event(activated)))  # the events caught up: the NB's versions alone again
    assert not migrator._overlays
    engine.commit(engine.nb_event(event(done)))
    assert not migrator._overlays and engine.view.port("b1").migration is None
    assert where_a_packet_from_c_goes(engine) == [B1_OFPORT_HERE] and what_b1_sends_reaches(engine) == [A1_OFPORT]


async def test_a_version_a_write_found_stops_hiding_older_nb_events_after_a_while():
    engine, nb, migrator, novas_binding = await announced_twice_and_written_by_the_second()
    nb.go.set()
    await migrator.housekeeping(now=time.time() + KNOWN_HOLD / 2)  # (it also ends the migration: step 3)
    assert migrator._overlays["b1"].known is not None
    await migrator.housekeeping(now=time.time() + KNOWN_HOLD * 2)
    assert not migrator._overlays
    engine.commit(engine.nb_event(event(novas_binding)))  # an NB db restored older: its version stands
    assert engine.view.port("b1").migration.state == "requested"


def requested_on_a():
    """Chassis A, b1's pending `announce` destination (the record in its view, its gates closed)."""
    engine, nb, migrator = destination_a()
    requested = transition(nb.ports["b1"], Event.DEST_PLUGGED, "A", now=100.0, strategy="announce").port
    engine.commit(engine.nb_event(event(nb.store(requested))))
    assert gated(engine)
    return engine, nb, migrator


def unplugged_on_b(port):
    return json.dumps({"port": "b1", "event": Event.SOURCE_UNPLUGGED.value, "chassis": "B", "now": 101.0,
                       "migration": port.migration.id, "ts": 101.0}).encode()


def test_a_destination_told_of_the_sources_unplug_keeps_it_over_an_nb_version_written_before_it():
    engine, nb, migrator = requested_on_a()
    migrator._on_migration_event(unplugged_on_b(nb.ports["b1"]), received=101.002)
    assert where_a_packet_from_c_goes(engine) == [B1_OFPORT_HERE]  # switched: the VM runs here
    engine.commit(engine.nb_event(event(novas_write(nb))))  # written before B's record of the unplug
    assert where_a_packet_from_c_goes(engine) == [B1_OFPORT_HERE]
    assert migrator.stats["in_flight_reapplied"] == 1
    switched = nb.store(transition(nb.ports["b1"], Event.SOURCE_UNPLUGGED, "B", now=101.0).port)
    engine.commit(engine.nb_event(event(switched)))  # B's write: the NB shows it now
    assert not migrator._overlays and where_a_packet_from_c_goes(engine) == [B1_OFPORT_HERE]


async def test_a_told_transition_the_nb_never_shows_is_dropped_after_a_while():
    engine, nb, migrator = requested_on_a()
    migrator._on_migration_event(unplugged_on_b(nb.ports["b1"]), received=101.002)
    await migrator.housekeeping(now=101.0 + TOLD_HOLD / 2)
    assert where_a_packet_from_c_goes(engine) == [B1_OFPORT_HERE]
    await migrator.housekeeping(now=101.0 + TOLD_HOLD * 2)
    assert engine.view.port("b1").migration.state == "requested"
    assert gated(engine)
    assert migrator.stats["in_flight_dropped"] == 1 and not migrator._overlays
