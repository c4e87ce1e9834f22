"""The security groups app's flows: what a rule matches, where the flows live, and what recomputes them."""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from controller.apps.l2 import L2App
from controller.apps.secgroups import MID_STREAM, SecurityGroupsApp
from controller.engine import Engine
from controller.pipeline import table
from controller.reconcile import flow_from_stats
from controller.view import Vif
from dfflow.flows import TCP_SYN, Command, Ct
from dfflow.models import (AddressPair, LogicalPort, LogicalSwitch, MigrationRecord, SecurityGroup,
                           SecurityGroupRule, Subnet)
from sg_oracle import protocol_matches, range_prefixes
from test_engine import apply, event
from test_reconcile import read_back

EGRESS_SG, INGRESS_SG, INGRESS_CT = table("egress_security_groups"), table("ingress_security_groups"), \
    table("ingress_conntrack")
APP = SecurityGroupsApp()


def covered(prefixes: list) -> set[int]:
    found: set[int] = set()
    for p in prefixes:
        value, mask = (p, 0xFFFF) if isinstance(p, int) else p
        found |= {x for x in range(1 << 16) if x & mask == value}
    return found


def test_a_port_range_becomes_prefixes_covering_it_exactly():
    for low, high in ((22, 22), (1000, 1999), (5, 1030), (1, 65535), (80, 81), (65535, 65535)):
        prefixes = range_prefixes(low, high)
        assert covered(prefixes) == set(range(low, high + 1)), (low, high)
        assert all(not isinstance(p, tuple) or p[1] != 0xFFFF for p in prefixes)  # exact values unmasked


def test_rules_openflow_cannot_express_allow_nothing_rather_than_more():
    rule = SecurityGroupRule(id="r", topic="t", secgroup="g", protocol="dccp", port_range_min=5, port_range_max=6)
    assert protocol_matches(rule) is None
    icmp = SecurityGroupRule(id="r", topic="t", secgroup="g", protocol="icmp", port_range_min=8, port_range_max=0)
    assert protocol_matches(icmp) == [{"ip_proto": 1, "icmpv4_type": 8, "icmpv4_code": 0}]


def engine_with_groups(here: str = "A", vif: Vif = Vif("a1", "tapa1", 5)):
    """Chassis A hosting a1 (group web: tcp 80 from 10.9.0.0/16, and anything from group db's members)
    and a chassis B hosting b1 (group db); the engine is chassis `here`'s, with `vif` plugged."""
    engine = Engine(here, [L2App(), SecurityGroupsApp()])
    apply(engine, engine.tunnels_changed({"B" if here == "A" else "A": 10}))
    objs = [LogicalSwitch(id="net1", topic="t", segmentation_id=101),
            Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/24"),
            SecurityGroup(id="web", topic="t"), SecurityGroup(id="db", topic="t"),
            SecurityGroupRule(id="r1", topic="t", secgroup="web", protocol="tcp", port_range_min=80,
                              port_range_max=80, remote_ip_prefix="10.9.0.0/16"),
            SecurityGroupRule(id="r2", topic="t", secgroup="web", remote_group="db"),
            SecurityGroupRule(id="r3", topic="t", secgroup="web", direction="egress"),
            LogicalPort(id="a1", topic="t", lswitch="net1", mac="fa:16:3e:00:00:01", ips=["10.0.0.11"],
                        binding_chassis="A", security_groups=["web"]),
            LogicalPort(id="b1", topic="t", lswitch="net1", mac="fa:16:3e:00:00:02", ips=["10.0.0.12"],
                        binding_chassis="B", security_groups=["db"])]
    for obj in objs:
        apply(engine, engine.nb_event(event(obj)))
    apply(engine, engine.vif_online(vif))
    return engine


def sg_flows(engine, port_id: str) -> list:
    cookie = APP.cookie(port_id)
    return [f for f in engine.desired().values() if f.cookie == cookie]


def new_connection_sources(engine, port_id: str) -> set:
    return {dict((n, (v, m)) for n, v, m in f.match).get("ipv4_src") for f in sg_flows(engine, port_id)
            if f.table == INGRESS_SG}


def test_a_local_port_is_filtered_in_its_own_zone_by_its_rules_and_remote_group_members():
    engine = engine_with_groups()
    flows = sg_flows(engine, "a1")
    assert all(Ct(5, commit=True) in f.actions for f in flows if f.table in (EGRESS_SG, INGRESS_SG))
    net = ipaddress.ip_network("10.9.0.0/16")
    assert new_connection_sources(engine, "a1") == {(int(net.network_address), int(net.netmask)),
                                                     (int(ipaddress.ip_address("10.0.0.12")), None)}
    assert not sg_flows(engine, "b1")  # enforced where the port runs, not here
    for flow in flows:  # and reconciliation reads every one of them back as sent
        assert flow_from_stats(read_back(flow)) == flow.as_command(Command.ADD)


def test_a_port_running_elsewhere_or_unfiltered_makes_no_rows_here_and_none_can_be_written_into():
    engine = engine_with_groups()
    app = engine.row_port_apps[0]
    remote, local = engine.view.port("b1"), engine.view.port("a1")
    assert len(app.port_rows(local, engine.view)) > 0
    for port in (remote, local.replace(port_security=False, security_groups=[]),
                 local.replace(device_owner="network:dhcp")):
        rows = app.port_rows(port, engine.view)
        assert len(rows) == 0 and not rows.flags.writeable  # one empty array, shared by every such port
        with pytest.raises(ValueError):
            rows.resize(1)


def test_a_members_new_address_or_pair_updates_the_ports_whose_rules_name_its_group():
    engine = engine_with_groups()
    b1 = engine.view.port("b1")
    moved = b1.replace(ips=["10.0.0.13"], allowed_address_pairs=[AddressPair("10.0.0.99", b1.mac)])
    apply(engine, engine.nb_event(event(moved, "update")))
    sources = new_connection_sources(engine, "a1")
    assert (int(ipaddress.ip_address("10.0.0.13")), None) in sources
    assert (int(ipaddress.ip_address("10.0.0.99")), None) in sources
    assert (int(ipaddress.ip_address("10.0.0.12")), None) not in sources


def test_a_rule_removed_goes_at_once_a_port_without_groups_allows_nothing_and_one_without_port_security_all():
    engine = engine_with_groups()
    apply(engine, engine.nb_event(event(SecurityGroupRule(id="r1", topic="t", secgroup="web"), "delete")))
    assert len(new_connection_sources(engine, "a1")) == 1
    a1 = engine.view.port("a1")
    apply(engine, engine.nb_event(event(a1.replace(security_groups=[]), "update")))
    flows = sg_flows(engine, "a1")
    assert flows and not [f for f in flows if f.table in (EGRESS_SG, INGRESS_SG)]  # its zone, and no rule
    apply(engine, engine.nb_event(event(a1.replace(security_groups=[], port_security=False), "update")))
    assert not sg_flows(engine, "a1")
    assert not [f for f in engine.desired().values() if f.table == INGRESS_CT and f.priority == 100]


def mid_stream_flows(engine, port_id: str) -> list:
    return [f for f in sg_flows(engine, port_id) if f.priority == MID_STREAM]


def test_a_port_migrating_here_admits_its_established_tcp_until_a_while_after_the_migration():
    engine = engine_with_groups()
    b1 = engine.view.port("b1")
    record = MigrationRecord(chassis="A", source="B", state="switched", id="m1", bound="B")
    apply(engine, engine.nb_event(event(b1.replace(migration=record), "update")))
    apply(engine, engine.vif_online(Vif("b1", "tapb1", 6)))
    flows = mid_stream_flows(engine, "b1")
    assert {f.table for f in flows} == {EGRESS_SG, INGRESS_SG}
    assert all(("tcp_flags", 0, TCP_SYN) in f.match and Ct(6, commit=True) in f.actions for f in flows)
    assert not mid_stream_flows(engine, "a1")  # a port that did not move admits nothing more
    assert engine.take_windows_ending() == []
    apply(engine, engine.nb_event(event(b1.replace(migration=None, binding_chassis="A"), "update")))
    assert mid_stream_flows(engine, "b1")  # the migration is over, the window not yet
    assert engine.take_windows_ending() == ["b1"]
    apply(engine, engine.arrival_window_closed("b1"))
    assert not mid_stream_flows(engine, "b1") and sg_flows(engine, "b1")
    for flow in flows:
        assert flow_from_stats(read_back(flow)) == flow.as_command(Command.ADD)


EGRESS_CT = table("egress_conntrack")
# move -> (the migration record at step 1, the port at the step that moves it)
STEPS = {
    "announce": (MigrationRecord(chassis="A", source="B", strategy="announce", id="m1", bound="B"),
                 lambda port: port.replace(migration=dataclasses.replace(port.migration, state="activated"))),
    "unplug": (MigrationRecord(chassis="A", source="B", strategy="unplug", id="m1", bound="B"),
               lambda port: port.replace(migration=dataclasses.replace(port.migration, state="switched"))),
    "fallback": (MigrationRecord(chassis="A", source="B", strategy="unplug", id="m1", bound="B"),
                 lambda port: port.replace(binding_chassis="A")),  # step 3 with no step 2
}


def filtered_in_zone(engine, port_id: str, zone: int) -> bool:
    """The port's conntrack flows in `zone`, both ways, are in the engine's flows."""
    tables = {f.table for f in sg_flows(engine, port_id)
              if any(getattr(a, "zone", None) == zone for a in f.actions)}
    return {EGRESS_CT, INGRESS_CT} <= tables


@pytest.mark.parametrize("move", list(STEPS))
def test_a_ports_filter_moves_with_it_pre_programmed_at_step_1_moved_at_step_2_or_3(move):
    """b1 moves from B to A: its filter is on the source until the step that moves the port, and on the
    destination from then (with `announce`, from step 1, pre-programmed with the port's other flows)."""
    record, moving = STEPS[move]
    source, dest = engine_with_groups("B", Vif("b1", "tapb1", 7)), engine_with_groups("A", Vif("b1", "tapb1", 6))
    assert filtered_in_zone(source, "b1", 7) and not sg_flows(dest, "b1")
    for engine in (source, dest):
        b1 = engine.view.port("b1")
        apply(engine, engine.nb_event(event(b1.replace(migration=record), "update")))
    assert filtered_in_zone(source, "b1", 7)  # the VM still runs there
    assert filtered_in_zone(dest, "b1", 6) is (move == "announce")
    for engine in (source, dest):
        apply(engine, engine.nb_event(event(moving(engine.view.port("b1")), "update")))
    assert not sg_flows(source, "b1")
    assert filtered_in_zone(dest, "b1", 6) and mid_stream_flows(dest, "b1")


def test_a_port_that_left_and_came_back_keeps_its_new_arrival_window_until_its_own_close():
    """Closes handed out for its earlier migrations (here, and away) come due while the window of
    its latest arrival is open: they leave it open; the last one closes it."""
    engine = engine_with_groups()
    b1 = engine.view.port("b1")
    apply(engine, engine.vif_online(Vif("b1", "tapb1", 6)))
    closes = 0

    def nb(**changes) -> None:
        nonlocal closes
        apply(engine, engine.nb_event(event(b1.replace(**changes), "update")))
        closes += len(engine.take_windows_ending())  # the daemon schedules one close for each

    def record(record_id: str, to: str, source: str) -> MigrationRecord:
        return MigrationRecord(chassis=to, source=source, state="switched", id=record_id, bound=source)

    nb(migration=record("m1", "A", "B"), binding_chassis="B")
    nb(migration=None, binding_chassis="A")  # ended here: its window runs
    nb(migration=record("m2", "B", "A"), binding_chassis="A")  # it leaves ...
    nb(migration=None, binding_chassis="B")
    nb(migration=record("m3", "A", "B"), binding_chassis="B")  # ... and comes back
    nb(migration=None, binding_chassis="A")
    assert closes >= 2 and mid_stream_flows(engine, "b1")
    for _ in range(closes - 1):  # the earlier ones come due first
        apply(engine, engine.arrival_window_closed("b1"))
        assert mid_stream_flows(engine, "b1")
    apply(engine, engine.arrival_window_closed("b1"))
    assert not mid_stream_flows(engine, "b1") and sg_flows(engine, "b1")


def sg_rows_of(plan) -> tuple[list, list]:
    """The security-group flows a plan deletes and adds (as rows: none is a FlowState flow)."""
    cookie = APP.cookie("a1")
    assert not [f for f in plan.deletes + plan.adds if f.cookie == cookie]
    return ([f for d, _ in plan.rows for f in d.flows() if f.cookie == cookie],
            [f for _, a in plan.rows for f in a.flows() if f.cookie == cookie])


def test_a_ports_security_group_flows_change_as_rows_by_exactly_what_changed():
    engine = engine_with_groups()
    assert not [owner for owner in engine.flows.installed if owner[0] == APP.name and owner[1] == "port"]
    before = {f.key: f for f in sg_flows(engine, "a1")}
    rule = SecurityGroupRule(id="r4", topic="t", secgroup="web", protocol="udp", port_range_min=53,
                             port_range_max=53, remote_ip_prefix="10.8.0.0/16")
    dels, adds = sg_rows_of(apply(engine, engine.nb_event(event(rule))))
    assert not dels and [f.key for f in adds] == [f.key for f in sg_flows(engine, "a1") if f.key not in before]
    assert len(adds) == 1 and ("udp_dst", 53, None) in adds[0].match
    assert not engine.everything()  # nothing else to send: what is installed is what is wanted
    dels, adds = sg_rows_of(apply(engine, engine.nb_event(event(rule, "delete"))))
    assert not adds and len(dels) == 1 and (dels[0].table, dels[0].priority) == (INGRESS_SG, 100)
    assert ("udp_dst", 53, None) in dels[0].match and dels[0].command == Command.DELETE_STRICT
    assert {f.key: f for f in sg_flows(engine, "a1")} == before
    dels, adds = sg_rows_of(apply(engine, engine.vif_offline("a1")))  # the port leaves: its flows go
    assert {f.key for f in dels} == set(before) and not adds and not sg_flows(engine, "a1")


def test_a_failure_making_a_ports_rows_is_an_error_and_the_port_keeps_its_flows(monkeypatch):
    engine = engine_with_groups()
    before = sg_flows(engine, "a1")

    def broken(port, view):
        raise RuntimeError("no rows today")
    monkeypatch.setattr(engine.row_port_apps[0], "port_rows", broken)
    rule = SecurityGroupRule(id="r4", topic="t", secgroup="web", protocol="udp", remote_ip_prefix="10.8.0.0/16")
    assert sg_rows_of(apply(engine, engine.nb_event(event(rule)))) == ([], [])
    assert any("port a1" in e and "no rows today" in e for e in engine.errors) and engine.stats["app_errors"]
    assert sg_flows(engine, "a1") == before


def test_a_switch_that_lost_its_zones_admits_every_local_ports_established_tcp_for_a_window():
    engine = engine_with_groups()
    assert not mid_stream_flows(engine, "a1")
    engine.zones_lost()
    assert mid_stream_flows(engine, "a1") and not mid_stream_flows(engine, "b1")  # b1 runs elsewhere
    assert engine.take_windows_ending() == ["a1"]
    plan = engine.arrival_window_closed("a1")
    assert plan.arrived == {"a1"}
    apply(engine, plan)
    assert not mid_stream_flows(engine, "a1")
