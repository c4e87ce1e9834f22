"""An `announce` migration's destination activates without touching what its datapath cached.

Every local port looks its two gates up (activation_gate: reg5, delivery_gate: reg9), whether it is a
pre-programmed destination (gates closed) or runs here (gates open, with the very actions the VM's
announcement learns). So the activation replaces the learned gates with the controller's same flows and
drops only what no packet takes once they are open, and the end of the migration changes no flow of the
port: the VM's packets reach the connection tracker with the same registers (what names the datapath's
recirculation) before the activation, after it and once the migration is over, as a port that never
moved. Pure: the engines of tests/test_engine.py and tests/fakeoftable.py.
"""
from __future__ import annotations

from controller.apps.dnat import DnatApp
from controller.apps.l2 import L2App
from controller.apps.l3 import L3App
from controller.apps.secgroups import SecurityGroupsApp
from controller.engine import Engine
from controller.templates import object_hash
from controller.view import Vif
from dfflow.flows import BROADCAST_MAC, ETH_TYPE_RARP, Learn, SetField
from dfflow.models import LogicalPort, LogicalSwitch, MigrationRecord, Subnet
from fakeoftable import FakeOFTable
from test_forwarding import TUNNEL_B, TUNNEL_C, VNI, ipv4, mac

B1_VIF, A1_VIF = 6, 5
TUNNELS = {"B": TUNNEL_B, "C": TUNNEL_C}


def event(obj, action="update"):
    return {"table": obj.table, "action": action, "id": obj.id, "topic": obj.topic, "version": obj.version,
            "object": obj.to_dict()}


def port(pid, last, chassis, **kw):
    return LogicalPort(id=pid, topic="t", lswitch="net1", mac=f"fa:16:3e:00:00:{last:02x}",
                       ips=[f"10.0.0.{last}"], binding_chassis=chassis, **kw)


A1, B1 = port("a1", 1, "A"), port("b1", 2, "B")


def chassis_a(*, b1_bound_here: bool = False) -> Engine:
    """Chassis A (every app, security groups too) with a1 plugged; b1 either bound and plugged here from
    the start, or on B, where it runs."""
    engine = Engine("A", [L2App(), L3App(), DnatApp(), SecurityGroupsApp()])
    engine.commit(engine.tunnels_changed(TUNNELS))
    for obj in (LogicalSwitch(id="net1", topic="t", segmentation_id=VNI),
                Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/24"), A1,
                B1.replace(binding_chassis="A") if b1_bound_here else B1):
        engine.commit(engine.nb_event(event(obj, "create")))
    engine.commit(engine.vif_online(Vif("a1", "tapa1", A1_VIF)))
    if b1_bound_here:
        engine.commit(engine.vif_online(Vif("b1", "tapb1", B1_VIF)))
    return engine


def step(engine: Engine, state: str | None, **changes):
    mig = None if state is None else MigrationRecord(chassis="A", source="B", strategy="announce", state=state)
    plan = engine.nb_event(event(B1.replace(migration=mig, **changes)))
    engine.commit(plan)
    return plan


def pending_on_a() -> Engine:
    engine = chassis_a()
    step(engine, "requested")
    engine.commit(engine.vif_online(Vif("b1", "tapb1", B1_VIF)))
    return engine


def b1_flows(engine: Engine) -> dict:
    return {k: f for k, f in engine.desired().items() if f.cookie & (2**56 - 1) == object_hash("b1")}


def not_taken_once_open(flow) -> bool:
    """The flows of a closed gate's port that no packet takes once its gates are open: the announcement's
    own (classify, priority 110: its RARP/GARP to the controller) and the way back to the source (reg9=2)."""
    return (flow.table == 0 and flow.priority == 110) or ("reg9", 2, None) in flow.match


def test_an_announce_destinations_activation_rewrites_only_its_gates_with_the_actions_they_learned():
    engine = pending_on_a()
    before = b1_flows(engine)
    learns = {a for f in before.values() for a in f.actions if isinstance(a, Learn)}
    assert {learn.table for learn in learns} == {5, 46}
    plan = step(engine, "activated")
    after = b1_flows(engine)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    gates = {k for k in changed if k[0] in (5, 46)}
    # the gates: the same keys, now the controller's flows with exactly what the announcement learned
    assert {(learn.table, learn.priority, tuple(sorted(learn.match))) for learn in learns} == \
        {(t, p, tuple(sorted((n, v) for n, v, _ in m))) for t, p, m in gates}
    for learn in learns:
        key = next(k for k in gates if k[0] == learn.table)
        assert before[key].actions == () and after[key].actions == tuple(SetField(n, v) for n, v in learn.loads)
        assert after[key].cookie == learn.cookie
    # the rest of the bundle deletes what no packet takes once the gates are open; nothing else of the port
    # changes (its classification, port security, security groups, lookups, floating IP, ...)
    assert changed - gates and all(k not in after and not_taken_once_open(before[k]) for k in changed - gates)
    assert len(before) - len(changed - gates) == len(after) > 10
    # and the network's flooding now reaches the VM (a few flows of the network's, none of the port's)
    assert {f.table for f in plan.adds} <= {50, 60} and not plan.deletes
    assert plan.n_flow_mods <= 2 * len(gates) + len(changed - gates) + len(plan.adds)


def test_the_end_of_an_announce_migration_changes_no_flow_of_the_port_and_leaves_the_plain_local_pipeline():
    engine = pending_on_a()
    step(engine, "activated")
    activated = dict(engine.desired())
    step(engine, "switched")  # the source's unplug
    assert engine.desired() == activated
    step(engine, None, binding_chassis="A")  # Nova's binding activation / update_port: done
    assert engine.desired() == activated
    # its arrival window over, A holds exactly what a port bound here from the start has: no stale flow
    for port_id in engine.take_windows_ending():
        engine.commit(engine.arrival_window_closed(port_id))
    plain = chassis_a(b1_bound_here=True)
    assert engine.desired() == plain.desired()


def test_the_vms_packets_reach_the_connection_tracker_with_the_same_registers_before_and_after_activation():
    """What the datapath caches for the VM's packets (its megaflows: their actions name a recirculation
    by the registers frozen at ct) is the same once the VM announced itself, after the activation, after
    the migration's end, and on a chassis where the port never moved."""
    from_vm, to_vm = (B1_VIF, ipv4(2, 1)), (TUNNEL_C, dict(tunnel_id=VNI, **ipv4(3, 2)))
    engine = pending_on_a()
    learned: list = []

    def walk(engine: Engine) -> list:
        seen = []
        for in_port, packet in (from_vm, to_vm, (A1_VIF, ipv4(1, 2))):
            fake = FakeOFTable(list(engine.desired().values()), list(learned))
            seen.append((fake.ports(in_port, **packet), fake.conntracked))
        return seen

    fake = FakeOFTable(list(engine.desired().values()))
    assert walk(engine)[0] == ([], [])  # gated: what the paused VM's tap sends goes nowhere
    fake.forward(B1_VIF, eth_src=mac(2), eth_dst=BROADCAST_MAC, eth_type=ETH_TYPE_RARP)
    learned[:] = fake.learned
    announced = walk(engine)
    assert [ports for ports, _ in announced] == [[A1_VIF], [B1_VIF], [B1_VIF]]
    assert all(frozen for _, frozen in announced)
    step(engine, "activated")
    learned.clear()  # the activation's bundle wrote the gates' keys: the learned flows are gone
    assert walk(engine) == announced
    step(engine, None, binding_chassis="A")
    for port_id in engine.take_windows_ending():
        engine.commit(engine.arrival_window_closed(port_id))
    assert walk(engine) == announced
    assert walk(chassis_a(b1_bound_here=True)) == announced
