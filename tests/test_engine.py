"""The controller's pure core: which flows a chassis wants as ports come, go and move."""
from controller.apps.l2 import L2App
from controller.engine import Engine
from controller.view import Vif
from dfflow.flows import Output, SetField
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


def test_a_compiled_core_failure_is_counted_and_the_python_path_takes_the_port(monkeypatch):
    from controller import compiler

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    engine = make_engine()
    monkeypatch.setattr(compiler, "compile_port_change", broken)
    apply(engine, engine.nb_event(event(port("a1", 1, 11, "A"))))
    apply(engine, engine.vif_online(Vif("a1", "tapa1", 5)))
    assert engine.stats["compiler_errors"] >= 1
    assert l2_lookup_actions(engine, 1) == (Output(5),)


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
