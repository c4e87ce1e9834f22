"""The compiled core makes every security-group flow of a port exactly as the Python reference does.

Oracles: tests/sg_oracle.py (the Python interpretation of the NB's rules, flow for flow), os-ken's
serializer for the bytes; tests/test_secgroups_conjunction_sandbox.py checks a real Open vSwitch.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sg_oracle
from controller.apps.secgroups import (CONJUNCTION, INGRESS_SG, MAX_CONJUNCTIONS, PROGRAM, RULE,
                                       SecurityGroupsApp)
from controller.apps.sg_rules import MEMBER_DTYPE, RULE_DTYPE, rule_rows
from controller.reconcile import flow_from_stats
from controller.view import View, Vif
from dfflow import core
from dfflow.flowbatch import FlowBatch
from dfflow.flows import Command, Conjunction
from dfflow.models import AddressPair, LogicalPort, LogicalSwitch, SecurityGroup, SecurityGroupRule, Subnet
from races import flipping, while_meddling
from test_packer import osken_flow_mods
from test_reconcile import read_back

APP = SecurityGroupsApp()
GROUPS = ("g0", "g1", "g2")
ZONE = 7


def view_of(local: LogicalPort, others: list[LogicalPort], rules: list[SecurityGroupRule],
            arriving: bool = False) -> View:
    view = View("A")
    for obj in [LogicalSwitch(id="net1", topic="t", segmentation_id=101),
                Subnet(id="s1", topic="t", lswitch="net1", cidr="10.0.0.0/8"),
                *(SecurityGroup(id=g, topic="t") for g in GROUPS), *rules, local, *others]:
        view.put(obj)
    view.set_vif(Vif(local.id, "tap-local", ZONE))
    if arriving:
        view.arrivals.add(local.id)
    return view


def compiled_flows(port: LogicalPort, view: View) -> list:
    return FlowBatch.of_rows(APP.port_rows(port, view)).flows()


def compiled_and_reference(view: View, port_id: str) -> tuple[dict, dict, int]:
    port = view.port(port_id)
    compiled = compiled_flows(port, view)
    reference = sg_oracle.port_flows(port, view, ZONE, APP.cookie(port_id))
    return {f.key: f for f in compiled}, {f.key: f for f in reference}, len(compiled)


ipv4 = st.integers(0x0A000001, 0x0AFFFFFE).map(lambda v: f"{v >> 24}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}")


@st.composite
def prefixes(draw) -> str:
    return f"{draw(ipv4)}/{draw(st.sampled_from([0, 8, 16, 24, 30, 32]))}"


@st.composite
def rules(draw, n: int) -> SecurityGroupRule:
    protocol = draw(st.sampled_from([None, "tcp", "udp", "sctp", "icmp", "dccp", "47", "6"]))
    low = high = None
    if protocol in ("tcp", "udp", "sctp", "dccp", "6") and draw(st.booleans()):
        low = draw(st.sampled_from([1, 22, 80, 1000, draw(st.integers(0, 65535))]))
        high = draw(st.sampled_from([low, 65535, min(65535, low + draw(st.integers(0, 3000)))]))
    elif protocol == "icmp" and draw(st.booleans()):
        low = draw(st.integers(0, 255))
        high = draw(st.none() | st.integers(0, 255))
    remote = draw(st.sampled_from(["none", "prefix", "group", "group"]))
    return SecurityGroupRule(
        id=f"r{n:03d}", topic="t", secgroup=draw(st.sampled_from(GROUPS)),
        direction=draw(st.sampled_from(["ingress", "egress"])),
        ethertype=draw(st.sampled_from(["IPv4", "IPv4", "IPv4", "IPv6"])), protocol=protocol,
        port_range_min=low, port_range_max=high,
        remote_ip_prefix=draw(prefixes()) if remote == "prefix" else None,
        remote_group=draw(st.sampled_from(GROUPS)) if remote == "group" else None)


@st.composite
def ports(draw, n: int) -> LogicalPort:
    ips = draw(st.lists(ipv4, min_size=1, max_size=3, unique=True))
    pairs = [AddressPair(draw(prefixes()) if draw(st.booleans()) else draw(ipv4),
                         draw(st.sampled_from(["fa:16:3e:00:10:01", f"fa:16:3e:00:00:{n + 1:02x}"])))
             for _ in range(draw(st.integers(0, 2)))]
    return LogicalPort(id=f"p{n}", topic="t", lswitch="net1", mac=f"fa:16:3e:00:00:{n + 1:02x}", ips=ips,
                       binding_chassis="A" if n == 0 else "B",
                       security_groups=draw(st.lists(st.sampled_from(GROUPS), max_size=3, unique=True)),
                       allowed_address_pairs=pairs)


@st.composite
def clouds(draw) -> tuple[View, int]:
    all_ports = [draw(ports(n)) for n in range(draw(st.integers(1, 12)))]
    all_rules = [draw(rules(n)) for n in range(draw(st.integers(0, 14)))]
    return view_of(all_ports[0], all_ports[1:], all_rules, arriving=draw(st.booleans())), len(all_rules)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clouds())
def test_the_compiled_core_makes_the_python_references_flows_flow_for_flow(cloud):
    view, _ = cloud
    compiled, reference, made = compiled_and_reference(view, "p0")
    assert compiled == reference
    assert made == len(compiled)  # each key made once


def many_members(n: int) -> list[LogicalPort]:
    return [LogicalPort(id=f"m{i}", topic="t", lswitch="net1", mac=f"fa:16:3e:00:01:{i:02x}",
                        ips=[f"10.0.1.{i + 1}"], binding_chassis="B", security_groups=["g1"]) for i in range(n)]


def local_port(groups=("g0",)) -> LogicalPort:
    return LogicalPort(id="p0", topic="t", lswitch="net1", mac="fa:16:3e:00:00:01", ips=["10.0.0.5"],
                       binding_chassis="A", security_groups=list(groups))


def rule(n: int, **fields) -> SecurityGroupRule:
    return SecurityGroupRule(id=f"r{n:03d}", topic="t", secgroup="g0", **fields)


def test_a_large_remote_group_over_a_port_range_grows_as_members_plus_prefixes():
    view = view_of(local_port(), many_members(40), [rule(1, protocol="tcp", port_range_min=1000,
                                                         port_range_max=1999, remote_group="g1")])
    flows = list(compiled_and_reference(view, "p0")[0].values())
    n_prefixes = len(sg_oracle.range_prefixes(1000, 1999))
    conjoined = [f for f in flows if f.table == INGRESS_SG and f.priority == CONJUNCTION]
    assert len(conjoined) == 40 + n_prefixes + 1  # not 40 * n_prefixes
    assert sum(("conj_id", ZONE << 16 | 1, None) in f.match for f in conjoined) == 1
    assert sum(f.actions == (Conjunction(ZONE << 16 | 1, 1, 2),) for f in conjoined) == 40
    assert sum(f.actions == (Conjunction(ZONE << 16 | 1, 2, 2),) for f in conjoined) == n_prefixes


def test_a_small_group_or_a_single_port_stays_plain_flows():
    view = view_of(local_port(), many_members(2), [
        rule(1, protocol="tcp", port_range_min=22, port_range_max=22, remote_group="g1"),
        rule(2, protocol="tcp", port_range_min=1000, port_range_max=1003, remote_group="g1")])
    flows = list(compiled_and_reference(view, "p0")[0].values())
    assert not [f for f in flows if f.priority == CONJUNCTION]
    assert len([f for f in flows if f.table == INGRESS_SG and f.priority == RULE]) == 2 + 2


def test_past_the_conjunctions_a_row_holds_the_rules_are_plain_and_shared_clauses_carry_one_action_each():
    n = MAX_CONJUNCTIONS + 1
    view = view_of(local_port(), many_members(5), [
        rule(i, protocol="udp", port_range_min=1000 + 100 * i, port_range_max=1050 + 100 * i, remote_group="g1")
        for i in range(n)])
    compiled, reference, made = compiled_and_reference(view, "p0")
    assert compiled == reference and made == len(compiled)
    member_clauses = [f for f in compiled.values() if f.priority == CONJUNCTION and
                      any(name == "ipv4_src" for name, _, _ in f.match)]
    assert len(member_clauses) == 5
    assert all(len(f.actions) == MAX_CONJUNCTIONS for f in member_clauses)
    assert [f for f in compiled.values() if f.priority == RULE]  # the last rule, plain


def test_secgroup_flows_pack_byte_for_byte_as_osken_and_read_back_from_a_dump():
    view = view_of(local_port(), many_members(6), [
        rule(1, protocol="tcp", port_range_min=1000, port_range_max=1999, remote_group="g1"),
        rule(2, protocol="icmp", port_range_min=8, port_range_max=0, remote_ip_prefix="10.9.0.0/16"),
        rule(3, direction="egress")], arriving=True)
    rows = APP.port_rows(view.port("p0"), view)
    flows = FlowBatch.of_rows(rows).flows()
    assert core.pack_flow_mods(FlowBatch.of_rows(rows), 1) == osken_flow_mods(flows, 1)
    for flow in flows:
        assert flow_from_stats(read_back(flow)) == flow.as_command(Command.ADD)


def test_a_port_with_port_security_and_no_group_gets_its_zone_and_no_rule():
    view = view_of(local_port(groups=()), [], [])
    flows = compiled_flows(view.port("p0"), view)
    assert {f.table for f in flows} == {12, 47}  # through conntrack, and nothing allows a new connection
    open_port = local_port(groups=()).replace(port_security=False)
    assert compiled_flows(open_port, view_of(open_port, [], [])) == []


def rows_with(**changes) -> np.ndarray:
    rows, _ = rule_rows([rule(1, protocol="tcp", port_range_min=80, port_range_max=80)], {})
    for name, value in changes.items():
        rows[0][name] = value
    return rows


BAD = [
    (dict(zone=0), r"zone: 0 is not a conntrack zone"),
    (dict(zone=70000), r"zone: 70000 is not a conntrack zone"),
    (dict(rules=rows_with(direction=2)), r"rules\[0\]\.direction: 2"),
    (dict(rules=rows_with(ip_proto=300)), r"rules\[0\]\.ip_proto: 300 out of range"),
    (dict(rules=rows_with(low=90)), r"rules\[0\]\.low/high: port range 90..80"),
    (dict(rules=rows_with(ip_proto=33)), r"rules\[0\]\.flags: protocol 33 has no port range"),
    (dict(rules=rows_with(flags=core.SG_FLAG_GROUP | 3, member_count=2)),
     r"rules\[0\]\.member_start/member_count: 0\+2 runs past the 0 members"),
    (dict(rules=rows_with(remote_ip=0x0A000001, remote_mask=0xFFFFFF00)), r"rules\[0\]\.remote_ip: 0xa000001"),
    (dict(members=np.array([(0x0A000001, 0xFF000000)], MEMBER_DTYPE)), r"members\[0\]\.ip: 0xa000001"),
    (dict(macs=[1 << 48]), r"macs\[0\]: 0x1000000000000 is wider than 48 bits"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_bad_rule_rows_are_refused_naming_the_field(change, message):
    args = dict(zone=ZONE, vni=101, cookie=1, macs=[0xFA163E000001], rules=rows_with(),
                members=np.zeros(0, MEMBER_DTYPE), arriving=False) | change
    with pytest.raises(ValueError, match=message):
        core.compile_secgroups(PROGRAM, args["zone"], args["vni"], args["cookie"], args["macs"], args["rules"],
                               args["members"], args["arriving"])


def test_rows_of_another_record_are_refused():
    with pytest.raises(TypeError, match=r"rules: expected a C-contiguous array of 72-byte records"):
        core.compile_secgroups(PROGRAM, ZONE, 101, 1, [], np.zeros(1, [("direction", "<u8")]),
                               np.zeros(0, MEMBER_DTYPE), False)


def test_rules_openflow_cannot_express_get_no_row():
    rows, _ = rule_rows([rule(1, protocol="dccp", port_range_min=5, port_range_max=6),
                         rule(2, ethertype="IPv6"), rule(3, protocol="tcp", port_range_min=1, port_range_max=65535)], {})
    assert len(rows) == 1 and rows[0]["flags"] == 0 and rows.dtype == RULE_DTYPE


def group_rules(n: int, low: int, high: int, member_count: int) -> np.ndarray:
    """n ingress TCP rules over ports low..high from members[0:member_count]."""
    rows = np.zeros(n, RULE_DTYPE)
    rows["direction"], rows["ip_proto"], rows["low"], rows["high"] = core.SG_INGRESS, 6, low, high
    rows["flags"] = core.SG_FLAG_GROUP | core.SG_FLAG_LOW | core.SG_FLAG_HIGH
    rows["member_count"] = member_count
    return rows


@pytest.mark.parametrize("column,rules", [
    ("member_count", group_rules(300, 80, 80, 2)),        # 2 members <-> 3: a flow more per rule
    ("high", group_rules(300, 1000, 1999, 2)),            # 1000..1999 <-> 1000..1998: 7 prefixes <-> 10
], ids=["member_count", "port_range"])
def test_rules_changed_while_compiling_make_the_flows_they_counted(column, rules):
    """compile_secgroups checks the rules, counts their flows without the GIL, sizes its output, then
    writes them: rules changed in place meanwhile (the caller's arrays may be) must not write more flows
    than were counted (before the fix: SIGSEGV or heap corruption), and what is made is whole."""
    members = np.array([(0x0A000001 + i, 0xFFFFFFFF) for i in range(4)], MEMBER_DTYPE)
    macs = np.array([0xFA163E000001], np.uint64)

    def compile_() -> None:
        made = core.compile_secgroups(PROGRAM, ZONE, 101, 1, macs, rules, members, False)
        core.validate_flows(FlowBatch.of_rows(made))

    outcomes = while_meddling(flipping(rules[column], 1), compile_)
    assert outcomes["ok"] > 0 and not outcomes["ValueError"], outcomes
