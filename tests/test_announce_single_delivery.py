"""Each packet reaches the migrating VM once, whatever the chassis' flows say at the moment it crosses
them: the three chassis of an `announce` migration (sender X, source S, destination D) as the
controller programs them, walked by a packet (pure: the flows are interpreted here, in the manner
of faucet's table simulations).

While X has not yet heard of the migration's next step it still copies the port's traffic to D (it
sends the original to S). The source must then drop what a tunnel brings it for the port as soon as
the VM has left it -- whether the VM's announcement activated it on D first, or the source's unplug
came first -- or D's VIF gets the packet twice: X's copy and S's forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controller.apps.l2 import L2App
from controller.engine import Engine
from controller.view import Vif
from dfflow.flows import ETH_TYPE_IP, ETH_TYPE_RARP, Flow, Learn, Output, Resubmit, SetField
from dfflow.models import LogicalPort, LogicalSwitch, MigrationRecord, Subnet

TUNNELS = {"X": {"S": 10, "D": 11}, "S": {"X": 20, "D": 21}, "D": {"X": 30, "S": 31}}
M_VIF = {"S": 4, "D": 6}  # the migrating port's VIF on the source and on the destination
P_VIF = 5  # a peer on X
VNI = 101
M_MAC, P_MAC = 0xfa163e000002, 0xfa163e000001


def event(obj) -> dict:
    return {"table": obj.table, "action": "create", "id": obj.id, "topic": obj.topic,
            "version": obj.version, "object": obj.to_dict()}


def lport(pid: str, last: int, chassis: str, **kw) -> LogicalPort:
    return LogicalPort(id=pid, topic="t", lswitch="net1", mac=f"fa:16:3e:00:00:{last:02x}",
                       ips=[f"10.0.0.{last + 10}"], binding_chassis=chassis, **kw)


@dataclass
class Chassis:
    """One chassis' br-int: the flows its controller wants, plus what the datapath learned."""

    name: str
    engine: Engine
    learned: dict = field(default_factory=dict)

    def apply(self, plan) -> None:
        self.engine.commit(plan)

    def table(self, table_id: int) -> list[Flow]:
        flows = {f.key: f for f in self.engine.desired().values() if f.table == table_id}
        flows.update({k: f for k, f in self.learned.items() if k[0] == table_id})  # a learn replaces its key
        return sorted(flows.values(), key=lambda f: -f.priority)


def matches(flow: Flow, packet: dict) -> bool:
    for name, value, mask in flow.match:
        have = packet.get(name, 0)
        if (have & mask if mask is not None else have) != value:
            return False
    return True


def walk(chassis: Chassis, packet: dict, table_id: int, out: list) -> None:
    """Run `packet` through `chassis`' table `table_id` and on (goto, resubmit); outputs into `out`."""
    flow = next((f for f in chassis.table(table_id) if matches(f, packet)), None)
    if flow is None:
        return  # table miss: our tables' misses drop, or are flows of their own
    for action in flow.actions:
        if isinstance(action, SetField):
            packet[action.field] = action.value
        elif isinstance(action, Output):
            out.append((action.port, packet.get("tunnel_id")))
        elif isinstance(action, Resubmit):
            walk(chassis, packet, action.table, out)
        elif isinstance(action, Learn):
            loads = tuple(SetField(f, v) for f, v in action.loads)
            learned = Flow(action.table, action.priority, tuple((f, v, None) for f, v in action.match),
                           loads + ((Output(packet["in_port"]),) if action.output_in_port else ()))
            chassis.learned[learned.key] = learned
    if flow.write_metadata is not None:
        packet["metadata"] = flow.write_metadata[0]
    if flow.goto is not None:
        walk(chassis, packet, flow.goto, out)


class Cloud:
    """X with the peer p, S with the VM's port m, D its `announce` destination with m's VIF plugged."""

    def __init__(self, neighbour_on_source: bool = True) -> None:
        self.chassis = {name: Chassis(name, Engine(name, [L2App()])) for name in TUNNELS}
        for ch in self.chassis.values():
            ch.apply(ch.engine.tunnels_changed(TUNNELS[ch.name]))
            for obj in (LogicalSwitch(id="net1", topic="t", segmentation_id=VNI),
                        Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/24")):
                ch.apply(ch.engine.nb_event(event(obj)))
        self.p, self.m = lport("p", 1, "X"), lport("m", 2, "S")
        self.publish(self.p)
        self.publish(self.m)
        x, s, d = (self.chassis[n] for n in "XSD")
        x.apply(x.engine.vif_online(Vif("p", "tapp", P_VIF)))
        s.apply(s.engine.vif_online(Vif("m", "tapm", M_VIF["S"])))
        if neighbour_on_source:  # the network stays on S after m left: S keeps flows for m
            self.publish(lport("n", 3, "S"))
            s.apply(s.engine.vif_online(Vif("n", "tapn", 7)))
        self.set_migration("requested")
        d.apply(d.engine.vif_online(Vif("m", "tapm2", M_VIF["D"])))

    def publish(self, obj, to: str = "XSD") -> None:
        for name in to:
            ch = self.chassis[name]
            ch.apply(ch.engine.nb_event(event(obj)))

    def set_migration(self, state: str, to: str = "XSD") -> None:
        self.publish(self.m.replace(migration=MigrationRecord(chassis="D", source="S", strategy="announce",
                                                              state=state)), to)

    def unplug_source(self) -> None:
        s = self.chassis["S"]
        s.apply(s.engine.vif_offline("m"))

    def announce(self) -> None:
        """The VM's RARP on its destination VIF: the datapath learns its delivery there."""
        walk(self.chassis["D"], {"in_port": M_VIF["D"], "eth_src": M_MAC, "eth_dst": 0xffffffffffff,
                                 "eth_type": ETH_TYPE_RARP}, 0, [])

    def send_from_p(self) -> list[tuple[str, int]]:
        """A packet from p (on X) to m: the (chassis, VIF) it is delivered to, across the tunnels."""
        deliveries: list[tuple[str, int]] = []
        pending = [("X", {"in_port": P_VIF, "eth_src": P_MAC, "eth_dst": M_MAC, "eth_type": ETH_TYPE_IP,
                          "ipv4_src": 0x0a00000b, "ipv4_dst": 0x0a00000c})]
        while pending:
            name, packet = pending.pop()
            out: list = []
            walk(self.chassis[name], packet, 0, out)
            peers = {port: peer for peer, port in TUNNELS[name].items()}
            for port, tun_id in out:
                if port in peers:  # over the tunnel: it enters the peer from its tunnel to us
                    peer = peers[port]
                    pending.append((peer, {"in_port": TUNNELS[peer][name], "tunnel_id": tun_id,
                                           "eth_src": P_MAC, "eth_dst": M_MAC, "eth_type": ETH_TYPE_IP}))
                else:
                    deliveries.append((name, port))
        return sorted(deliveries)


def test_a_pending_destination_drops_the_copy_and_the_source_delivers():
    cloud = Cloud()
    assert cloud.send_from_p() == [("S", M_VIF["S"])]


def test_at_the_announcement_the_copy_opens_on_the_destination_while_the_source_still_delivers():
    """The one moment with two deliveries: the VM runs at only one of them (S's VIF is a paused
    source's). A packet whose original reached S before the VM stopped there and whose copy reaches
    D after the announcement is delivered twice: a packet in flight across the switchover, which no
    flow can tell apart from the next."""
    cloud = Cloud()
    cloud.announce()
    assert cloud.send_from_p() == [("D", M_VIF["D"]), ("S", M_VIF["S"])]


@pytest.mark.parametrize("neighbour_on_source", [True, False])
@pytest.mark.parametrize("first", ["activated", "switched"])
def test_a_sender_still_copying_reaches_the_vm_once_after_it_left_the_source(first, neighbour_on_source):
    """X has not heard yet of the step D and S took: the VM activated on D by its announcement, or
    (no activation yet) the source's unplug. X still copies to D; S must not forward the original."""
    cloud = Cloud(neighbour_on_source)
    cloud.announce()
    if first == "switched":
        cloud.unplug_source()
    cloud.set_migration(first, to="SD")
    assert cloud.send_from_p() == [("D", M_VIF["D"])]
    if first == "activated":  # then the unplug, X still lagging
        cloud.unplug_source()
        cloud.set_migration("switched", to="SD")
        assert cloud.send_from_p() == [("D", M_VIF["D"])]


def test_once_the_sender_follows_the_port_goes_to_the_destination_alone():
    cloud = Cloud()
    cloud.announce()
    cloud.set_migration("activated")
    cloud.unplug_source()
    cloud.set_migration("switched")
    assert cloud.send_from_p() == [("D", M_VIF["D"])]
