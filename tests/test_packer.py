"""The compiled OpenFlow packer (dfflow._core) against two oracles: os-ken and Open vSwitch.

* os-ken: for random flows (hypothesis), the packed bytes equal the concatenation of
  ``Flow.to_osken(dp, xid).serialize()`` with the same xids, and os-ken's parser
  reads every message back to the same flow. Same for ONF bundles (EXT-230).
* Open vSwitch 3.1 (a private ovs-vswitchd, netdev datapath): a packed bundle
  installs exactly the expected flows (``ovs-ofctl dump-flows``, parsed); a bundle
  with one invalid flow installs nothing when sent open+adds+barrier, then DISCARD.
* Bad input raises ValueError naming the field, before any byte is produced.
* No memory growth over 10,000 calls.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import struct
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from controller import compiler
from dfflow.sandbox.ovsproc import OvsInstance
from races import flipping, while_meddling
from dfflow import core
from dfflow.flowbatch import (FIELD_BIT, FIELD_INDEX, FIELD_ORDER, MAX_ACTIONS, OP_MOVE, OP_OUTPUT,
                              OP_SET_FIELD, VNI_MAX, FlowBatch)
from dfflow.flows import (CT_NO_TABLE, FIELDS, IPV4_FIELDS, MAC_FIELDS, OFPP_CONTROLLER, OFPP_IN_PORT, Command,
                          Conjunction, Ct, DecTtl, Flow,
                          Move, Output, Resubmit, SetField, match)
from dfflow.openflow.framing import XidAllocator

ofp = ofproto_v1_3
parser = ofproto_v1_3_parser
ATOMIC_ORDERED = core.ONF_BF_ATOMIC | core.ONF_BF_ORDERED
U64 = (1 << 64) - 1


class DP:
    """What os-ken needs as `datapath` to build and parse OpenFlow 1.3 messages."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = None


# --------------------------------------------------------------------------- os-ken helpers

def ser(msg: Any, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def osken_flow_mods(flows: list[Flow], xid_start: int) -> bytes:
    return b"".join(ser(f.to_osken(DP), xid_start + i) for i, f in enumerate(flows))


def osken_bundle(flows: list[Flow], bundle_id: int, xid_start: int, flags: int = ATOMIC_ORDERED,
                 commit: bool = True) -> bytes:
    out = [ser(parser.ONFBundleCtrlMsg(DP, bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, []), xid_start)]
    for i, f in enumerate(flows):
        out.append(ser(parser.ONFBundleAddMsg(DP, bundle_id, flags, f.to_osken(DP), []), xid_start + 1 + i))
    if commit:
        out.append(ser(parser.ONFBundleCtrlMsg(DP, bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, []),
                       xid_start + 1 + len(flows)))
    return b"".join(out)


def frames(buf: bytes) -> list[tuple[int, int, int, int, bytes]]:
    out, off = [], 0
    while off < len(buf):
        version, mtype, length, xid = struct.unpack_from("!BBHI", buf, off)
        assert length >= 8 and off + length <= len(buf)
        out.append((version, mtype, length, xid, buf[off:off + length]))
        off += length
    return out


def parse(frame: tuple[int, int, int, int, bytes]) -> Any:
    return ofproto_parser.msg(DP, *frame)


def _from_osken_value(name: str, value: Any) -> int:
    if isinstance(value, str):
        if ":" in value:
            return core.mac_to_int(value)
        return core.ipv4_to_int(value)
    return int(value)


def flow_from_osken(msg: Any) -> Flow:
    """A parsed OFPFlowMod back to a Flow (the inverse of Flow.to_osken)."""
    items = []
    for name, value in msg.match._fields2:
        if isinstance(value, tuple):
            items.append((name, _from_osken_value(name, value[0]), _from_osken_value(name, value[1])))
        else:
            items.append((name, _from_osken_value(name, value), None))
    actions: list[Any] = []
    goto = wmeta = None
    for inst in msg.instructions:
        if isinstance(inst, parser.OFPInstructionActions):
            assert inst.type == ofp.OFPIT_APPLY_ACTIONS
            for a in inst.actions:
                if isinstance(a, parser.OFPActionOutput):
                    actions.append(Output(a.port, a.max_len))
                elif isinstance(a, parser.OFPActionSetField):
                    actions.append(SetField(a.key, _from_osken_value(a.key, a.value)))
                elif isinstance(a, parser.OFPActionDecNwTtl):
                    actions.append(DecTtl())
                elif isinstance(a, parser.NXActionRegMove):
                    assert a.src_ofs == 0 and a.dst_ofs == 0
                    actions.append(Move(a.src_field, a.dst_field, a.n_bits))
                elif isinstance(a, parser.NXActionCT):
                    assert (a.zone_src, a.alg, a.actions) == ("", 0, [])
                    actions.append(Ct(a.zone_ofs_nbits, bool(a.flags & 1),
                                      None if a.recirc_table == CT_NO_TABLE else a.recirc_table))
                elif isinstance(a, parser.NXActionConjunction):
                    actions.append(Conjunction(a.id, a.clause + 1, a.n_clauses))
                elif isinstance(a, parser.NXActionResubmitTable):
                    assert a.in_port == ofp.OFPP_IN_PORT & 0xFFFF
                    actions.append(Resubmit(a.table_id))
                else:
                    raise AssertionError(f"unexpected action {a}")
        elif isinstance(inst, parser.OFPInstructionWriteMetadata):
            wmeta = (inst.metadata, inst.metadata_mask)
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            goto = inst.table_id
        else:
            raise AssertionError(f"unexpected instruction {inst}")
    deleting = msg.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
    assert msg.cookie_mask == (U64 if deleting else 0)
    assert (msg.buffer_id, msg.out_port, msg.out_group, msg.flags) == (ofp.OFP_NO_BUFFER, ofp.OFPP_ANY,
                                                                       ofp.OFPG_ANY, 0)
    assert (msg.idle_timeout, msg.hard_timeout) == (0, 0)
    return Flow(msg.table_id, msg.priority, tuple(items), tuple(actions), goto, wmeta, msg.cookie,
                Command(msg.command))


def as_sent(flow: Flow) -> Flow:
    """What a FLOW_MOD carries: deletes send no instructions."""
    if flow.command in (Command.DELETE, Command.DELETE_STRICT):
        return Flow(flow.table, flow.priority, flow.match, cookie=flow.cookie, command=flow.command)
    return flow


# --------------------------------------------------------------------------- strategies

RESERVED_PORTS = [0xFFFFFFF8, 0xFFFFFFF9, 0xFFFFFFFA, 0xFFFFFFFB, 0xFFFFFFFC, 0xFFFFFFFD, 0xFFFFFFFE]
ofports = st.one_of(st.integers(1, 0xFFFFFF00), st.sampled_from(RESERVED_PORTS), st.integers(1, 64))


def field_values(name: str) -> st.SearchStrategy[int]:
    if name == "in_port":
        return ofports
    limit = VNI_MAX if name == "tunnel_id" else (1 << FIELDS[name].bits) - 1
    return st.one_of(st.integers(0, limit), st.sampled_from([0, 1, limit]))


@st.composite
def match_items(draw: Any) -> tuple:
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=len(FIELDS)))
    kwargs: dict[str, Any] = {}
    for name in names:
        value = draw(field_values(name))
        if FIELDS[name].maskable and draw(st.booleans()):
            mask = draw(st.integers(0, (1 << FIELDS[name].bits) - 1))
            kwargs[name] = (value, mask)
        else:
            kwargs[name] = value
    return match(**kwargs)


# what actions may set or move: not an experimenter field (tcp_flags), which flows only match
ACTION_FIELDS = sorted(name for name, spec in FIELDS.items() if spec.oxm_class != 0xFFFF)


@st.composite
def actions(draw: Any) -> Any:
    kind = draw(st.sampled_from(["output", "set", "dec", "move", "ct", "resubmit"]))
    if kind == "resubmit":
        return Resubmit(draw(st.integers(0, 254)))
    if kind == "ct":
        return Ct(draw(st.integers(0, 0xFFFF)), draw(st.booleans()), draw(st.none() | st.integers(0, 254)))
    if kind == "output":
        return Output(draw(ofports), draw(st.integers(0, 0xFFFF)))
    if kind == "set":
        name = draw(st.sampled_from(ACTION_FIELDS))
        return SetField(name, draw(field_values(name)))
    if kind == "dec":
        return DecTtl()
    src = draw(st.sampled_from(ACTION_FIELDS))
    dst = draw(st.sampled_from(ACTION_FIELDS))
    return Move(src, dst, draw(st.integers(1, min(FIELDS[src].bits, FIELDS[dst].bits))))


@st.composite
def flows(draw: Any) -> Flow:
    command = draw(st.sampled_from(list(Command)))
    deleting = command in (Command.DELETE, Command.DELETE_STRICT)
    table = draw(st.integers(0, 255 if deleting else 254))
    goto = None
    if table < 254 and draw(st.booleans()):
        goto = draw(st.integers(table + 1, 254))
    wmeta = draw(st.none() | st.tuples(st.integers(0, U64), st.integers(0, U64)))
    acts = tuple(draw(st.lists(actions(), max_size=MAX_ACTIONS)))
    if draw(st.integers(0, 5)) == 0:  # a conjunction clause: conjunction actions only, nothing else
        n_clauses = draw(st.integers(2, 64))
        acts = tuple(Conjunction(draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(1, n_clauses)), n_clauses)
                     for _ in range(draw(st.integers(1, MAX_ACTIONS))))
        goto = wmeta = None
    return Flow(table=table, priority=draw(st.integers(0, 0xFFFF)), match=draw(match_items()),
                actions=acts, goto=goto,
                write_metadata=wmeta, cookie=draw(st.integers(0, U64)), command=command)


flow_lists = st.lists(flows(), min_size=0, max_size=12)
xids = st.integers(0, 0xFFFFFFFF - 1000)
HYP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- layout & order

def test_field_order_is_osken_match_order():
    """os-ken sorts OFPMatch fields by OXM type (class << 7 | field): NXM_1 regs first."""
    values = {name: _example(name) for name in FIELDS}
    osken_order = [name for name, _ in parser.OFPMatch(**values)._fields2]
    assert list(FIELD_ORDER) == osken_order
    nxm = [n for n in FIELD_ORDER if FIELDS[n].oxm_class == 0x0001]
    assert "reg6" in nxm and list(FIELD_ORDER[:len(nxm)]) == nxm  # Nicira registers first
    assert [n for n, _, _ in match(**{n: 1 for n in FIELDS})] == osken_order


def _example(name: str) -> Any:
    if name in ("eth_dst", "eth_src", "arp_sha", "arp_tha"):
        return "00:00:00:00:00:01"
    if name in ("ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"):
        return "10.0.0.1"
    return 1


def test_record_layout_documented():
    batch = FlowBatch(4)
    nf = len(FIELDS)
    assert batch.array.dtype.itemsize == 48 + 16 * nf + 16 * MAX_ACTIONS  # 464 with 18 fields
    assert batch.array["match_value"].shape == (4, nf)
    assert batch.array["actions"].shape == (4, MAX_ACTIONS)
    assert repr(batch.layout).startswith(f"FlowLayout({nf} fields")


# --------------------------------------------------------------------------- os-ken oracle

@HYP
@given(flow_lists, xids)
def test_flow_mods_match_osken(flow_list, xid):
    batch = FlowBatch.from_flows(flow_list)
    assert batch.flows() == flow_list
    packed = core.pack_flow_mods(batch, xid)
    assert packed == osken_flow_mods(flow_list, xid)
    parsed = frames(packed)
    assert len(parsed) == len(flow_list)
    for i, (frame, flow) in enumerate(zip(parsed, flow_list)):
        msg = parse(frame)
        assert isinstance(msg, parser.OFPFlowMod)
        assert msg.xid == xid + i
        assert flow_from_osken(msg) == as_sent(flow)


@HYP
@given(st.lists(flows(), min_size=1, max_size=8), xids, st.integers(0, 0xFFFFFFFF),
       st.sampled_from([ATOMIC_ORDERED, core.ONF_BF_ATOMIC, core.ONF_BF_ORDERED, 0]), st.booleans())
def test_bundle_matches_osken(flow_list, xid, bundle_id, flags, commit):
    batch = FlowBatch.from_flows(flow_list)
    packed = core.pack_bundle(batch, bundle_id, xid, flags, commit)
    assert packed == osken_bundle(flow_list, bundle_id, xid, flags, commit)
    # the channel's framing (Datapath.send_bundle) of the same flow mods makes the same adds
    flow_mods = core.pack_flow_mods(batch, xid + 1)
    adds, add_xids = core.wrap_bundle_adds(flow_mods, ofp.OFP_VERSION, bundle_id, flags)
    ctrl = core.BUNDLE_CTRL_LEN * (2 if commit else 1)
    assert len(adds) == len(flow_mods) + core.BUNDLE_ADD_HEADER_LEN * len(flow_list) == len(packed) - ctrl
    assert bytes(adds) == packed[core.BUNDLE_CTRL_LEN:core.BUNDLE_CTRL_LEN + len(adds)]
    assert add_xids == [xid + 1 + i for i in range(len(flow_list))]
    msgs = frames(packed)
    assert len(msgs) == len(flow_list) + (2 if commit else 1)
    opener = parse(msgs[0])
    assert isinstance(opener, parser.ONFBundleCtrlMsg)
    assert (opener.bundle_id, opener.type, opener.flags, opener.xid) == (
        bundle_id, ofp.ONF_BCT_OPEN_REQUEST, flags, xid)
    for i, flow in enumerate(flow_list):
        add = parse(msgs[1 + i])
        assert isinstance(add, parser.OFPExperimenter)
        assert (add.experimenter, add.exp_type, add.xid) == (core.ONF_EXPERIMENTER_ID,
                                                            core.ONF_ET_BUNDLE_ADD_MESSAGE, xid + 1 + i)
        add_bundle_id, add_flags = struct.unpack_from("!I2xH", add.data)
        assert (add_bundle_id, add_flags) == (bundle_id, flags)
        inner = frames(bytes(add.data[8:]))
        assert len(inner) == 1 and inner[0][3] == xid + 1 + i  # inner xid = the add's xid
        assert flow_from_osken(parse(inner[0])) == as_sent(flow)
    if commit:
        closer = parse(msgs[-1])
        assert (closer.bundle_id, closer.type, closer.flags, closer.xid) == (
            bundle_id, ofp.ONF_BCT_COMMIT_REQUEST, flags, xid + 1 + len(flow_list))


class _Channel(DP):
    """What controller.compiler.flow_mods uses of a connection: os-ken's datapath and its xids."""

    def __init__(self, xid_start: int) -> None:
        self.xids = XidAllocator(xid_start)


@settings(max_examples=50, deadline=None)
@given(st.lists(flow_lists, min_size=0, max_size=5), st.integers(1, 0x7FFF0000))
def test_a_plans_batches_pack_as_osken_flow_mods_with_running_xids(batches_flows, xid):
    """The agent's path for a plan of several batches (controller.compiler.flow_mods): one buffer
    of FLOW_MODs, byte-identical to os-ken's, the xids running on across the batches."""
    batches = [FlowBatch.from_flows(fl) for fl in batches_flows if fl]
    every = [f for fl in batches_flows for f in fl]
    packed = compiler.flow_mods(_Channel(xid), batches)
    assert packed == osken_flow_mods(every, xid)
    assert len(frames(packed)) == len(every)


def test_big_rows_grow_the_output():
    """Rows far above the packer's first size guess: the output grows (and is trimmed)."""
    everything = match(**{name: (1, 1) if FIELDS[name].maskable else (5 if name == "in_port" else 1)
                          for name in FIELDS})
    big = [Flow(1, i, everything, (Move("eth_src", "eth_dst", 48),) * MAX_ACTIONS, goto=2,
                write_metadata=(i, U64), cookie=i) for i in range(700)]
    small = [Flow(0, i, match(metadata=i)) for i in range(700)]
    for flow_list in (big, small + big, big + small):
        batch = FlowBatch.from_flows(flow_list)
        assert core.pack_flow_mods(batch, 9) == osken_flow_mods(flow_list, 9)
        assert core.pack_bundle(batch, 3, 9) == osken_bundle(flow_list, 3, 9)


def test_empty_batch_packs_to_nothing():
    assert core.pack_flow_mods(FlowBatch(), 5) == b""
    assert compiler.flow_mods(_Channel(1), []) == b""


def test_mac_and_ipv4_strings_in_the_encoder():
    flow = Flow(0, 1, (("eth_dst", "fa:16:3e:00:00:01", None), ("ipv4_dst", "10.0.0.0", "255.255.255.0")),
                (SetField("arp_spa", "10.1.2.3"), SetField("eth_src", "FA:16:3E:00:00:02")))
    batch = FlowBatch.from_flows([flow])
    assert batch.flow(0) == Flow(0, 1, (("eth_dst", 0xFA163E000001, None), ("ipv4_dst", 0x0A000000, 0xFFFFFF00)),
                                 (SetField("arp_spa", 0x0A010203), SetField("eth_src", 0xFA163E000002)))


def test_column_fill_equals_encoder():
    """Compiled/vectorized producers fill columns; the packer sees the same flows."""
    macs = np.array([0xFA163E000001, 0xFA163E000002, 0xFA163E000003], dtype=np.uint64)
    nets = np.array([5, 6, 7], dtype=np.uint64)
    batch = FlowBatch(1)
    rows = batch.add_rows(3)
    rows["table"] = 55
    rows["priority"] = 100
    rows["match_present"] = FIELD_BIT["metadata"] | FIELD_BIT["eth_dst"]
    rows["match_value"][:, FIELD_INDEX["metadata"]] = nets
    rows["match_value"][:, FIELD_INDEX["eth_dst"]] = macs
    rows["n_actions"] = 3
    acts = rows["actions"]
    acts[:, 0]["op"] = OP_SET_FIELD
    acts[:, 0]["field"] = FIELD_INDEX["tunnel_id"]
    acts[:, 0]["value"] = nets + np.uint64(1000)
    acts[:, 1]["op"] = OP_MOVE
    acts[:, 1]["field"] = FIELD_INDEX["reg6"]
    acts[:, 1]["dst"] = FIELD_INDEX["reg7"]
    acts[:, 1]["arg"] = 16
    acts[:, 2]["op"] = OP_OUTPUT
    acts[:, 2]["value"] = 4
    expected = [Flow(55, 100, match(metadata=int(n), eth_dst=int(m)),
                     (SetField("tunnel_id", int(n) + 1000), Move("reg6", "reg7", 16), Output(4)))
                for n, m in zip(nets, macs)]
    assert batch.flows() == expected
    assert core.pack_flow_mods(batch, 1) == osken_flow_mods(expected, 1)
    batch.append(expected[0])  # grows the array; earlier rows are kept
    assert len(batch) == 4 and batch.flows() == expected + expected[:1]
    batch.clear()
    assert core.pack_flow_mods(batch, 1) == b""


def test_realistic_benchmark_flows_match_osken():
    from benchmarks.pack import fill_batch, osken_pack, port_tables, realistic_flows
    flow_list = realistic_flows(200)
    batch = FlowBatch(8)
    fill_batch(batch, port_tables(200))
    assert batch.flows() == flow_list
    assert core.pack_flow_mods(batch, 3) == osken_pack(flow_list, 3) == osken_flow_mods(flow_list, 3)


# --------------------------------------------------------------------------- bad input

GOOD = Flow(10, 100, match(metadata=5, eth_dst=0xFA163E000001), (SetField("tunnel_id", 7), Output(3)), goto=20)


def _with(**changes: Any) -> Flow:
    fields = dict(table=GOOD.table, priority=GOOD.priority, match=GOOD.match, actions=GOOD.actions,
                  goto=GOOD.goto, write_metadata=GOOD.write_metadata, cookie=GOOD.cookie, command=GOOD.command)
    fields.update(changes)
    return Flow(**fields)


ENCODER_ERRORS = [
    (_with(table=300), r"table: 300 out of range"),
    (_with(table=255), r"table 255 out of range"),
    (_with(table=-1), r"table: -1 out of range"),
    (_with(priority=70000), r"priority: 70000 out of range"),
    (_with(cookie=1 << 64), r"cookie: .* out of range"),
    (_with(goto=10), r"goto 10 must name a later table than 10"),
    (_with(goto=255), r"goto: 255 out of range"),
    (_with(match=(("eth_dstt", 1, None),)), r"match: unknown field 'eth_dstt'"),
    (_with(match=(("eth_dst", "zz:16:3e:00:00:01", None),)), r"match field 'eth_dst': not a MAC address"),
    (_with(match=(("eth_src", "fa:16:3e:00:00", None),)), r"match field 'eth_src': not a MAC address"),
    (_with(match=(("ipv4_dst", "10.0.0.256", None),)), r"match field 'ipv4_dst': not an IPv4 address"),
    (_with(match=(("eth_type", 0x10000, None),)), r"match field 'eth_type': value 0x10000 does not fit in 16 bits"),
    (_with(match=(("eth_type", 0x800, 0xFFFF),)), r"match field 'eth_type' cannot be masked"),
    (_with(match=(("in_port", 0, None),)), r"match field 'in_port': 0x0 is not a valid OpenFlow port"),
    (_with(match=(("in_port", 0xFFFFFFFF, None),)), r"match field 'in_port': 0xffffffff is not a valid"),
    (_with(match=(("tunnel_id", VNI_MAX + 1, None),)), r"match field 'tunnel_id': value 0x1000000 out of range"),
    (_with(match=(("reg6", 0x1FF, 0xFF),)), r"match field 'reg6': value 0x1ff has bits outside mask 0xff"),
    (_with(match=(("reg6", 1, None), ("reg6", 2, None))), r"match field 'reg6' given twice"),
    (_with(match=(("metadata", -1, None),)), r"match field 'metadata': value -0x1 does not fit"),
    (_with(actions=(Output(0),)), r"action 0 output port 0x0 is not a valid OpenFlow port"),
    (_with(actions=(Output(0xFFFFFFFF),)), r"action 0 output port 0xffffffff is not a valid"),
    (_with(actions=(Output(1 << 32),)), r"action 0 output port: 4294967296 out of range"),
    (_with(actions=(Output(1, 1 << 16),)), r"action 0 output max_len: 65536 out of range"),
    (_with(actions=(Output(1), SetField("tunnel_id", VNI_MAX + 1))),
     r"action 1 set_field 'tunnel_id': value 0x1000000 out of range"),
    (_with(actions=(SetField("arp_op", 1 << 16),)), r"action 0 set_field 'arp_op': value 0x10000 does not fit"),
    (_with(actions=(SetField("eth_src", "not-a-mac"),)), r"action 0 set_field 'eth_src': not a MAC address"),
    (_with(actions=(SetField("vlan_vid", 1),)), r"action 0 set_field: unknown field 'vlan_vid'"),
    (_with(actions=(SetField("in_port", 0),)), r"action 0 set_field 'in_port': 0x0 is not a valid OpenFlow port"),
    (_with(actions=(Move("eth_src", "reg6", 48),)),
     r"action 0 move 'eth_src' -> 'reg6': n_bits 48 out of range \(1..32\)"),
    (_with(actions=(Move("eth_src", "eth_dst", 0),)), r"action 0 move n_bits: 0 out of range"),
    (_with(actions=(Move("eth_src", "nope", 8),)), r"action 0 move dst: unknown field 'nope'"),
    (_with(actions=(Move("nope", "eth_src", 8),)), r"action 0 move src: unknown field 'nope'"),
    (_with(actions=(Output(1),) * (MAX_ACTIONS + 1)), r"actions: 9 actions, at most 8"),
    (_with(actions=("drop",)), r"action 0: unknown action 'drop'"),
    (_with(actions=(Ct(70000),)), r"action 0 ct zone: 70000 out of range"),
    (_with(actions=(Resubmit(255),)), r"action 0 resubmit table: 255 out of range"),
    (_with(actions=(Conjunction(1, 3, 2),), goto=None), r"action 0 conjunction clause: 3 out of range"),
    (_with(actions=(Conjunction(1, 1, 2),)), r"a flow with conjunction actions has no other action"),
    (_with(actions=(Conjunction(1, 1, 2), Output(1)), goto=None), r"conjunction actions has no other action"),
    (_with(write_metadata=(1 << 64, 0)), r"write_metadata value: .* out of range"),
    (_with(command=1), r"command 1 is not a FLOW_MOD command dfflow sends"),
    (_with(command=9), r"command: 9 out of range"),
]


@pytest.mark.parametrize("flow,message", ENCODER_ERRORS, ids=[m for _, m in ENCODER_ERRORS])
def test_encoder_rejects_bad_flows(flow, message):
    batch = FlowBatch.from_flows([GOOD])
    before = batch.array.copy()
    with pytest.raises(ValueError, match=message):
        batch.append(flow)
    assert len(batch) == 1 and batch.flows() == [GOOD]  # nothing appended
    assert _same_rows(batch.array[:1], before[:1])
    spare = batch.array[1:]
    assert _same_rows(spare, FlowBatch(len(spare)).array[:len(spare)])  # the row left blank
    assert core.pack_flow_mods(batch, 1) == osken_flow_mods([GOOD], 1)


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Field by field (padding bytes are not data)."""
    if a.dtype.names is None:
        return bool(np.array_equal(a, b))
    return len(a) == len(b) and all(_same_rows(a[n], b[n]) for n in a.dtype.names)


def test_delete_may_use_table_all():
    flow = Flow(255, 0, (), cookie=0x42, command=Command.DELETE)
    assert core.pack_flow_mods(FlowBatch.from_flows([flow]), 1) == osken_flow_mods([flow], 1)


def _raw_batch(**columns: Any) -> FlowBatch:
    """One GOOD row, then columns overwritten as a compiled producer could."""
    batch = FlowBatch.from_flows([GOOD, GOOD])
    row = batch.array[1]
    for name, value in columns.items():
        if name.startswith("a0_"):
            row["actions"][0][name[3:]] = value
        elif name.startswith("mv_"):
            row["match_value"][FIELD_INDEX[name[3:]]] = value
        elif name.startswith("mm_"):
            row["match_mask"][FIELD_INDEX[name[3:]]] = value
        else:
            row[name] = value
    return batch


PACKER_ERRORS = [
    (dict(command=1), r"flow 1: command 1 is not a FLOW_MOD command"),
    (dict(command=200), r"flow 1: command 200 is not"),
    (dict(table=255), r"flow 1: table 255 out of range"),
    (dict(goto=5), r"flow 1: goto 5 must name a later table than 10"),
    (dict(goto=-7), r"flow 1: goto -7 must name"),
    (dict(match_present=1 << 40), r"flow 1: match_present bit 40 names no field"),
    (dict(match_masked=FIELD_BIT["reg6"]), r"flow 1: match field 'reg6': mask given but the field is not matched"),
    (dict(match_present=FIELD_BIT["eth_type"], match_masked=FIELD_BIT["eth_type"], mv_eth_type=0x800),
     r"flow 1: match field 'eth_type' cannot be masked"),
    (dict(match_present=FIELD_BIT["eth_type"], mv_eth_type=0x10000),
     r"flow 1: match field 'eth_type': value 0x10000 is wider than 16 bits"),
    (dict(match_present=FIELD_BIT["reg7"], match_masked=FIELD_BIT["reg7"], mm_reg7=1 << 32),
     r"flow 1: match field 'reg7': mask 0x100000000 is wider than 32 bits"),
    (dict(match_present=FIELD_BIT["tunnel_id"], mv_tunnel_id=1 << 30),
     r"flow 1: match field 'tunnel_id': value 0x40000000 out of range \(max 0xffffff\)"),
    (dict(match_present=FIELD_BIT["in_port"], mv_in_port=0xFFFFFFFF),
     r"flow 1: match field 'in_port': 0xffffffff is not a valid OpenFlow port"),
    (dict(n_actions=MAX_ACTIONS + 1), r"flow 1: n_actions 9 exceeds the 8 action slots"),
    (dict(a0_op=9), r"flow 1: action 0: unknown opcode 9"),
    (dict(a0_op=OP_OUTPUT, a0_value=0), r"flow 1: action 0 output port 0x0 is not a valid OpenFlow port"),
    (dict(a0_field=99), r"flow 1: action 0: field index 99 names no field"),
    (dict(a0_value=1 << 24), r"flow 1: action 0 set_field 'tunnel_id': value 0x1000000 out of range"),
    (dict(a0_field=FIELD_INDEX["eth_type"], a0_value=1 << 17),
     r"flow 1: action 0 set_field 'eth_type': value 0x20000 is wider than 16 bits"),
    (dict(a0_op=OP_MOVE, a0_field=0, a0_dst=50, a0_arg=8), r"flow 1: action 0 move dst: field index 50"),
    (dict(a0_op=OP_MOVE, a0_field=FIELD_INDEX["reg6"], a0_dst=FIELD_INDEX["reg7"], a0_arg=33),
     r"flow 1: action 0 move 'reg6' -> 'reg7': n_bits 33"),
]


@pytest.mark.parametrize("columns,message", PACKER_ERRORS, ids=[m for _, m in PACKER_ERRORS])
def test_packer_rejects_bad_rows_before_producing_anything(columns, message):
    batch = _raw_batch(**columns)
    for call in (lambda: core.pack_flow_mods(batch, 1), lambda: core.pack_bundle(batch, 1, 1),
                 lambda: core.validate_flows(batch),
                 lambda: compiler.flow_mods(_Channel(1), [FlowBatch.from_flows([GOOD]), batch])):
        with pytest.raises(ValueError, match=message):
            call()


def test_bundle_of_nothing_and_bad_ids():
    with pytest.raises(ValueError, match="batch is empty: a bundle needs at least one flow"):
        core.pack_bundle(FlowBatch(), 1, 1)
    one = FlowBatch.from_flows([GOOD])
    with pytest.raises(ValueError, match="bundle_id 4294967296 out of range"):
        core.pack_bundle(one, 1 << 32, 1)
    with pytest.raises(ValueError, match="bundle flags 65536 out of range"):
        core.pack_bundle(one, 1, 1, 1 << 16)
    with pytest.raises(ValueError, match="xid_start -1 out of range"):
        core.pack_flow_mods(one, -1)
    with pytest.raises(ValueError, match="runs past xid 0xffffffff"):
        core.pack_bundle(one, 1, 0xFFFFFFFF - 1)  # open, add, commit need 3 xids
    assert len(core.pack_bundle(one, 1, 0xFFFFFFFF - 2)) > 0
    with pytest.raises(ValueError, match="bundle_id -1 out of range"):
        core.wrap_bundle_adds(core.pack_flow_mods(one, 1), ofp.OFP_VERSION, -1, ATOMIC_ORDERED)
    with pytest.raises(TypeError, match="expected a FlowBatch"):
        core.pack_flow_mods(object(), 1)


def test_rows_scribbled_on_while_packing_never_overrun():
    """Another thread overwriting rows with garbage between the packer's passes (it runs
    without the GIL) gets a clean exception or a buffer, never a write out of bounds."""
    import random
    from benchmarks.pack import realistic_flows
    batch = FlowBatch.from_flows(realistic_flows(2000))
    raw = batch.array.view(np.uint8)
    rng = random.Random(5)

    def scribble() -> None:  # garbage into a row, then the row back: mostly valid rows
        at = rng.randrange(len(raw) - 64)
        saved = raw[at:at + 64].copy()
        raw[at:at + 64] = np.frombuffer(rng.randbytes(64), np.uint8)
        raw[at:at + 64] = saved

    outcomes = while_meddling(scribble, lambda: core.pack_flow_mods(batch, 1), lambda: core.pack_bundle(batch, 1, 1),
                               seconds=0.5)
    assert outcomes["ok"] > 0, outcomes


def test_action_opcodes_flipped_while_packing_give_a_buffer_or_an_exception():
    """Each value the packer checks must be the value it uses, even where the compiler could load it
    again: GCC read an action's opcode twice in the writer, for its jump table's range check and for
    the index, and an opcode flipped in between jumped through garbage (before the fix: SIGSEGV in
    most runs of this, within a second or two)."""
    rows = [Flow(10, 100, match(metadata=i % 500 + 1), (DecTtl(),) * (MAX_ACTIONS - 1) + (Output(3),))
            for i in range(2000)]
    batch = FlowBatch.from_flows(rows)
    outcomes = while_meddling(flipping(batch.rows["actions"]["op"], 0xF8),  # each opcode > OP_RESUBMIT
                               lambda: core.pack_flow_mods(batch, 1), lambda: core.pack_bundle(batch, 1, 1),
                               seconds=2.0)
    assert outcomes["ok"] + outcomes["RuntimeError"] > 0, outcomes  # some calls got past validation
    assert core.pack_flow_mods(batch, 1) == osken_flow_mods(rows, 1)


def test_messages_resized_while_bundled_give_whole_adds_or_an_exception():
    """wrap_bundle_adds sizes its output from a walk of the messages, then copies them: lengths
    changed in between must not copy past either buffer (before the fix: heap corruption, glibc
    aborted) nor leave part of the output unwritten."""
    flows = [_with(match=match(metadata=i + 1, eth_dst=0xFA163E000001)) for i in range(2000)]
    packed = np.frombuffer(bytearray(core.pack_flow_mods(FlowBatch.from_flows(flows), 1)), np.uint8)
    length_high = packed.reshape(len(flows), -1)[:, 2]  # every message's length, high byte: + 256

    def wrap() -> None:
        out, xids = core.wrap_bundle_adds(packed, ofp.OFP_VERSION, 1, ATOMIC_ORDERED, open_xid=1, commit_xid=2)
        assert len(out) == 2 * core.BUNDLE_CTRL_LEN + len(packed) + core.BUNDLE_ADD_HEADER_LEN * len(xids)

    outcomes = while_meddling(flipping(length_high, 1), wrap)
    assert outcomes["ok"] + outcomes["RuntimeError"] > 0, outcomes


def test_port_facts_changed_while_compiling_make_the_rows_they_counted():
    """compile_changes counts a change's rows, sizes its output, then writes them: a port's IP count
    changed in place meanwhile (its table's contents may) must not write more rows than were counted
    (before the fix: SIGSEGV). 200 changes: the compiler runs without the GIL."""
    from benchmarks.compile import Cloud
    cloud = Cloud(ports=600, chassis=3)
    changes = [(cloud._rows[p], cloud.role(p, 1, 0, dest=False), cloud.role(p, 1, dest, dest=True))
               for p, dest in cloud.evacuation(0, 200)]  # chassis 1's view of evacuating chassis 0

    def compile_() -> None:
        made = core.compile_changes(cloud.program, cloud.table, changes)
        core.validate_flows(made.deletes)
        core.validate_flows(made.adds)

    outcomes = while_meddling(flipping(cloud.table.ports["ip_count"], 1), compile_)  # 2 IPs <-> 3: in the column
    assert outcomes["ok"] > 0 and not outcomes["ValueError"], outcomes


# --------------------------------------------------------------------------- memory

def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_no_memory_growth_over_10000_calls():
    from benchmarks.pack import realistic_flows
    batch = FlowBatch.from_flows(realistic_flows(50))
    bad = _raw_batch(table=255)
    batches = [batch, batch, batch]

    def round_() -> None:
        core.pack_flow_mods(batch, 1)
        core.pack_bundle(batch, 3, 1)
        core.wrap_bundle_adds(compiler.flow_mods(_Channel(1), batches), ofp.OFP_VERSION, 1, ATOMIC_ORDERED)
        try:
            core.pack_flow_mods(bad, 1)
        except ValueError:
            pass

    for _ in range(200):  # warm up caches and free lists
        round_()
    tracemalloc.start()
    try:
        snap0 = tracemalloc.take_snapshot()
        rss0 = _rss_kib()
        for _ in range(10_000):
            round_()
        rss1 = _rss_kib()
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    growth = sum(s.size_diff for s in snap1.filter_traces(filters).compare_to(
        snap0.filter_traces(filters), "filename"))
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes"
    assert rss1 - rss0 < 4 * 1024, f"RSS grew by {rss1 - rss0} KiB"


# --------------------------------------------------------------------------- Open vSwitch oracle

OVS_MATCH_NAMES = {
    "in_port": "in_port", "metadata": "metadata", "dl_dst": "eth_dst", "dl_src": "eth_src",
    "dl_type": "eth_type", "nw_proto": "ip_proto", "nw_src": "ipv4_src", "nw_dst": "ipv4_dst",
    "icmp_type": "icmpv4_type", "icmp_code": "icmpv4_code", "arp_op": "arp_op", "arp_spa": "arp_spa",
    "arp_tpa": "arp_tpa", "arp_sha": "arp_sha", "arp_tha": "arp_tha", "tun_id": "tunnel_id",
    "reg5": "reg5", "reg6": "reg6", "reg7": "reg7", "reg9": "reg9",
}
OVS_SET_FIELD_NAMES = {**OVS_MATCH_NAMES, "eth_dst": "eth_dst", "eth_src": "eth_src", "eth_type": "eth_type",
                       "ip_src": "ipv4_src", "ip_dst": "ipv4_dst", "tunnel_id": "tunnel_id",
                       "ip_proto": "ip_proto", "icmpv4_type": "icmpv4_type", "icmpv4_code": "icmpv4_code"}
OVS_NXM_NAMES = {
    "NXM_OF_IN_PORT": "in_port", "OXM_OF_METADATA": "metadata", "NXM_OF_ETH_DST": "eth_dst",
    "NXM_OF_ETH_SRC": "eth_src", "NXM_OF_ETH_TYPE": "eth_type", "NXM_OF_IP_PROTO": "ip_proto",
    "NXM_OF_IP_SRC": "ipv4_src", "NXM_OF_IP_DST": "ipv4_dst", "NXM_OF_ICMP_TYPE": "icmpv4_type",
    "NXM_OF_ICMP_CODE": "icmpv4_code", "NXM_OF_ARP_OP": "arp_op", "NXM_OF_ARP_SPA": "arp_spa",
    "NXM_OF_ARP_TPA": "arp_tpa", "NXM_NX_ARP_SHA": "arp_sha", "NXM_NX_ARP_THA": "arp_tha",
    "NXM_NX_TUN_ID": "tunnel_id", "NXM_NX_REG5": "reg5", "NXM_NX_REG6": "reg6", "NXM_NX_REG7": "reg7", "NXM_NX_REG9": "reg9",
}
OVS_SHORTHANDS = {"ip": {"eth_type": 0x0800}, "arp": {"eth_type": 0x0806}, "rarp": {"eth_type": 0x8035},
                  "icmp": {"eth_type": 0x0800, "ip_proto": 1}, "tcp": {"eth_type": 0x0800, "ip_proto": 6},
                  "udp": {"eth_type": 0x0800, "ip_proto": 17}, "sctp": {"eth_type": 0x0800, "ip_proto": 132}}
OVS_PORTS = {"IN_PORT": 0xFFFFFFF8, "TABLE": 0xFFFFFFF9, "NORMAL": 0xFFFFFFFA, "FLOOD": 0xFFFFFFFB,
             "ALL": 0xFFFFFFFC, "CONTROLLER": 0xFFFFFFFD, "LOCAL": 0xFFFFFFFE}
DUMP_ATTRS = {"cookie", "duration", "table", "n_packets", "n_bytes", "idle_age", "hard_age", "idle_timeout",
              "hard_timeout", "importance", "send_flow_rem", "reset_counts", "no_packet_counts", "no_byte_counts"}


def _ovs_value(name: str, text: str) -> tuple[int, int | None]:
    value, _, mask = text.partition("/")
    if name in MAC_FIELDS:
        return core.mac_to_int(value), core.mac_to_int(mask) if mask else None
    if name in IPV4_FIELDS:
        if not mask:
            return core.ipv4_to_int(value), None
        if "." in mask:
            return core.ipv4_to_int(value), core.ipv4_to_int(mask)
        return core.ipv4_to_int(value), int(ipaddress.ip_network(f"0.0.0.0/{mask}").netmask)
    if name == "in_port" and value in OVS_PORTS:
        return OVS_PORTS[value], None
    return int(value, 0), int(mask, 0) if mask else None


def parse_dump_flows(text: str) -> dict[tuple, dict]:
    """`ovs-ofctl -O OpenFlow13 dump-flows` -> {(table, priority, match): {cookie, actions, ...}}."""
    flows: dict[tuple, dict] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("cookie="):
            continue
        head, _, acts = line.partition(" actions=")
        attrs: dict[str, str] = {}
        matched: dict[str, tuple[int, int | None]] = {}
        priority = 32768  # OFP_DEFAULT_PRIORITY is not printed
        for token in (t.strip() for t in head.split(",")):
            key, eq, value = token.partition("=")
            if not token:
                continue
            if key in DUMP_ATTRS:
                attrs[key] = value
            elif key == "priority":
                priority = int(value)
            elif not eq:
                matched.update({k: (v, None) for k, v in OVS_SHORTHANDS[token].items()})
            else:
                name = OVS_MATCH_NAMES[key]
                matched[name] = _ovs_value(name, value)
        actions: list[Any] = []
        goto = wmeta = None
        for a in re.sub(r"resubmit\(,(\d+)\)", r"resubmit:\1", acts).split(","):
            if a == "drop":
                continue
            if a.startswith("resubmit:"):
                actions.append(Resubmit(int(a[9:])))
                continue
            if a.startswith("output:"):
                actions.append(Output(int(a[7:]), 0))
            elif a.split(":")[0] in OVS_PORTS:
                port, _, max_len = a.partition(":")
                actions.append(Output(OVS_PORTS[port], int(max_len) if max_len else 0))
            elif a.startswith("set_field:"):
                value, _, field = a[10:].partition("->")
                name = OVS_SET_FIELD_NAMES[field]
                actions.append(SetField(name, _ovs_value(name, value)[0]))
            elif a == "dec_ttl":
                actions.append(DecTtl())
            elif a.startswith("move:"):
                src, dst = a[5:].split("->")
                (sname, sbits), (dname, _) = _nxm(src), _nxm(dst)
                actions.append(Move(sname, dname, sbits))
            elif a.startswith("write_metadata:"):
                v, _, m = a[15:].partition("/")
                wmeta = (int(v, 0), int(m, 0) if m else U64)
            elif a.startswith("goto_table:"):
                goto = int(a[11:])
            else:
                raise AssertionError(f"unparsed action {a!r} in {line!r}")
        key = (int(attrs["table"]), priority, frozenset(matched.items()))
        assert key not in flows, f"duplicate flow {key}"
        flows[key] = {"cookie": int(attrs["cookie"], 0), "actions": tuple(actions), "goto": goto,
                      "write_metadata": wmeta}
    return flows


def _nxm(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\w+)\[(?:(\d+)\.\.(\d+))?\]", text)
    assert m, text
    name = OVS_NXM_NAMES[m.group(1)]
    bits = FIELDS[name].bits if m.group(2) is None else int(m.group(3)) - int(m.group(2)) + 1
    return name, bits


def expected_in_ovs(flow_list: list[Flow]) -> dict[tuple, dict]:
    """What dump-flows should show for these flows (OVS drops all-zero masks, shows full ones as exact)."""
    out: dict[tuple, dict] = {}
    for f in flow_list:
        matched = {}
        for name, value, mask in f.match:
            full = (1 << FIELDS[name].bits) - 1
            if mask == 0:
                continue
            matched[name] = (value, None if mask in (None, full) else mask)
        actions = tuple(Output(a.port, a.max_len if a.port == OFPP_CONTROLLER else 0) if isinstance(a, Output)
                        else a for a in f.actions)
        out[(f.table, f.priority, frozenset(matched.items()))] = {
            "cookie": f.cookie, "actions": actions, "goto": f.goto, "write_metadata": f.write_metadata}
    return out


def ovs_valid_flows() -> list[Flow]:
    """Flows Open vSwitch accepts (prerequisites met, writable fields), covering every field/action."""
    from benchmarks.pack import realistic_flows
    mac = 0xFA163E000001
    curated = [
        Flow(0, 100, match(in_port=5), goto=10, write_metadata=(0x17, 0xFFFF), cookie=0x1),
        Flow(0, 100, match(in_port=0xFFFFFFFE), goto=10, write_metadata=(0x18, U64)),
        Flow(0, 0, match(eth_type=0x800), (DecTtl(),), cookie=U64 - 1),
        Flow(10, 200, match(metadata=0x17, eth_dst=mac), (SetField("tunnel_id", 0x1234), Output(3)), cookie=0xDEAD),
        Flow(10, 201, match(metadata=(0x17, 0xFFFF), eth_dst=(0x010000000000, 0x010000000000)),
             (Output(OFPP_CONTROLLER, 0xFFFF),)),
        Flow(10, 202, match(eth_src=(mac, 0xFFFFFFFFFF00), eth_type=0x800, ip_proto=1, icmpv4_type=8,
                            icmpv4_code=0, ipv4_src=0x0A000001, ipv4_dst=(0x0A000000, 0xFFFFFF00)),
             (DecTtl(), SetField("ipv4_dst", 0x0A000005), Output(OFPP_IN_PORT))),
        Flow(10, 203, match(eth_type=0x806, arp_op=1, arp_spa=0x0A000001, arp_tpa=(0x0A000000, 0xFF00FF00),
                            arp_sha=mac, arp_tha=(mac, 0xFFFFFF000000)),
             (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac), SetField("arp_op", 2),
              Move("arp_sha", "arp_tha", 48), Move("arp_spa", "arp_tpa", 32), SetField("arp_sha", mac),
              SetField("arp_spa", 0x0A000002), Output(OFPP_IN_PORT))),
        Flow(10, 204, match(reg6=5, reg7=(3, 0xFF), tunnel_id=(0x1234, 0xFFFF)),
             (SetField("reg6", 9), SetField("metadata", 5), Move("reg6", "reg7", 16),
              Move("tunnel_id", "metadata", 24)), goto=20),
        Flow(10, 205, match(metadata=(0, 0), reg6=(7, U64 >> 32)), (Output(7, 128),), cookie=3),
        Flow(20, 65535, match(eth_type=0x800, ipv4_dst=0x0A000001), (SetField("eth_dst", mac), Output(1)),
             goto=30),
        Flow(30, 7, match(in_port=3, eth_type=0x800, ipv4_src=(0x0A000000, 0xFF0000FF)),
             (SetField("reg7", 0xFFFFFFFF), SetField("tunnel_id", VNI_MAX), Output(0xFFFFFFFC))),
    ]
    return curated + realistic_flows(300, seed=7)


class Switch:
    """The switch's OpenFlow connection, seen from the controller side.

    Uses dfflow.openflow (the real channel) when it is importable, else a minimal
    inline HELLO handshake on a plain socket. Either way: send raw bytes, then
    ``barrier()`` returns every message the switch sent before the BARRIER_REPLY.
    """

    RAW_XID = 0x80000000  # ofchannel never allocates xids with the high bit set

    def __init__(self, ovs: OvsInstance) -> None:
        self.ovs = ovs

    async def __aenter__(self) -> "Switch":
        self.received: list[Any] = []
        try:
            from dfflow import openflow as ofchannel
        except ImportError:  # pragma: no cover - the channel lands in the tree separately
            ofchannel = None
        self.ofchannel = ofchannel
        if ofchannel is not None:
            self.server = ofchannel.OpenFlowServer(port=0, on_message=lambda dp, msg: self.received.append(msg),
                                                   echo_interval=0)
            await self.server.start()
            port = self.server.port
        else:
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(1)
            self.listener.setblocking(False)
            port = self.listener.getsockname()[1]
        self.ovs.vsctl("set-controller", "br-int", f"tcp:127.0.0.1:{port}")
        if ofchannel is not None:
            self.dp = await self.server.wait_for_datapath(timeout=20)
        else:
            loop = asyncio.get_running_loop()
            conn, _ = await asyncio.wait_for(loop.sock_accept(self.listener), 20)
            self.reader, self.writer = await asyncio.open_connection(sock=conn)
            self.writer.write(struct.pack("!BBHI", 4, 0, 8, 1))  # HELLO, OpenFlow 1.3
            hello = await self._read()
            assert hello[1] == 0 and hello[0] >= 4, hello
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # The controller target stays set: OVS flushes every flow when a bridge goes from
        # having a controller to having none (del-controller), which would empty the dump.
        if self.ofchannel is not None:
            await self.server.stop()
        else:
            self.writer.close()
            self.listener.close()

    async def _read(self) -> tuple[int, int, int, int, bytes]:
        header = await self.reader.readexactly(8)
        version, mtype, length, xid = struct.unpack("!BBHI", header)
        body = await self.reader.readexactly(length - 8)
        return version, mtype, length, xid, header + body

    def send(self, buf: bytes) -> None:
        if self.ofchannel is not None:
            self.dp.send_raw(buf)
        else:
            self.writer.write(buf)

    async def barrier(self) -> list[Any]:
        """Everything the switch sent (parsed by os-ken) before answering a barrier."""
        if self.ofchannel is not None:
            await self.dp.barrier(timeout=20)
            got, self.received = self.received, []
            return got
        xid = self.RAW_XID - 1
        self.writer.write(struct.pack("!BBHI", 4, ofp.OFPT_BARRIER_REQUEST, 8, xid))
        got = []
        while True:
            frame = await asyncio.wait_for(self._read(), 20)
            if frame[1] == ofp.OFPT_BARRIER_REPLY and frame[3] == xid:
                return got
            if frame[1] == ofp.OFPT_ECHO_REQUEST:
                self.writer.write(struct.pack("!BBHI", 4, ofp.OFPT_ECHO_REPLY, 8, frame[3]))
                continue
            got.append(parse(frame))


def _errors(msgs: list[Any]) -> list[Any]:
    return [m for m in msgs if isinstance(m, parser.OFPErrorMsg)]


def _ctrl_replies(msgs: list[Any]) -> list[tuple[int, int]]:
    return [(m.type, m.xid) for m in msgs if isinstance(m, parser.ONFBundleCtrlMsg)]


def _dump(ovs: OvsInstance) -> dict[tuple, dict]:
    return parse_dump_flows(ovs.ofctl("dump-flows", "br-int"))


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(120):
            return await coro
    return asyncio.run(bounded())


@pytest.mark.ovs
def test_ovs_installs_exactly_the_packed_bundle(ovs):
    ovs.ofctl("del-flows", "br-int")
    flow_list = ovs_valid_flows()
    batch = FlowBatch.from_flows(flow_list)
    x = Switch.RAW_XID

    async def go() -> list[Any]:
        async with Switch(ovs) as sw:
            sw.send(core.pack_bundle(batch, 42, x))  # open + adds + commit: one write
            return await sw.barrier()

    replies = _run(go())
    assert _errors(replies) == []
    assert _ctrl_replies(replies) == [(ofp.ONF_BCT_OPEN_REPLY, x),
                                      (ofp.ONF_BCT_COMMIT_REPLY, x + 1 + len(flow_list))]
    assert _dump(ovs) == expected_in_ovs(flow_list)

    # Deletes (strict and by cookie), packed as plain FLOW_MODs, remove exactly those flows.
    strict = [f.as_command(Command.DELETE_STRICT) for f in flow_list[:5]]
    by_cookie = [Flow(255, 0, (), cookie=0xDEAD, command=Command.DELETE)]

    async def delete() -> list[Any]:
        async with Switch(ovs) as sw:
            sw.send(core.pack_flow_mods(FlowBatch.from_flows(strict + by_cookie), x))
            return await sw.barrier()

    assert _errors(_run(delete())) == []
    left = [f for f in flow_list[5:] if f.cookie != 0xDEAD]
    assert _dump(ovs) == expected_in_ovs(left)


# A flow the packer accepts but Open vSwitch rejects: ipv4_dst without eth_type=IPv4
# (OFPBMC_BAD_PREREQ). OVS checks each message when it is added to a bundle.
INVALID_FOR_OVS = Flow(10, 300, match(ipv4_dst=0x0A000009), (Output(2),))


@pytest.mark.ovs
def test_ovs_bundle_with_one_invalid_flow_installs_nothing(ovs):
    """open + adds + BARRIER, check errors, then DISCARD: nothing of the bundle is applied."""
    ovs.ofctl("del-flows", "br-int")
    before = [Flow(0, 1, match(in_port=9), (Output(8),), cookie=1)]
    good = [Flow(10, 100 + i, match(metadata=i, eth_dst=0xFA163E000000 + i), (Output(3),)) for i in range(20)]
    flow_list = good[:10] + [INVALID_FOR_OVS] + good[10:]
    x = Switch.RAW_XID

    async def go() -> tuple[list[Any], list[Any]]:
        async with Switch(ovs) as sw:
            sw.send(core.pack_flow_mods(FlowBatch.from_flows(before), x))
            assert _errors(await sw.barrier()) == []
            sw.send(core.pack_bundle(FlowBatch.from_flows(flow_list), 7, x + 10, commit=False))
            staged = await sw.barrier()
            sw.send(ser(parser.ONFBundleCtrlMsg(DP, 7, ofp.ONF_BCT_DISCARD_REQUEST, ATOMIC_ORDERED, []), x + 100))
            return staged, await sw.barrier()

    staged, discarded = _run(go())
    errors = _errors(staged)
    assert [(e.type, e.code, e.xid) for e in errors] == [
        (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_PREREQ, x + 10 + 1 + 10)]  # the add of flow 10
    assert _ctrl_replies(staged) == [(ofp.ONF_BCT_OPEN_REPLY, x + 10)]
    assert _errors(discarded) == [] and _ctrl_replies(discarded) == [(ofp.ONF_BCT_DISCARD_REPLY, x + 100)]
    assert _dump(ovs) == expected_in_ovs(before)


@pytest.mark.ovs
def test_ovs_single_write_bundle_commits_around_a_rejected_add(ovs):
    """Documents OVS 3.1: a bad add is answered with an error and left out of the bundle;
    a COMMIT in the same write then applies the rest. Hence the staged protocol above."""
    ovs.ofctl("del-flows", "br-int")
    good = [Flow(10, 100 + i, match(metadata=i), (Output(3),)) for i in range(4)]
    x = Switch.RAW_XID

    async def go() -> list[Any]:
        async with Switch(ovs) as sw:
            sw.send(core.pack_bundle(FlowBatch.from_flows(good[:2] + [INVALID_FOR_OVS] + good[2:]), 8, x))
            return await sw.barrier()

    replies = _run(go())
    assert [(e.code, e.xid) for e in _errors(replies)] == [(ofp.OFPBMC_BAD_PREREQ, x + 3)]
    assert _ctrl_replies(replies) == [(ofp.ONF_BCT_OPEN_REPLY, x), (ofp.ONF_BCT_COMMIT_REPLY, x + 6)]
    assert _dump(ovs) == expected_in_ovs(good)


@pytest.mark.ovs
def test_ovs_channel_send_bundle_of_packed_flow_mods(ovs):
    """dfflow.openflow's send_bundle takes the packer's FLOW_MOD buffer as is."""
    ofchannel = pytest.importorskip("dfflow.openflow")
    ovs.ofctl("del-flows", "br-int")
    flow_list = ovs_valid_flows()[:40]

    async def go() -> None:
        async with Switch(ovs) as sw:
            await sw.dp.send_bundle(core.pack_flow_mods(FlowBatch.from_flows(flow_list), Switch.RAW_XID))
            assert _dump(ovs) == expected_in_ovs(flow_list)
            bad = FlowBatch.from_flows([Flow(40, 1, match(metadata=1), (Output(1),)), INVALID_FOR_OVS])
            with pytest.raises(ofchannel.BundleError):
                await sw.dp.send_bundle(core.pack_flow_mods(bad, Switch.RAW_XID + 1000))

    _run(go())
    assert _dump(ovs) == expected_in_ovs(flow_list)


def test_ovs_applies_a_plan_bundle_packed_and_framed_in_one_call_and_refuses_it_whole(ovs):
    """The daemon's send: Datapath.send_bundle of a controller.compiler.PlanBundle (the packer frames
    the open, the adds and the commit itself), pipelined as a plan's or checked before its commit."""
    ofchannel = pytest.importorskip("dfflow.openflow")
    ovs.ofctl("del-flows", "br-int")
    flow_list = ovs_valid_flows()[:40]
    half = len(flow_list) // 2

    async def go() -> None:
        async with Switch(ovs) as sw:
            plan = [FlowBatch.from_flows(flow_list[:half]), *flow_list[half:]]
            await sw.dp.send_bundle(compiler.PlanBundle(plan), pipelined=True)
            assert _dump(ovs) == expected_in_ovs(flow_list)
            bad = [FlowBatch.from_flows([Flow(40, 1, match(metadata=1), (Output(1),)), INVALID_FOR_OVS])]
            with pytest.raises(ofchannel.BundleError) as refused:
                await sw.dp.send_bundle(compiler.PlanBundle(bad))
            # the switch's error for the add is the bundle's (its xids are one block): refused before the commit
            assert refused.value.stage == "add" and len(refused.value.errors) == 1
            with pytest.raises(ofchannel.BundleError) as left_out:
                await sw.dp.send_bundle(compiler.PlanBundle(bad), pipelined=True)
            assert left_out.value.stage == "pipelined" and len(left_out.value.errors) == 1
            assert sw.dp.stats["unsolicited_errors"] == 0
            ovs.ofctl("del-flows", "br-int", "table=40,metadata=1")  # the good add the pipelined bundle committed

    _run(go())
    assert _dump(ovs) == expected_in_ovs(flow_list)


def test_an_experimenter_field_is_packed_in_matches_and_refused_in_actions():
    flow = Flow(14, 90, match(eth_type=0x0800, ip_proto=6, tcp_flags=(0, 2)), goto=20, cookie=5)
    assert core.pack_flow_mods(FlowBatch.from_flows([flow]), 1) == osken_flow_mods([flow], 1)
    with pytest.raises(ValueError, match="experimenter"):
        core.pack_flow_mods(FlowBatch.from_flows([Flow(0, 1, (), (SetField("tcp_flags", 1),))]), 1)
