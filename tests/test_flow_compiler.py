"""The compiled port-flow compiler runs the apps' programs exactly as the Python apps do.

Oracles: the Python interpreter of the same programs (controller.templates), os-ken's
serializer for the bytes, and a real Open vSwitch for what the bundles install.
"""
from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from benchmarks.compile import Cloud, Datapath13
from controller import compiler
from controller.apps.dnat import DNAT_PORT_FLOWS
from controller.apps.l2 import L2_PORT_FLOWS
from controller.apps.l3 import L3_PORT_FLOWS
from controller.flowstate import FlowState
from controller.templates import AddressPairFacts, FloatingIpFacts, PortFacts, PortRole
from dfflow import core
from dfflow.flowbatch import FlowBatch
from dfflow.flows import Command, Flow
from tests.test_packer import (ATOMIC_ORDERED, DP, Switch, expected_in_ovs, ofp, osken_bundle, parse_dump_flows,
                               parser, ser)

PROGRAMS = (L2_PORT_FLOWS, L3_PORT_FLOWS, DNAT_PORT_FLOWS)
ALL_APPS = compiler.compile_program(*PROGRAMS)
PER_APP = {p.app_id: compiler.compile_program(p) for p in PROGRAMS}

u24 = st.integers(1, (1 << 24) - 1)
mac = st.integers(1, (1 << 48) - 1)
ipv4 = st.integers(1, (1 << 32) - 2)
ofport = st.integers(1, 0xFFFFFF00)


@st.composite
def address_pair(draw) -> AddressPairFacts:
    mask = (0xFFFFFFFF << (32 - draw(st.integers(8, 32)))) & 0xFFFFFFFF
    return AddressPairFacts(draw(mac), draw(ipv4) & mask, mask)


@st.composite
def port_facts(draw) -> PortFacts:
    # as the NB holds them: each floating IP its own address and fixed IP (a second one is refused)
    fips = draw(st.lists(st.builds(FloatingIpFacts, ipv4, mac, ipv4, u24, mac), max_size=2,
                         unique_by=(lambda f: f.fip, lambda f: f.fixed_ip)))
    pairs = draw(st.lists(address_pair(), max_size=3, unique=True))
    return PortFacts(draw(st.integers(0, (1 << 56) - 1)), draw(u24), draw(mac), draw(st.booleans()),
                     draw(st.booleans()), tuple(draw(st.lists(ipv4, max_size=3, unique=True))), tuple(fips),
                     tuple(sorted(pairs, key=lambda p: not p.is_host)))


@st.composite
def roles(draw, gated: bool = True) -> PortRole | None:
    kind = draw(st.sampled_from(["none", "local", "remote"]))
    copy = draw(st.sampled_from([0, 0, draw(ofport)]))
    if kind == "none":
        return None
    if kind == "local":
        return PortRole(True, ofport=draw(ofport), copy_tunnel=copy, gated=gated and draw(st.booleans()))
    return PortRole(False, tunnel=draw(ofport), copy_tunnel=copy)


def table_of(*facts: PortFacts) -> compiler.PortTable:
    table = compiler.PortTable(capacity=2)
    for i, f in enumerate(facts):
        table.set(f"p{i}", f)
    return table


def flows_of(rows: np.ndarray) -> list[Flow]:
    return compiler.flows_of_rows(rows)


def python_diff(program, facts: PortFacts, old: PortRole | None, new: PortRole | None) -> tuple[set, list[Flow]]:
    """What FlowState.plan (the engine's Python path) changes between the two roles."""
    state = FlowState()
    owner = ("app", "port", "p0")
    state.commit(state.plan({owner: program.flows(facts, old)}))
    plan = state.plan({owner: program.flows(facts, new)})
    return {(f.table, f.priority, f.match, f.cookie) for f in plan.deletes}, plan.adds


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(port_facts(), roles())
def test_compiled_programs_make_the_python_apps_flows_flow_for_flow(facts, role):
    table = table_of(facts)
    for program in PROGRAMS:
        dels, adds = compiler.compile_port_changes(PER_APP[program.app_id], table, [(0, None, role)])
        assert len(dels) == 0
        assert flows_of(adds) == program.flows(facts, role)


def _conflicting(flows) -> bool:
    """Two different flows under one key: colliding generated addresses (a pair's or a floating IP's MAC
    that is the port's own, with other actions); the oracle keeps one of them and logs an error, so it
    has no answer to compare with."""
    held: dict = {}
    return any(held.setdefault((f.table, f.priority, f.match), f) != f for f in flows)


# Two templates make the same flow when a floating IP's MAC is its port's own on the port's own network:
# the flow is sent once, as FlowState holds it once.
_SHARED_FLOW_FACTS = PortFacts(0, 1, 1, False, False, (),
                               (FloatingIpFacts(1, 1, 1, 1, 1), FloatingIpFacts(2, 1, 2, 1, 1)), ())
_REMOTE = PortRole(local=False, ofport=0, tunnel=3777, copy_tunnel=0, gated=False)
# Moves that change only the location: one that keeps every flow key (only the changed rows are made,
# as adds) and one whose location is in a match (the old rows are made and diffed).
_ROUTED_FACTS = PortFacts(7, 101, 0xFA163E000001, True, True, (0x0A000001, 0x0A000002),
                          (FloatingIpFacts(0xC0000232, 0xFA163EBB0001, 0x0A000001, 200, 0xFA163EAA0001),))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(port_facts(), roles(), roles())
@example(_SHARED_FLOW_FACTS, None, _REMOTE)
@example(_ROUTED_FACTS, PortRole(False, tunnel=10), PortRole(False, tunnel=11))
@example(_ROUTED_FACTS, PortRole(False, tunnel=10, copy_tunnel=4), PortRole(False, tunnel=10, copy_tunnel=5))
@example(_ROUTED_FACTS, PortRole(True, ofport=5, copy_tunnel=4), PortRole(True, ofport=6, copy_tunnel=4))
def test_a_role_change_compiles_to_exactly_the_python_plan(facts, old, new):
    table = table_of(facts)
    for program in PROGRAMS:
        assume(not _conflicting(program.flows(facts, old)) and not _conflicting(program.flows(facts, new)))
        dels, adds = compiler.compile_port_changes(PER_APP[program.app_id], table, [(0, old, new)])
        want_deletes, want_adds = python_diff(program, facts, old, new)
        deleted = flows_of(dels)
        assert all(f.command == Command.DELETE_STRICT and not f.actions for f in deleted)
        assert {(f.table, f.priority, f.match, f.cookie) for f in deleted} == want_deletes
        assert sorted(map(repr, flows_of(adds))) == sorted(map(repr, want_adds))


# A port leaves its remote role for a gated local one whose source is behind the same tunnel.
_LEFT_FOR_GATED = (PortFacts(0, 1, 1, False, False, (), (), ()),
                   PortRole(local=False, ofport=0, tunnel=1, copy_tunnel=0, gated=False),
                   PortRole(local=True, ofport=1, tunnel=0, copy_tunnel=1, gated=True))
# A sender at an `announce` migration's activation: it sent the port's traffic to the destination
# alone, and still does; both roles have the same lookup flow, made by two templates (two prototype
# rows), so it is not sent again.
_SENDER_AT_ACTIVATION = (PortFacts(0, 1, 1, False, False, (), (), ()),
                         PortRole(local=False, ofport=0, tunnel=1, copy_tunnel=2, gated=False),
                         PortRole(local=False, ofport=0, tunnel=2, copy_tunnel=0, gated=False))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(port_facts(), port_facts(), roles(), roles())
@example(dataclasses.replace(_SHARED_FLOW_FACTS, fips=()), _SHARED_FLOW_FACTS,
         PortRole(local=True, ofport=1, tunnel=0, copy_tunnel=0, gated=False), _REMOTE)
@example(_LEFT_FOR_GATED[0], *_LEFT_FOR_GATED)
@example(_SENDER_AT_ACTIVATION[0], *_SENDER_AT_ACTIVATION)
def test_a_facts_change_compiles_to_exactly_the_python_plan(before, after, old, new):
    """The port's IPs, floating IPs or routers change (under the same or another role)."""
    after = dataclasses.replace(after, object_hash=before.object_hash)  # the same port
    assume(old is not None and new is not None)  # (without a role before or after, nothing is kept)
    for program in PROGRAMS:
        assume(not _conflicting(program.flows(before, old)) and not _conflicting(program.flows(after, new)))
        table = table_of(before)
        python = FlowState()
        owner = ("app", "port", "p0")
        python.commit(python.plan({owner: program.flows(before, old)}))
        plan = python.plan({owner: program.flows(after, new)})
        dels, adds = compiler.compile_facts_changes(PER_APP[program.app_id], table, [("p0", after, old, new)])
        assert table.facts["p0"] == after
        deleted = flows_of(dels)
        assert all(f.command == Command.DELETE_STRICT and not f.actions for f in deleted)
        assert ({(f.table, f.priority, f.match, f.cookie) for f in deleted}
                == {(f.table, f.priority, f.match, f.cookie) for f in plan.deletes})
        assert sorted(map(repr, flows_of(adds))) == sorted(map(repr, plan.adds))



def _facts_change_rows(program: core.CompiledProgram) -> tuple[bytes, bytes, tuple[str, ...]]:
    facts, old, new = _LEFT_FOR_GATED
    dels, adds = compiler.compile_facts_changes(program, table_of(facts), [("p0", facts, old, new)])
    return dels.tobytes(), adds.tobytes(), tuple(sorted(map(repr, flows_of(adds))))


def _python_adds(program, facts: PortFacts, old: PortRole, new: PortRole) -> tuple[str, ...]:
    python = FlowState()
    owner = ("app", "port", "p0")
    python.commit(python.plan({owner: program.flows(facts, old)}))
    return tuple(sorted(map(repr, python.plan({owner: program.flows(facts, new)}).adds)))


def test_prototypes_whose_padding_differs_compile_the_rows_of_clean_ones(monkeypatch):
    """Rows are compared byte for byte; numpy copies records field by field, so a copy's padding is
    whatever the allocator left there. The program zeroes it: garbage there never reaches a row."""
    made = {}
    real = core.CompiledProgram

    def with_garbage_in_the_padding(layout, protos, entries):
        dirty = np.frombuffer(bytearray(i % 251 + 1 for i in range(len(protos)) for _ in range(protos.itemsize)),
                              protos.dtype)  # each prototype's padding a different byte
        dirty[...] = protos  # numpy assigns records field by field: the padding keeps its bytes
        made["protos"] = protos.tobytes(), dirty.tobytes()
        return real(layout, dirty, entries)

    monkeypatch.setattr(core, "CompiledProgram", with_garbage_in_the_padding)
    dirty = compiler.compile_program(L2_PORT_FLOWS)
    monkeypatch.undo()
    clean_protos, dirty_protos = made["protos"]
    assert clean_protos != dirty_protos and dirty_protos.count(0) < clean_protos.count(0)
    assert _facts_change_rows(dirty) == _facts_change_rows(compiler.compile_program(L2_PORT_FLOWS))
    assert _facts_change_rows(dirty)[2] == _python_adds(L2_PORT_FLOWS, *_LEFT_FOR_GATED)


def test_programs_made_over_a_dirty_heap_compile_a_change_identically():
    """The same change, compiled by programs made one after another (the heap between them filled
    with junk and freed, as a long-running agent's is), is the same rows every time: the Python plan."""
    want = _python_adds(L2_PORT_FLOWS, *_LEFT_FOR_GATED)
    outputs = set()
    for round_ in range(24):
        junk = [np.full(n << 10, 0x9A + round_, np.uint8) for n in range(8, 64) for _ in range(2)]
        del junk
        program = compiler.compile_program(L2_PORT_FLOWS)
        compiler.compile_port_changes(program, table_of(_SHARED_FLOW_FACTS), [(0, None, _REMOTE)])
        outputs.add(_facts_change_rows(program))
    assert len(outputs) == 1
    assert next(iter(outputs))[2] == want


def test_rows_that_differ_only_in_their_padding_are_one_flow_and_come_out_with_it_zeroed():
    rows = compiler.compile_port_changes(PER_APP[1], table_of(_SHARED_FLOW_FACTS), [(0, None, _REMOTE)])[1]
    garbage = np.frombuffer(bytearray(b"\x9a" * rows.nbytes), rows.dtype)
    garbage[...] = rows  # numpy assigns records field by field: the padding keeps its 0x9a
    assert garbage.tobytes() != rows.tobytes()
    assert [len(r) for r in compiler.diff_rows(rows, garbage)] == [0, 0]
    assert len(compiler.distinct_rows(np.concatenate([rows, garbage]))) == len(rows)
    dels, adds = compiler.diff_rows(rows[:1], garbage)
    assert len(dels) == 0 and adds.tobytes() == rows[1:].tobytes()


def _numbers(before: PortFacts, after: PortFacts, *roles: PortRole) -> set[int]:
    """The addresses, networks and VIFs a port's flows match on."""
    return ({n for f in (before, after) for n in (f.vni, f.mac, *f.ipv4s)}
            | {n for f in (before, after) for fip in f.fips for n in (fip.fip, fip.fixed_ip, fip.ext_vni, fip.fip_mac)}
            | {n for f in (before, after) for pair in f.pairs for n in (pair.ip, pair.mac)}
            | {r.ofport for r in roles if r.local})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(port_facts(), port_facts(), port_facts(), port_facts(), *[roles().filter(bool)] * 4)
def test_the_facts_changes_of_several_ports_compile_together_to_what_each_compiles_alone(
        before0, after0, before1, after1, old0, new0, old1, new1):
    after0 = dataclasses.replace(after0, object_hash=before0.object_hash)
    before1 = dataclasses.replace(before1, object_hash=before0.object_hash ^ 1)
    after1 = dataclasses.replace(after1, object_hash=before1.object_hash, mac=before1.mac)
    # two ports: no address, network or VIF of one is ever the other's
    assume(not _numbers(before0, after0, old0, new0) & _numbers(before1, after1, old1, new1))
    changes = [("p0", after0, old0, new0), ("p1", after1, old1, new1)]
    alone_dels, alone_adds = [], []
    for change in changes:
        table = table_of(before0, before1)
        dels, adds = compiler.compile_facts_changes(ALL_APPS, table, [change])
        alone_dels += flows_of(dels)
        alone_adds += flows_of(adds)
    table = table_of(before0, before1)
    dels, adds = compiler.compile_facts_changes(ALL_APPS, table, changes)
    assert table.facts == {"p0": after0, "p1": after1}
    assert sorted(map(repr, flows_of(dels))) == sorted(map(repr, alone_dels))
    assert sorted(map(repr, flows_of(adds))) == sorted(map(repr, alone_adds))


def test_a_pre_programmed_destination_compiles_its_learn_and_resubmit_flows_as_rows_naming_their_template():
    facts = PortFacts(7, 101, 0xFA163E000001, True, False, (0x0A000001,))
    gated = PortRole(True, ofport=5, copy_tunnel=9, gated=True)
    dels, adds = compiler.compile_port_changes(PER_APP[1], table_of(facts), [(0, None, gated)])
    assert len(dels) == 0
    made = flows_of(adds)
    assert made == L2_PORT_FLOWS.flows(facts, gated)
    assert {type(a).__name__ for f in made for a in f.actions} >= {"Learn", "Resubmit"}
    # leaving it (activation: gated -> open) deletes the gate's flows by key
    dels, adds = compiler.compile_port_changes(PER_APP[1], table_of(facts), [(0, gated, PortRole(True, ofport=5))])
    assert {f.table for f in flows_of(dels)} >= {0}  # the announcement flows in classify
    assert flows_of(adds)


def test_adds_that_share_a_key_but_differ_are_counted_and_identical_ones_are_made_once():
    one_mac = [PortFacts(7, 101, 0xFA163E000001), PortFacts(8, 101, 0xFA163E000001)]
    table = table_of(*one_mac)
    made = compiler.compile_port_changes(ALL_APPS, table, [(0, None, PortRole(False, tunnel=10)),
                                                           (1, None, PortRole(False, tunnel=11))])
    assert made.key_conflicts == 1  # the two ports' L2 lookups: one key, two outputs
    assert sorted(f.actions[-1].port for f in flows_of(made[1]) if f.table == 50) == [10, 11]
    # the same port's change twice: every add once, and no conflict
    twice = compiler.compile_port_changes(ALL_APPS, table, [(0, None, PortRole(False, tunnel=10))] * 2)
    alone = compiler.compile_port_changes(ALL_APPS, table, [(0, None, PortRole(False, tunnel=10))])
    assert twice.key_conflicts == 0 and twice[1].tobytes() == alone[1].tobytes()


def test_a_change_is_true_only_when_it_sends_a_row():
    """What the engine keeps of a plan's changes (`if change`): one that makes no row on either side
    is false, as an empty plan is, though it still unpacks into its two (empty) sides."""
    table = table_of(PortFacts(7, 101, 0xFA163E000001))
    remote = PortRole(False, tunnel=10)
    unchanged = compiler.compile_port_changes(ALL_APPS, table, [(0, remote, remote)])
    assert not unchanged and [len(side) for side in unchanged] == [0, 0]
    assert not compiler.compile_port_changes(ALL_APPS, table, [])
    moved = compiler.compile_port_changes(ALL_APPS, table, [(0, remote, PortRole(False, tunnel=11))])
    assert moved and moved.deletes.n == 0 and moved.adds.n > 0
    gone = compiler.compile_port_changes(ALL_APPS, table, [(0, remote, None)])
    assert gone and gone.deletes.n > 0 and gone.adds.n == 0


def test_a_move_between_remote_chassis_rewrites_only_the_lookup_flows():
    facts = PortFacts(7, 101, 0xFA163E000001, True, True, (0x0A000001, 0x0A000002),
                      (FloatingIpFacts(0xC0000232, 0xFA163EBB0001, 0x0A000001, 200, 0xFA163EAA0001),))
    dels, adds = compiler.compile_port_changes(ALL_APPS, table_of(facts), [(0, PortRole(False, tunnel=10),
                                                                         PortRole(False, tunnel=11))])
    assert len(dels) == 0
    assert sorted((f.table, f.actions[-1].port) for f in flows_of(adds)) == [(50, 11), (50, 11)]


@pytest.mark.parametrize("change, message", [
    ((5, None, PortRole(True, ofport=5)), "change 0: port index 5 is not in the port table"),
    ((-1, None, PortRole(True, ofport=5)), "change 0: port row -1"),
    ((0, None, PortRole(True, ofport=-5)), "change 0: new role .*: ofport"),
    ((0, None, PortRole(False, tunnel="t")), "change 0: new role .*: tunnel"),
    ((0, "local", PortRole(True, ofport=5)), "change 0: old role 'local'"),
    ((0, (True, 5), None), r"change 0: old role \(True, 5\): expected a tuple of local, ofport, tunnel"),
])
def test_bad_changes_raise_naming_the_field(change, message):
    table = table_of(PortFacts(7, 101, 0xFA163E000001))
    with pytest.raises(ValueError, match=message):
        compiler.compile_port_changes(ALL_APPS, table, [change])


def test_columns_that_are_not_the_records_the_core_reads_are_refused_naming_them():
    table = table_of(PortFacts(7, 101, 0xFA163E000001))
    with pytest.raises(TypeError, match="ips"):
        core.PortColumns(table.ports, table.ips.astype(np.float64), table.fips, table.pairs)
    with pytest.raises(TypeError, match="fips"):
        core.PortColumns(table.ports, table.ips, table.ips, table.pairs)


def test_a_port_table_that_grew_is_compiled_from_its_new_columns():
    table = compiler.PortTable(capacity=1)
    facts = [PortFacts(i + 1, 101, 0xFA163E000001 + i, ipv4s=(0x0A000001 + i, 0x0A000101 + i),
                       fips=(FloatingIpFacts(0xC0000201 + i, 0xFA163EBB0001, 0x0A000001 + i, 200, 0xFA163EAA0001),))
             for i in range(9)]
    for i, f in enumerate(facts):
        table.set(f"p{i}", f)
    role = PortRole(True, ofport=5)
    for i, f in enumerate(facts):
        _, adds = compiler.compile_port_changes(ALL_APPS, table, [(table.index[f"p{i}"], None, role)])
        assert sorted(map(repr, flows_of(adds))) == sorted(repr(fl) for prog in PROGRAMS for fl in prog.flows(f, role))


def test_a_port_whose_addresses_run_past_the_column_is_refused():
    table = table_of(PortFacts(7, 101, 0xFA163E000001, ipv4s=(1, 2)))
    table.ports[0]["ip_count"] = 99
    with pytest.raises(ValueError, match="ip_start/ip_count"):
        compiler.compile_port_changes(ALL_APPS, table, [(0, None, PortRole(True, ofport=5))])


def test_an_out_of_range_vni_is_refused_before_anything_is_packed():
    table = table_of(PortFacts(7, 1 << 24, 0xFA163E000001))
    dels, adds = compiler.compile_port_changes(ALL_APPS, table, [(0, None, PortRole(False, tunnel=3))])
    with pytest.raises(ValueError, match="tunnel_id"):
        compiler.flow_mods(Datapath13(), [FlowBatch.of_rows(dels), FlowBatch.of_rows(adds)])


def test_an_empty_change_is_refused():
    cloud = Cloud(ports=10, chassis=3, seed=1)
    with pytest.raises(ValueError, match="empty change"):
        cloud.migrate([])


def test_the_port_table_reuses_rows_and_compacts_its_columns():
    table = compiler.PortTable(capacity=2)
    for round_ in range(50):
        for i in range(5):
            table.set(f"p{i}", PortFacts(i, 100 + round_, 1 + i, ipv4s=(round_ + 1, round_ + 2)))
    assert len(table) == 5 and table.n_ips <= 4 * 5 * 2
    table.drop("p3")
    row = table.set("p9", PortFacts(9, 1, 2))
    assert row == 3
    for port_id, facts in table.facts.items():
        rec = table.ports[table.index[port_id]]
        assert tuple(table.ips[rec["ip_start"]:rec["ip_start"] + rec["ip_count"]]) == facts.ipv4s


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(2, 6))
def test_every_chassis_bundle_is_byte_identical_to_osken(seed, k, n_chassis):
    cloud = Cloud(ports=12, chassis=n_chassis, seed=seed)
    moves = cloud.evacuation(0, k)
    buf, offsets = cloud.migrate(moves, xid_start=100, bundle_id_start=7)
    xid = 100
    for c in range(n_chassis):
        dels, adds = cloud.python_plan(moves, c)
        flows = [Flow(f.table, f.priority, f.match, cookie=f.cookie, command=Command.DELETE_STRICT) for f in dels]
        flows += adds
        want = agent_numbered_bundle(flows, 7 + c, xid) if flows else b""
        assert buf[offsets[c]:offsets[c + 1]] == want, f"chassis {c}"
        xid += len(flows) + 2 if flows else 0


def agent_numbered_bundle(flows: list[Flow], bundle_id: int, xid: int) -> bytes:
    """os-ken's bundle of `flows` numbered as the agent numbers it: the flow mods from `xid` (each add
    carrying its flow mod's), then the open and the commit."""
    open_, commit = (parser.ONFBundleCtrlMsg(DP, bundle_id, kind, ATOMIC_ORDERED, [])
                     for kind in (ofp.ONF_BCT_OPEN_REQUEST, ofp.ONF_BCT_COMMIT_REQUEST))
    adds = osken_bundle(flows, bundle_id, xid - 1, commit=False)[core.BUNDLE_CTRL_LEN:]
    return ser(open_, xid + len(flows)) + adds + ser(commit, xid + len(flows) + 1)


def transition_kinds(cloud: Cloud, moves) -> set[tuple[str, str]]:
    """The (old, new) kinds of the moved ports' roles over every chassis ("local" or "remote")."""
    kind = {True: "local", False: "remote"}
    return {(kind[cloud.role(p, c, int(cloud.host[p]), dest=False).local], kind[cloud.role(p, c, d, dest=True).local])
            for p, d in moves for c in range(cloud.n_chassis)}


def test_the_core_loop_frames_every_chassis_bundle_as_the_agent_does():
    cloud = Cloud(ports=16, chassis=4, seed=5)
    one, evacuation = cloud.one_migration(1), cloud.evacuation(0, 3)
    assert transition_kinds(cloud, one) == transition_kinds(cloud, evacuation) == {
        ("local", "remote"), ("remote", "local"), ("remote", "remote")}
    # (its buffer reused: a smaller change after a larger one, and the larger again)
    for moves, xid, bid in ((evacuation, 1, 1), (one, 77, 9), (evacuation, 0x7FFFFFF0, 3)):
        buf, offsets = cloud.migrate_core(moves, xid_start=xid, bundle_id_start=bid)
        want, want_offsets = cloud.migrate(moves, xid_start=xid, bundle_id_start=bid)
        assert offsets.tolist() == want_offsets
        assert all(offsets[c + 1] > offsets[c] for c in range(cloud.n_chassis))  # a bundle on every chassis
        assert bytes(buf) == want


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(1, 5), st.integers(2, 6))
def test_the_core_loop_is_byte_identical_to_the_agent_for_any_evacuation(seed, k, n_chassis):
    cloud = Cloud(ports=12, chassis=n_chassis, seed=seed)
    moves = cloud.evacuation(seed % n_chassis, k)
    buf, offsets = cloud.migrate_core(moves, xid_start=100, bundle_id_start=7)
    assert (bytes(buf), offsets.tolist()) == cloud.migrate(moves, xid_start=100, bundle_id_start=7)


@pytest.mark.parametrize("moves, named", [
    ([], "empty change"),
    ([(0, 1), (12, 2)], "move 1: port 12 is not in the cloud"),
    ([(-1, 1)], "move 0: port -1 is not in the cloud"),
    ([(0, 1), (2, 3)], "move 1: port 2 from chassis 2 to 3: a chassis outside"),
])
def test_a_bad_move_is_refused_by_the_core_loop_naming_it(moves, named):
    cloud = Cloud(ports=12, chassis=3, seed=1)
    with pytest.raises(ValueError, match=named):
        cloud.migrate_core(moves)


def test_ovs_installs_what_the_python_apps_would_after_a_compiled_migration(ovs):
    cloud = Cloud(ports=20, chassis=3, seed=3)
    before = [f for p in range(len(cloud.ports)) for f in cloud.python_flows(p, chassis=2)]
    moves = cloud.evacuation(0, 6)
    buf, offsets = cloud.migrate(moves, xid_start=1, bundle_id_start=1)
    after = dict(cloud.python_state(chassis=2, moves=moves))

    async def run() -> None:
        ovs.ofctl("del-flows", "br-int")
        async with Switch(ovs) as switch:
            switch.send(compiler.flow_mods(Datapath13(), before))  # (a local port's classify resubmits: os-ken's)
            assert not [m for m in await switch.barrier() if type(m).__name__ == "OFPErrorMsg"]
            switch.send(buf[offsets[2]:offsets[3]])
            errors = [m for m in await switch.barrier() if type(m).__name__ == "OFPErrorMsg"]
            assert not errors
    asyncio.run(run())
    assert parse_dump_flows(ovs.ofctl("dump-flows", "br-int")) == expected_in_ovs(list(after.values()))


def test_no_memory_growth_over_10000_compiled_migrations():
    from tests.test_packer import _rss_kib
    cloud = Cloud(ports=40, chassis=10, seed=2)
    moves = cloud.evacuation(0, 2)
    table = table_of(PortFacts(7, 101, 0xFA163E000001, ipv4s=(1,)))

    def round_() -> None:
        cloud.migrate(moves)  # compile_port_changes, flow_mods and the bundle framing, on 10 chassis
        cloud.migrate_core(moves)  # the same in one C loop (compile_transitions, frame_packed_bundle)
        good = (0, None, PortRole(True, ofport=5))
        for bad in ([(99, None, PortRole(True, ofport=5, gated=True))],  # the error paths too
                    [good, (0, None, PortRole(True, ofport=-1))], [good, good, (-1, None, None)]):
            try:
                compiler.compile_port_changes(PER_APP[1], table, bad)
            except ValueError:
                pass

    for _ in range(200):
        round_()
    rss0 = _rss_kib()
    for _ in range(10_000):
        round_()
    assert _rss_kib() - rss0 < 4 * 1024, f"RSS grew by {_rss_kib() - rss0} KiB"


@pytest.mark.parametrize("role, field", [
    (PortRole(True, ofport=0), "in_port"),                 # no such OpenFlow port
    (PortRole(True, ofport=0xFFFFFFFF), "in_port"),        # OFPP_ANY is not a port
    (PortRole(False, tunnel=0xFFFFFFFF), "output port"),
])
def test_an_out_of_range_ofport_is_refused_before_anything_is_packed(role, field):
    table = table_of(PortFacts(7, 101, 0xFA163E000001))
    dels, adds = compiler.compile_port_changes(ALL_APPS, table, [(0, None, role)])
    with pytest.raises(ValueError, match=field):
        compiler.flow_mods(Datapath13(), [FlowBatch.of_rows(dels), FlowBatch.of_rows(adds)])


def test_floating_ips_that_come_and_go_do_not_grow_the_columns():
    table = compiler.PortTable(capacity=4)
    fip = FloatingIpFacts(0xC0000232, 0xFA163EBB0001, 0x0A000001, 200, 0xFA163EAA0001)
    for round_ in range(200):
        table.set("p0", PortFacts(7, 101, 1, fips=(fip,) if round_ % 2 else ()))
    assert len(table.fips) <= 16 and len(table.ips) <= 16
    rec = table.ports[table.index["p0"]]
    assert tuple(table.fips[rec["fip_start"]:rec["fip_start"] + rec["fip_count"]]["fip"]) == (0xC0000232,)


def test_many_changes_and_large_rows_compile_and_frame_as_each_change_alone():
    """A plan past the core's small-plan size (its C work then runs without the GIL): the same rows as
    each change compiled alone, and framed as the flow mods wrapped in bundle adds."""
    facts = [PortFacts(7 + i, 101, 0xFA163E000000 + i, True, True, (0x0A000000 + 2 * i, 0x0A000001 + 2 * i),
                       (FloatingIpFacts(0xC0000000 + i, 0xFA163EBB0000 + i, 0x0A000000 + 2 * i, 200, 0xFA163EAA0001),))
             for i in range(150)]
    table = table_of(*facts)
    changes = [(i, None, PortRole(True, ofport=10 + i)) for i in range(150)]
    made = compiler.compile_port_changes(ALL_APPS, table, changes)
    alone = [compiler.compile_port_changes(ALL_APPS, table, [change])[1] for change in changes]
    assert made.adds.n == len(made[1]) == sum(map(len, alone)) > 1000
    # (each alone's bytes joined: numpy concatenates records field by field, leaving their padding as the
    # allocator had it -- 9 to 14 of 30 such joins differed in their padding, on main as here)
    assert made[1].tobytes() == b"".join(rows.tobytes() for rows in alone)
    framed, xids, open_xid = compiler.PlanBundle([made.adds]).frame_bundle(Datapath13(5), 9, 3, True)
    dp = Datapath13(5)
    flow_mods = compiler.flow_mods(dp, [FlowBatch.of_rows(made[1])])
    assert bytes(framed) == bytes(core.wrap_bundle_adds(flow_mods, 4, 9, 3, open_xid=open_xid,
                                                        commit_xid=open_xid + 1)[0])
    assert list(xids) == list(range(5, open_xid))


def test_a_program_whose_entry_patches_one_slot_twice_is_refused():
    protos = FlowBatch(1)
    protos.append(Flow(10, 100, (("eth_dst", 0, None),)), check=False)
    with pytest.raises(ValueError, match="entry twice: two params patch one slot"):
        core.CompiledProgram(compiler.LAYOUT, protos.rows, [("twice", 0, 0, 0, True, False, [(0, 1), (0, 2)])])
