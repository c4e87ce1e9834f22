"""Each packet reaches the migrating VM once, whatever step of an `announce` migration each chassis'
flows are at when it crosses them: a packet walked across three simulated chassis (tests/fakeoftable.py)
holding the flows their controllers want -- A (a1's chassis, the sender), B (b1's source, with b2 there
too, so that the network stays on B after b1 left) and C (b1's destination).

While the migration is in flight a packet for b1 exists in one copy: every sender, B's own VMs too,
sends it to C alone, and C's datapath decides: back to B until the VM's announcement on C, to C's VIF
from then on. B delivers what a tunnel brings it for b1 and never forwards it again.
"""
from __future__ import annotations

import pytest

from controller.view import Vif
from dfflow.flows import BROADCAST_MAC, ETH_TYPE_IP, ETH_TYPE_RARP
from dfflow.models import MigrationRecord
from fakeoftable import FakeOFTable
from test_forwarding import (A1, A1_OFPORT, B1, C2, E1, R_NET2_MAC, TUNNEL_A, TUNNEL_B, TUNNEL_C, VNI, chassis,
                             from_external_host_to_fip, ip, ipv4, mac, port, routed_chassis, write)

TUNNELS = {"A": TUNNEL_A, "B": TUNNEL_B, "C": TUNNEL_C}  # every chassis' tunnel to X has ofport TUNNELS[X]
B1_VIF = {"B": 4, "C": 6}
B2_VIF = 7


class Overlay:
    """Three chassis' flows, what their datapaths learned, and packets walked across their tunnels:
    `moving` migrates from `source` to `destination` (its VIF there: vif[chassis])."""

    moving, source, destination, vif = B1, "B", "C", B1_VIF

    def __init__(self, neighbour_on_source: bool = True):
        self.engines = self.chassis(neighbour_on_source)
        self.learned: dict[str, list] = {name: [] for name in self.engines}
        self.delivered_packets: list[dict] = []
        for name in self.engines:
            if name != self.source:
                write(self.engines[name], self.moving)
        self.step("requested")
        self.change(self.destination,
                    lambda c: c.vif_online(Vif(self.moving.id, "tap" + self.moving.id, self.vif[self.destination])))

    def chassis(self, neighbour_on_source: bool) -> dict:
        b_ports = [(B1, B1_VIF["B"])] + ([(port("b2", 3, "B"), B2_VIF)] if neighbour_on_source else [])
        return {"A": chassis("A", (A1, A1_OFPORT)), "B": chassis("B", *b_ports), "C": chassis("C")}

    def change(self, name: str, plan_of) -> None:
        """A controller's change; the keys it writes or deletes replace what the datapath learned."""
        engine = self.engines[name]
        before = {f.key: f for f in engine.desired().values()}
        engine.commit(plan_of(engine))
        after = {f.key: f for f in engine.desired().values()}
        touched = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        self.learned[name] = [f for f in self.learned[name] if f.key not in touched]

    def step(self, state: str, on: str = "ABC") -> None:
        moving = self.moving.replace(migration=MigrationRecord(chassis=self.destination, source=self.source,
                                                               strategy="announce", state=state))
        for name in on:
            self.change(name, lambda e: e.nb_event({"table": moving.table, "action": "update", "id": moving.id,
                                                    "topic": moving.topic, "version": moving.version,
                                                    "object": moving.to_dict()}))

    def unplug_source(self) -> None:
        self.change(self.source, lambda b: b.vif_offline(self.moving.id))

    def forward(self, name: str, in_port: int, packet: dict) -> list:
        table = FakeOFTable(list(self.engines[name].desired().values()), self.learned[name])
        out = table.forward(in_port, **packet)
        self.learned[name] = table.learned
        return out

    def announce(self) -> None:
        """The VM's RARP on its destination VIF: the destination's datapath learns the delivery there."""
        rarp = dict(eth_src=int(self.moving.mac.replace(":", ""), 16), eth_dst=BROADCAST_MAC, eth_type=ETH_TYPE_RARP)
        self.forward(self.destination, self.vif[self.destination], rarp)

    def walk(self, name: str, in_port: int, packet: dict) -> tuple[list[tuple[str, int]], list[str]]:
        """(chassis, VIF) the packet is delivered to, sorted, and the tunnels it crossed ("A>C"), sorted."""
        delivered, crossed, walking = [], [], [(name, in_port, packet)]
        while walking:
            name, in_port, packet = walking.pop()
            for out in self.forward(name, in_port, packet):
                peer = next((p for p, ofport in TUNNELS.items() if ofport == out.port and p != name), None)
                if peer is None:
                    delivered.append((name, out.port))
                    self.delivered_packets.append(out.packet)
                else:  # it enters the peer from the peer's tunnel to us
                    crossed.append(f"{name}>{peer}")
                    assert len(crossed) < 10, f"the packet loops: {crossed}"
                    walking.append((peer, TUNNELS[name], {k: v for k, v in out.packet.items() if k != "in_port"}))
        return sorted(delivered), sorted(crossed)

    def a1_to_b1(self) -> list[tuple[str, int]]:
        """(chassis, VIF) a packet from a1 to b1 is delivered to, across the tunnels."""
        return self.walk("A", A1_OFPORT, ipv4(1, 2))[0]

    def b2_to_b1(self) -> tuple[list[tuple[str, int]], list[str]]:
        """A packet from b2, b1's neighbour on the source."""
        return self.walk("B", B2_VIF, ipv4(3, 2))

    def from_tunnels_at_source(self) -> list[int]:
        """Where B outputs a packet for b1 that any tunnel brings it."""
        return [d.port for peer in "AC" for d in self.forward("B", TUNNELS[peer], dict(tunnel_id=VNI, **ipv4(1, 2)))]


def test_before_the_announcement_a_remote_senders_packet_crosses_the_destination_to_the_source_vif_once():
    delivered, crossed = Overlay().walk("A", A1_OFPORT, ipv4(1, 2))
    assert delivered == [("B", B1_VIF["B"])]
    assert crossed == ["A>C", "C>B"]


def test_before_the_announcement_the_source_sends_its_own_vms_packet_to_the_destination_which_sends_it_back():
    """C got it from B's tunnel: it must go back out of its input port (OFPP_IN_PORT)."""
    assert Overlay().b2_to_b1() == ([("B", B1_VIF["B"])], ["B>C", "C>B"])


def test_after_the_announcement_the_destination_delivers_to_its_own_vif_once():
    overlay = Overlay()
    overlay.announce()
    assert overlay.walk("A", A1_OFPORT, ipv4(1, 2)) == ([("C", B1_VIF["C"])], ["A>C"])
    assert overlay.b2_to_b1() == ([("C", B1_VIF["C"])], ["B>C"])


def test_the_source_never_forwards_a_tunnel_packet_for_the_port():
    overlay = Overlay()
    assert overlay.from_tunnels_at_source() == [B1_VIF["B"], B1_VIF["B"]]
    overlay.announce()
    assert overlay.from_tunnels_at_source() == [B1_VIF["B"], B1_VIF["B"]]
    overlay.step("activated", on="BC")
    assert overlay.from_tunnels_at_source() == []
    overlay.unplug_source()
    overlay.step("switched", on="BC")
    assert overlay.from_tunnels_at_source() == []


@pytest.mark.parametrize("neighbour_on_source", [True, False])
@pytest.mark.parametrize("first", ["activated", "switched"])
def test_a_sender_behind_the_migrations_steps_reaches_the_vm_once_after_it_left_the_source(first, neighbour_on_source):
    """A has not heard yet of the step B and C took: the VM activated on C by its announcement, or
    (no activation yet) the source's unplug. A still sends b1's traffic to C alone."""
    overlay = Overlay(neighbour_on_source)
    overlay.announce()
    if first == "switched":
        overlay.unplug_source()
    overlay.step(first, on="BC")
    assert overlay.a1_to_b1() == [("C", B1_VIF["C"])]
    if first == "activated":  # then the unplug, A still behind
        overlay.unplug_source()
        overlay.step("switched", on="BC")
        assert overlay.a1_to_b1() == [("C", B1_VIF["C"])]


def test_once_the_sender_follows_the_port_goes_to_the_destination_alone():
    overlay = Overlay()
    overlay.announce()
    overlay.step("activated")
    overlay.unplug_source()
    overlay.step("switched")
    assert overlay.a1_to_b1() == [("C", B1_VIF["C"])]


class RoutedOverlay(Overlay):
    """a1 (net1, with a floating IP) migrates from A to B; C hosts c2 (net2, routed by R to net1) and
    e1 (an external host on the floating IP's network). tests/test_forwarding.py has the topology."""

    moving, source, destination, vif = A1, "A", "B", {"A": A1_OFPORT, "B": 6}

    def chassis(self, neighbour_on_source: bool) -> dict:
        return {"A": routed_chassis("A", (A1, A1_OFPORT)), "B": routed_chassis("B"),
                "C": routed_chassis("C", (C2, C2_VIF), (E1, E1_VIF))}


C2_VIF, E1_VIF = 8, 9
ROUTED_FROM_C2 = dict(eth_src=0xfa163e000102, eth_dst=R_NET2_MAC, eth_type=ETH_TYPE_IP, ipv4_src=0x0a010002,
                      ipv4_dst=ip(1), ip_ttl=64)


@pytest.mark.parametrize("sender", ["routed", "floating IP"])
def test_a_routed_or_floating_ip_packet_is_routed_once_where_it_enters_and_delivered_once(sender):
    """c2's packet routed on C to a1, or e1's to a1's floating IP translated where a1 runs: before the
    announcement B sends either back to A (on a1's network, translated once), after it delivers."""
    start = (C2_VIF, ROUTED_FROM_C2) if sender == "routed" else (E1_VIF, from_external_host_to_fip())
    overlay = RoutedOverlay()
    assert overlay.walk("C", *start) == ([("A", A1_OFPORT)], ["B>A", "C>B"])
    overlay.announce()
    assert overlay.walk("C", *start) == ([("B", 6)], ["C>B"])
    for packet in overlay.delivered_packets:
        assert (packet["eth_dst"], packet["ipv4_dst"], packet["ip_ttl"]) == (mac(1), ip(1), 63)
