"""The controller's pure core: which flows a chassis wants as ports come, go and move."""
from controller.apps.l2 import L2App
from controller.engine import Engine
from controller.view import Vif
from dfflow.flows import OFPP_IN_PORT, Ct, Learn, Output, Resubmit, SetField
from dfflow.models import LogicalPort, LogicalSwitch, MigrationRecord, Subnet


def event(obj, action="create"):
    return {"table": obj.table, "action": action, "id": obj.id, "topic": obj.topic,
            "version": obj.version, "object": None if action == "delete" else obj.to_dict()}


def make_engine(chassis="A"):
    engine = Engine(chassis, [L2App()])
    engine.commit(engine.tunnels_changed({"B": 10, "C": 11}))
    for obj in (LogicalSwitch(id="net1", topic="t", segmentation_id=101),
                Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/24")):
        engine.commit(engine.nb_event(event(obj)))
    return engine


def engine_with_a1_here_and_b1_on_b():
    """Chassis A with a1 (VIF plugged) and b1 on chassis B, both on net1."""
    engine = make_engine()
    apply(engine, engine.nb_event(event(port("a1", 1, 11, "A"))))
    apply(engine, engine.vif_online(Vif("a1", "tapa1", 5)))
    b1 = port("b1", 2, 12, "B")
    apply(engine, engine.nb_event(event(b1)))
    return engine, b1


def port(pid, mac_last, ip_last, chassis, **kw):
    return LogicalPort(id=pid, topic="t", lswitch="net1", mac=f"fa:16:3e:00:00:{mac_last:02x}",
                       ips=[f"10.0.0.{ip_last}"], binding_chassis=chassis, **kw)


def l2_lookup_actions(engine, mac_last):
    mac = 0xfa163e000000 | mac_last
    for flow in engine.desired().values():
        if flow.table == 50 and ("eth_dst", mac, None) in flow.match:
            return flow.actions
    return None


def apply(engine, plan):
    engine.commit(plan)
    return plan


def test_remote_ports_get_flows_only_while_their_network_has_a_local_port():
    engine = make_engine()
    apply(engine, engine.nb_event(event(port("b1", 2, 12, "B"))))
    assert l2_lookup_actions(engine, 2) is None
    apply(engine, engine.nb_event(event(port("a1", 1, 11, "A"))))
    assert l2_lookup_actions(engine, 1) is None  # its VIF is not plugged yet
    apply(engine, engine.vif_online(Vif("a1", "tapa1", 5)))
    assert l2_lookup_actions(engine, 1) == (Output(5),)
    assert l2_lookup_actions(engine, 2) == (SetField("tunnel_id", 101), Output(10))
    apply(engine, engine.vif_offline("a1"))
    assert engine.desired() == {k: f for k, f in engine.desired().items() if f.table != 50 or not f.match}


def test_a_switched_migration_moves_the_port_with_remove_and_add_and_nothing_else():
    engine, b1 = engine_with_a1_here_and_b1_on_b()
    before = dict(engine.desired())
    moving = b1.replace(migration=MigrationRecord(chassis="C", source="B", state="switched"), version=5)
    plan = apply(engine, engine.nb_event(event(moving, "update")))
    assert l2_lookup_actions(engine, 2) == (SetField("tunnel_id", 101), Output(11))
    assert engine.stats["port_remote_to_remote"] == 1
    changed = {f.key for f in plan.adds} | {f.key for f in plan.deletes}
    # only b1's lookup flow and the flood flow (new peer set) change; ARP answers stay
    assert all(k in before for k in changed)
    assert {k[0] for k in changed} <= {50, 60}
    # the same update again changes nothing
    assert not engine.nb_event(event(moving.replace(version=6), "update"))


def test_the_nb_event_of_a_step_already_applied_from_the_migration_event_recomputes_nothing():
    engine, b1 = engine_with_a1_here_and_b1_on_b()
    moving = b1.replace(migration=MigrationRecord(chassis="C", source="B", state="switched"))
    assert apply(engine, engine.object_written(moving))  # the migration event: the port moves here
    desired = dict(engine.desired())
    assert not engine.nb_event(event(moving.replace(version=b1.version + 1), "update"))
    assert engine.stats["unchanged_writes"] == 1 and engine.desired() == desired
    assert engine.view.port("b1").version == b1.version + 1  # the view holds the NB revision
    # a write that does change something is not taken for the same
    assert engine.nb_event(event(moving.replace(version=b1.version + 2, mac="fa:16:3e:00:00:99"), "update"))


def test_deleting_a_port_removes_every_flow_that_named_it():
    engine, b1 = engine_with_a1_here_and_b1_on_b()
    assert any(f.cookie == L2App().cookie("b1") for f in engine.desired().values())
    apply(engine, engine.nb_event(event(b1, "delete")))
    assert not any(f.cookie == L2App().cookie("b1") for f in engine.desired().values())


def test_a_compiled_core_failure_is_an_error_and_the_port_keeps_its_flows_until_its_next_change(monkeypatch):
    from controller import compiler

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    engine = make_engine()
    working = compiler.compile_port_changes
    monkeypatch.setattr(compiler, "compile_port_changes", broken)
    apply(engine, engine.nb_event(event(port("a1", 1, 11, "A"))))
    apply(engine, engine.vif_online(Vif("a1", "tapa1", 5)))
    assert engine.stats["compiler_errors"] >= 1
    assert "injected" in engine.errors[-1] and "Traceback" in engine.errors[-1]
    assert l2_lookup_actions(engine, 1) is None  # no other engine made them
    monkeypatch.setattr(compiler, "compile_port_changes", working)
    apply(engine, engine.everything())
    assert l2_lookup_actions(engine, 1) == (Output(5),)



def test_the_ports_of_a_plan_are_compiled_in_one_call_and_one_the_core_fails_on_does_not_stop_the_others(
        monkeypatch):
    from controller import compiler

    engine = make_engine()
    working = compiler.compile_port_changes
    calls = []

    def failing_on_b1(program, table, changes):
        calls.append(len(changes))
        if table.index.get("b1") in [row for row, _, _ in changes]:
            raise RuntimeError("injected for b1")
        return working(program, table, changes)

    monkeypatch.setattr(compiler, "compile_port_changes", failing_on_b1)
    apply(engine, engine.nb_event(event(port("b1", 2, 12, "B"))))
    apply(engine, engine.nb_event(event(port("a1", 1, 11, "A"))))
    calls.clear()
    apply(engine, engine.vif_online(Vif("a1", "tapa1", 5)))  # both ports get flows in this plan
    assert calls[0] == 2  # one call for both; then each alone, to find the one it fails on
    assert l2_lookup_actions(engine, 1) == (Output(5),)
    assert l2_lookup_actions(engine, 2) is None
    assert engine.stats["compiler_errors"] == 1
    assert "port b1" in engine.errors[-1] and "injected for b1" in engine.errors[-1]
    monkeypatch.setattr(compiler, "compile_port_changes", working)
    apply(engine, engine.everything())
    assert l2_lookup_actions(engine, 2) == (SetField("tunnel_id", 101), Output(10))



def test_the_facts_changes_of_a_plans_ports_are_compiled_in_one_call(monkeypatch):
    from controller import compiler
    from dfflow.models import LogicalRouter, RouterPort

    engine, _ = engine_with_a1_here_and_b1_on_b()
    working = compiler.compile_facts_changes
    calls = []

    def counted(program, table, changes):
        calls.append(sorted(port_id for port_id, _, _, _ in changes))
        return working(program, table, changes)

    monkeypatch.setattr(compiler, "compile_facts_changes", counted)
    router = LogicalRouter(id="r1", topic="t", ports=[RouterPort(subnet="s1", mac="fa:16:3e:00:00:fe", ip="10.0.0.254")])
    apply(engine, engine.nb_event(event(router)))  # both ports' networks are routed now
    assert calls == [["a1", "b1"]]
    assert engine.stats["port_facts_changed"] == 2 and not engine.stats["compiler_errors"]
    assert engine.table.facts["a1"].routed and engine.table.facts["b1"].routed


def pending_destination_a1():
    """Chassis A with a1 (VIF on ofport 5) and the pre-programmed destination of b1's announce
    migration from B (b1's VIF on ofport 6)."""
    engine, b1 = engine_with_a1_here_and_b1_on_b()
    moving = b1.replace(migration=MigrationRecord(chassis="A", source="B", strategy="announce"))
    apply(engine, engine.nb_event(event(moving)))
    apply(engine, engine.vif_online(Vif("b1", "tapb1", 6)))
    return engine, moving


def lookups_of(engine, mac_last):
    """The chassis' L2 lookup flows for the port, by priority."""
    return {f.priority: f for f in engine.desired().values()
            if f.table == 50 and ("eth_dst", 0xfa163e000000 | mac_last, None) in f.match}


def decisions_of(engine, mac_last):
    """The chassis' flows deciding where a packet for a migrating port goes (ingress_conntrack,
    above the security groups' flows), by (priority, reg9, in_port or None, reg6 or None)."""
    found = {}
    for f in engine.desired().values():
        fields = {n: v for n, v, _ in f.match}
        if f.table == 47 and fields.get("eth_dst") == 0xfa163e000000 | mac_last and "reg9" in fields:
            found[(f.priority, fields["reg9"], fields.get("in_port"), fields.get("reg6"))] = f.actions
    return found


def test_a_pending_destination_hands_nothing_to_its_vif_until_the_announcement_opens_its_delivery_gate():
    engine, b1 = pending_destination_a1()
    # what reaches the L2 lookup is for the VIF: the decision is taken before, in ingress_conntrack
    assert {p: f.actions for p, f in lookups_of(engine, 2).items()} == {100: (Output(6),)}
    to_b = (SetField("tunnel_id", 101), Output(10))
    assert decisions_of(engine, 2) == {
        (110, 0, None, None): (SetField("reg9", 2), Resubmit(46), Resubmit(47)),  # look the gate up
        (110, 2, None, None): to_b,  # not announced: to the source, where the VM runs ...
        (120, 2, 10, None): (SetField("tunnel_id", 101), Output(OFPP_IN_PORT))}  # ... back, if it came from there
    gate = [f for f in engine.desired().values() if f.table == 46 and ("eth_dst", 0xfa163e000002, None) in f.match]
    assert [(f.match, f.actions) for f in gate] == [((("metadata", 101, None), ("eth_dst", 0xfa163e000002, None)), ())]
    learns = {a for f in engine.desired().values() if f.table == 0 and ("in_port", 6, None) in f.match
              for a in f.actions if isinstance(a, Learn) and a.table == 46}
    # the VM's RARP/GARP learns over the gate (same key, no timeout) reg9=1: delivered here from then on
    assert learns == {Learn(46, 100, 0, 0, gate[0].cookie, (("metadata", 101), ("eth_dst", 0xfa163e000002)),
                            (("reg9", 1),))}
    # (IPv6 is flooded to no port with port security: these have it, so only the other floods are looked at;
    # IPv4 reaches them through their ingress filter, in their zone)
    flood = [f for f in engine.desired().values() if f.table == 60 and ("eth_type", 0x86DD, None) not in f.match]
    assert flood and all({Output(6), Ct(6, table=48)}.isdisjoint(f.actions) for f in flood)
    assert all({Output(5), Ct(5, table=48)} & set(f.actions) for f in flood)
    apply(engine, engine.nb_event(event(b1.replace(
        migration=MigrationRecord(chassis="A", source="B", strategy="announce", state="activated")))))
    assert {p: f.actions for p, f in lookups_of(engine, 2).items()} == {100: (Output(6),)}
    # activated: the gate holds open with the controller's flow, as every local port's does
    assert decisions_of(engine, 2) == {(110, 0, None, None): (SetField("reg9", 2), Resubmit(46), Resubmit(47))}
    assert [(f.match, f.actions) for f in engine.desired().values() if f.table == 46 and f.cookie == gate[0].cookie] \
        == [(gate[0].match, (SetField("reg9", 1),))]
    assert all({Output(6), Ct(6, table=48)} & set(f.actions) for f in engine.desired().values()
               if f.table == 60 and ("eth_type", 0x86DD, None) not in f.match)


def test_an_announce_source_sends_what_its_vifs_send_the_port_to_the_destination_and_delivers_what_a_tunnel_brings():
    engine = make_engine("B")
    b1 = port("b1", 2, 12, "B")
    apply(engine, engine.nb_event(event(b1)))
    apply(engine, engine.vif_online(Vif("b1", "tapb1", 4)))
    apply(engine, engine.nb_event(event(b1.replace(
        migration=MigrationRecord(chassis="C", source="B", strategy="announce")))))
    assert {p: f.actions for p, f in lookups_of(engine, 2).items()} == {100: (Output(4),)}
    assert decisions_of(engine, 2) == {
        (120, 0, None, 0): (SetField("reg9", 1), Resubmit(47)),  # a tunnel's: delivered here, filtered as usual
        (110, 0, None, None): (SetField("tunnel_id", 101), Output(11))}  # its own VIFs': to the destination


def test_an_announce_source_the_vm_left_forwards_nothing_a_tunnel_brings_until_the_migration_ends():
    """Once the VM is activated on C (and after the source unplug), a tunnel's packet for it still
    reaching the source B was sent back by C before the announcement: the VM is not here to take it,
    and forwarded it could loop. B's own VMs still reach it on C. (tests/test_announce_single_delivery.py
    walks the packets.)"""
    engine = make_engine("B")
    for p, ofport in ((port("b1", 2, 12, "B"), 4), (port("b2", 3, 13, "B"), 7)):
        apply(engine, engine.nb_event(event(p)))
        apply(engine, engine.vif_online(Vif(p.id, f"tap{p.id}", ofport)))
    b1 = port("b1", 2, 12, "B")
    for state in ("requested", "activated"):
        apply(engine, engine.nb_event(event(b1.replace(
            migration=MigrationRecord(chassis="C", source="B", strategy="announce", state=state)))))
    lookups = lookups_of(engine, 2)
    assert ("reg6", 0, None) in lookups[110].match and lookups[110].actions == ()
    assert lookups[100].actions == (SetField("tunnel_id", 101), Output(11))
    assert decisions_of(engine, 2) == {}
    apply(engine, engine.nb_event(event(b1.replace(
        migration=MigrationRecord(chassis="C", source="B", strategy="announce", state="switched")))))
    to_c = (SetField("tunnel_id", 101), Output(11))
    assert {p: f.actions for p, f in lookups_of(engine, 2).items()} == {110: (), 100: to_c}
    apply(engine, engine.nb_event(event(b1.replace(binding_chassis="C"))))  # done: the record is gone
    assert {p: f.actions for p, f in lookups_of(engine, 2).items()} == {100: to_c}


def test_a_sender_changes_no_flow_of_the_port_at_an_announce_migrations_activation_or_end():
    """It sends the port's traffic to the destination alone from the migration's start: the VM's
    switchover, the activation and the migration's end leave its flows for the port as they are (the
    network's floods follow the chassis hosting its ports)."""
    from controller.templates import object_hash

    def port_flows():
        return {k: f for k, f in engine.desired().items() if f.cookie & (2**56 - 1) == object_hash("b1")}

    engine, b1 = engine_with_a1_here_and_b1_on_b()
    moving = b1.replace(migration=MigrationRecord(chassis="C", source="B", strategy="announce"))
    apply(engine, engine.nb_event(event(moving)))
    assert l2_lookup_actions(engine, 2) == (SetField("tunnel_id", 101), Output(11))
    before = port_flows()
    assert before
    for state in ("activated", "switched"):
        apply(engine, engine.nb_event(event(b1.replace(
            migration=MigrationRecord(chassis="C", source="B", strategy="announce", state=state)))))
        assert port_flows() == before, state
    apply(engine, engine.nb_event(event(b1.replace(binding_chassis="C"))))
    assert port_flows() == before


def test_port_status_reports_never_reach_the_view_or_recompute_flows():
    from dfflow.models import PortStatus
    engine, _ = engine_with_a1_here_and_b1_on_b()
    before = dict(engine.desired())
    plan = engine.nb_event(event(PortStatus(id="a1", topic="t", up={"A": 1.0})))
    assert not plan and engine.view.get(PortStatus.table, "a1") is None
    assert engine.stats["ignored_events"] == 1 and engine.desired() == before


def test_an_inactive_binding_or_a_profile_change_recomputes_only_the_port_and_its_network():
    from dfflow.models import InactiveBinding
    engine, b1 = engine_with_a1_here_and_b1_on_b()
    plan = engine.nb_event(event(b1.replace(inactive_bindings=[InactiveBinding(host="C")],
                                            binding_profile={"migrating_to": "C"})))
    assert not plan.moved and not plan.n_flow_mods


def test_two_ports_whose_flows_share_a_key_but_differ_are_an_error_in_status_not_a_silent_choice():
    engine = make_engine()
    # two ports with one MAC, on different chassis: their L2 lookups have one key and different outputs
    apply(engine, engine.nb_event(event(port("b1", 2, 12, "B"))))
    apply(engine, engine.nb_event(event(port("c1", 2, 13, "C"))))
    assert engine.stats["flow_key_conflicts"] == 0  # no flows yet: net1 has no local port
    apply(engine, engine.nb_event(event(port("a1", 1, 11, "A"))))
    apply(engine, engine.vif_online(Vif("a1", "tapa1", 5)))  # net1 needed here: its ports compiled together
    assert engine.stats["flow_key_conflicts"] == 1
    assert "b1, c1" in engine.errors[-1] and "key" in engine.errors[-1]
    # the other ports' flows are made as before
    assert l2_lookup_actions(engine, 1) == (Output(5),)


def test_ports_with_distinct_flows_raise_no_key_conflict():
    engine, _ = engine_with_a1_here_and_b1_on_b()
    apply(engine, engine.nb_event(event(port("c1", 3, 13, "C"))))
    apply(engine, engine.everything())
    assert engine.stats["flow_key_conflicts"] == 0 and not engine.errors


def test_the_fields_the_bus_found_changed_are_taken_only_against_the_version_it_found_them_against():
    engine, b1 = engine_with_a1_here_and_b1_on_b()
    held = engine.view.port("b1")
    # The bus read version 2 from the version it delivered before, which the view holds: its word stands
    # (here, deliberately, that nothing but the version changed, though the binding did).
    moved = b1.replace(binding_chassis="C", version=2)
    claimed = dict(event(moved, "update"), model=moved, changed_from=(held, ["version"]))
    assert not engine.nb_event(claimed)
    assert engine.stats["unchanged_writes"] == 1
    # The view holds another version (the migrator's own write, applied ahead): the engine compares.
    engine, b1 = engine_with_a1_here_and_b1_on_b()
    held = engine.view.port("b1")
    apply(engine, engine.object_written(b1.replace(binding_chassis="C", version=2)))
    assert l2_lookup_actions(engine, 2) == (SetField("tunnel_id", 101), Output(11))
    back = b1.replace(version=3)
    plan = apply(engine, engine.nb_event(dict(event(back, "update"), model=back, changed_from=(held, ["version"]))))
    assert plan and engine.stats["unchanged_writes"] == 0
    assert l2_lookup_actions(engine, 2) == (SetField("tunnel_id", 101), Output(10))
