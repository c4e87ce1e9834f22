"""Each packet reaches the migrating VM once, whatever step of an `announce` migration each chassis'
flows are at when it crosses them: a packet walked across three simulated chassis (tests/fakeoftable.py)
holding the flows their controllers want -- A (a1's chassis, the sender), B (b1's source, with b2 there
too, so that the network stays on B after b1 left) and C (b1's destination).

A sender that has not heard of the migration's next step yet still copies b1's traffic to C and sends
the original to B. Once the VM has left B -- activated on C by its announcement, or the source's
unplug coming first -- B must drop what tunnels bring it for b1, or C's VIF gets the packet twice: A's
copy and B's forward.
"""
from __future__ import annotations

import pytest

from controller.view import Vif
from dfflow.flows import BROADCAST_MAC, ETH_TYPE_RARP
from dfflow.models import MigrationRecord
from fakeoftable import FakeOFTable
from test_forwarding import A1, A1_OFPORT, B1, TUNNEL_A, TUNNEL_B, TUNNEL_C, chassis, ipv4, mac, port, write

TUNNELS = {"A": TUNNEL_A, "B": TUNNEL_B, "C": TUNNEL_C}  # every chassis' tunnel to X has ofport TUNNELS[X]
B1_VIF = {"B": 4, "C": 6}
B2_VIF = 7


class Overlay:
    """Three chassis' flows, what their datapaths learned, and packets walked across their tunnels."""

    def __init__(self, neighbour_on_source: bool = True):
        b_ports = [(B1, B1_VIF["B"])] + ([(port("b2", 3, "B"), B2_VIF)] if neighbour_on_source else [])
        self.engines = {"A": chassis("A", (A1, A1_OFPORT)), "B": chassis("B", *b_ports), "C": chassis("C")}
        self.learned: dict[str, list] = {name: [] for name in self.engines}
        for name in "AC":
            write(self.engines[name], B1)
        self.step("requested")
        self.change("C", lambda c: c.vif_online(Vif("b1", "tapb1", B1_VIF["C"])))

    def change(self, name: str, plan_of) -> None:
        """A controller's change; the keys it writes or deletes replace what the datapath learned."""
        engine = self.engines[name]
        before = {f.key: f for f in engine.desired().values()}
        engine.commit(plan_of(engine))
        after = {f.key: f for f in engine.desired().values()}
        touched = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        self.learned[name] = [f for f in self.learned[name] if f.key not in touched]

    def step(self, state: str, on: str = "ABC") -> None:
        moving = B1.replace(migration=MigrationRecord(chassis="C", source="B", strategy="announce", state=state))
        for name in on:
            self.change(name, lambda e: e.nb_event({"table": moving.table, "action": "update", "id": moving.id,
                                                    "topic": moving.topic, "version": moving.version,
                                                    "object": moving.to_dict()}))

    def unplug_source(self) -> None:
        self.change("B", lambda b: b.vif_offline("b1"))

    def forward(self, name: str, in_port: int, packet: dict) -> list:
        table = FakeOFTable(list(self.engines[name].desired().values()), self.learned[name])
        out = table.forward(in_port, **packet)
        self.learned[name] = table.learned
        return out

    def announce(self) -> None:
        """The VM's RARP on its destination VIF: C's datapath learns the delivery there."""
        self.forward("C", B1_VIF["C"], dict(eth_src=mac(2), eth_dst=BROADCAST_MAC, eth_type=ETH_TYPE_RARP))

    def a1_to_b1(self) -> list[tuple[str, int]]:
        """(chassis, VIF) a packet from a1 to b1 is delivered to, across the tunnels."""
        delivered, walking = [], [("A", A1_OFPORT, ipv4(1, 2))]
        while walking:
            name, in_port, packet = walking.pop()
            for out in self.forward(name, in_port, packet):
                peer = next((p for p, ofport in TUNNELS.items() if ofport == out.port and p != name), None)
                if peer is None:
                    delivered.append((name, out.port))
                else:  # it enters the peer from the peer's tunnel to us
                    walking.append((peer, TUNNELS[name], {k: v for k, v in out.packet.items() if k != "in_port"}))
        return sorted(delivered)


def test_the_pending_destination_drops_the_copy_and_the_source_delivers():
    assert Overlay().a1_to_b1() == [("B", B1_VIF["B"])]


def test_at_the_announcement_both_ends_deliver_and_the_vm_runs_at_one_of_them():
    """The one moment with two deliveries, across the VM's own switchover: B's VIF is the paused
    source's. A packet whose original reached B before the VM stopped there and whose copy reaches C
    after the announcement is answered twice: in flight on both paths, no flow can tell it apart."""
    overlay = Overlay()
    overlay.announce()
    assert overlay.a1_to_b1() == [("B", B1_VIF["B"]), ("C", B1_VIF["C"])]


@pytest.mark.parametrize("neighbour_on_source", [True, False])
@pytest.mark.parametrize("first", ["activated", "switched"])
def test_a_sender_still_copying_reaches_the_vm_once_after_it_left_the_source(first, neighbour_on_source):
    """A has not heard yet of the step B and C took: the VM activated on C by its announcement, or
    (no activation yet) the source's unplug. A still copies to C; B must not forward the original."""
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
