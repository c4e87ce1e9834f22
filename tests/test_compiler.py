"""The controller's send path packs with the compiled core and matches os-ken byte for byte."""
import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller import compiler
from controller.apps.l2 import L2App
from controller.engine import Engine
from dfflow.openflow import XidAllocator
from controller.view import Vif
from dfflow import core
from dfflow.flowbatch import FlowBatch
from dfflow.flows import Command, Flow, Output, SetField
from dfflow.openflow.framing import wrap_bundle_adds
from dfflow.models import LogicalPort, LogicalSwitch, MigrationRecord, Subnet


class FakeDatapath:
    ofproto, ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser

    def __init__(self):
        self.xids = XidAllocator(100)


def pending_port_messages():
    """A realistic plan: a pending announce destination (learn + resubmit flows among packable ones),
    as the sender gets it: the compiled core's rows, then a few flows."""
    engine = Engine("D", [L2App()])
    engine.commit(engine.tunnels_changed({"S": 7}))
    for obj in (LogicalSwitch(id="n", topic="t", segmentation_id=42),
                Subnet(id="s", topic="t", lswitch="n", cidr="10.0.0.0/24"),
                LogicalPort(id="p", topic="t", lswitch="n", mac="fa:16:3e:00:00:01", ips=["10.0.0.5"],
                            binding_chassis="S",
                            migration=MigrationRecord(chassis="D", source="S", strategy="announce"))):
        engine.commit(engine.nb_event({"table": obj.table, "action": "create", "id": obj.id,
                                       "object": obj.to_dict()}))
    messages = engine.vif_online(Vif("p", "tapp", 3)).messages()
    return messages + [f.as_command(Command.DELETE_STRICT) for f in as_flows(messages)[:3]]


def as_flows(messages):
    return [f for m in messages for f in (compiler.flows_of_rows(m.rows) if isinstance(m, (FlowBatch, core.Rows))
                                          else [m])]


def pending_port_flows():
    return as_flows(pending_port_messages())


def test_packed_plan_is_byte_identical_to_os_ken_in_the_same_order():
    messages = pending_port_messages()
    flows = as_flows(messages)
    assert any(not compiler.packable(f) for f in flows) and any(compiler.packable(f) for f in flows)
    packed = compiler.flow_mods(FakeDatapath(), messages)
    expected = b""
    for i, flow in enumerate(flows):
        message = flow.to_osken(FakeDatapath(), 100 + i)
        message.serialize()
        expected += bytes(message.buf)
    assert packed == expected


def test_an_empty_plan_packs_to_nothing():
    assert compiler.flow_mods(FakeDatapath(), []) == b""


def test_a_plan_bundle_is_os_ken_bundle_framing_around_the_same_flow_mods():
    """What the daemon sends (Datapath.send_bundle of a PlanBundle: packed and framed in one call)
    is os-ken's ONF bundle -- open, a bundle add around each FLOW_MOD with its xid, commit -- around
    the FLOW_MODs flow_mods makes, the flow mods numbered first, then the open and the commit."""
    messages = pending_port_messages()
    flows = as_flows(messages)
    dp, ofp, parser = FakeDatapath(), ofproto_v1_3, ofproto_v1_3_parser
    flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
    for commit in (True, False):
        framed, xids, open_xid = compiler.PlanBundle(messages).frame_bundle(dp, 7, flags, commit)
        first = open_xid - len(flows)
        expected = [(parser.ONFBundleCtrlMsg(dp, 7, ofp.ONF_BCT_OPEN_REQUEST, flags, []), open_xid)]
        expected += [(parser.ONFBundleAddMsg(dp, 7, flags, f.to_osken(dp, first + i), []), first + i)
                     for i, f in enumerate(flows)]
        if commit:
            expected.append((parser.ONFBundleCtrlMsg(dp, 7, ofp.ONF_BCT_COMMIT_REQUEST, flags, []), open_xid + 1))
        wire = b""
        for message, xid in expected:
            message.set_xid(xid)
            message.serialize()
            wire += bytes(message.buf)
        assert bytes(framed) == wire
        assert list(xids) == list(range(first, open_xid))
        assert dp.xids.alloc() == open_xid + (2 if commit else 1)  # one block: nothing else took xids


def test_a_plan_bundle_with_a_bad_row_raises_naming_the_message_and_flow():
    good = Flow(10, 100, (("eth_dst", 0xFA163E000001, None),), (Output(3),), goto=20)
    bad = FlowBatch.from_flows([good, good])
    bad.rows["table"][1] = 255
    with pytest.raises(ValueError, match="message 1: flow 1: table 255 out of range"):
        compiler.PlanBundle([FlowBatch.from_flows([good]), bad]).frame_bundle(FakeDatapath(), 7, 3, True)


class _PythonXids:
    """A channel's xids from an allocator that is not the compiled one (the packer calls its alloc)."""

    def __init__(self, start):
        self.next, self.calls = start, []

    def alloc(self, n=1):
        self.calls.append(n)
        first, self.next = self.next, self.next + n
        return first


def test_a_plan_bundle_numbers_from_any_allocator_of_the_channel_as_from_the_compiled_one():
    messages = pending_port_messages()
    compiled, python = FakeDatapath(), FakeDatapath()
    python.xids = _PythonXids(100)
    made = compiler.PlanBundle(messages).frame_bundle(compiled, 7, 3, True)
    assert compiler.PlanBundle(messages).frame_bundle(python, 7, 3, True) == made
    assert python.xids.calls == [len(as_flows(messages)) + 2]  # one block for the adds, the open and the commit


def test_a_plan_bundle_of_rows_larger_than_usual_is_the_flow_mods_wrapped_in_bundle_adds():
    """Rows past the packer's first guess of a FLOW_MOD's size (eight set-fields, several matches): its
    output grows, and is the same bytes as the flow mods wrapped in bundle adds."""
    big = [Flow(10, 100 + i, (("eth_dst", 0xFA163E000001 + i, None), ("eth_src", 0xFA163E100000, None),
                              ("in_port", 3, None), ("metadata", i, None)),
                tuple(SetField("eth_src", 0xFA163E200000 + k) for k in range(7)) + (Output(4),), goto=20)
           for i in range(40)]
    batch = FlowBatch.from_flows(big)
    framed, xids, open_xid = compiler.PlanBundle([batch]).frame_bundle(FakeDatapath(), 7, 3, True)
    flow_mods = compiler.flow_mods(FakeDatapath(), [batch])
    assert len(framed) > 2 * 24 + 40 * 256  # more than the first guess of 256 bytes an add
    assert bytes(framed) == bytes(wrap_bundle_adds(flow_mods, 4, 7, 3, open_xid=open_xid, commit_xid=open_xid + 1)[0])


def _cloud_change():
    """An evacuation as one chassis' controller compiles it (benchmarks.compile's cloud: L2, L3 and DNAT
    programs, floating IPs), and the cloud to check it against."""
    from benchmarks.compile import Cloud
    cloud = Cloud(ports=60, chassis=3)
    moves = cloud.evacuation(0, 8)
    return cloud, moves


def test_a_compiled_change_is_packed_where_it_is_compiled_and_framed_as_os_ken_frames_its_flows():
    """compile_port_changes packs the change's rows in the same call (bundle adds whose xids, bundle id
    and flags the framing patches in): every chassis' bundle is os-ken's, byte for byte, and the same
    as the framing packing the change's rows itself."""
    from benchmarks.compile import BUNDLE_FLAGS
    cloud, moves = _cloud_change()
    ref, offsets = cloud.osken(moves, xid_start=1, bundle_id_start=1)
    dp, unpacked = FakeDatapath(), FakeDatapath()
    dp.xids, unpacked.xids = XidAllocator(1), XidAllocator(1)
    sides = []
    for c in range(cloud.n_chassis):
        messages = cloud.chassis_messages(moves, c)
        assert len(messages) == 1 and messages[0].packed
        change = messages[0]
        sides.append((change.ndel > 0, change.nadd > 0))
        framed, xids, open_xid = compiler.PlanBundle(messages).frame_bundle(dp, c + 1, BUNDLE_FLAGS, True)
        assert bytes(framed) == ref[offsets[c]:offsets[c + 1]]
        assert list(xids) == list(range(open_xid - change.n, open_xid)) and len(xids) == change.n
        as_rows = [FlowBatch.of_rows(change.deletes.array), FlowBatch.of_rows(change.adds.array)]
        assert compiler.PlanBundle(as_rows).frame_bundle(unpacked, c + 1, BUNDLE_FLAGS, True)[0] == framed
        # without the bundle: its FLOW_MODs alone, as the packer makes them of the rows
        assert compiler.flow_mods(FakeDatapath(), [change]) == compiler.flow_mods(FakeDatapath(), as_rows)
        # each side alone (a plan of several changes sends every delete first)
        assert (compiler.flow_mods(FakeDatapath(), [change.deletes, change.adds])
                == compiler.flow_mods(FakeDatapath(), as_rows))
    assert (True, True) in sides  # a chassis with both deletes and adds


def test_a_change_whose_rows_carry_a_template_is_left_for_the_framing_to_pack():
    """A pending port's announce gate (a learn action: rows carrying its template's params) cannot be
    packed by the core: its change is sent as rows, packed and encoded when framed."""
    change = pending_port_messages()[0]
    assert isinstance(change, core.ChangeRows) and not change.packed
    assert any(not compiler.packable(f) for f in as_flows([change]))


def test_a_compiled_changes_rows_cannot_be_written_once_it_is_made():
    """What a change sends is packed when it is made: its rows are read-only from then on, so they
    cannot come to differ from its bundle adds."""
    cloud, moves = _cloud_change()
    change = cloud.chassis_messages(moves, 1)[0]
    for rows in (change.array, change.deletes.array, change.adds.array):
        with pytest.raises(ValueError, match="read-only"):
            rows["priority"][0] = 1


def test_a_plan_of_several_changes_sends_every_delete_before_every_add_and_one_change_whole():
    from controller.flowstate import Plan
    cloud, moves = _cloud_change()
    table, program = cloud.table, cloud.program

    def arrival(p, dest):  # the port's flows on its destination, from remote to local
        return compiler.compile_port_changes(program, table, [(cloud._rows[p], cloud.role(p, dest, 0, False),
                                                               cloud.role(p, dest, dest, True))])
    def departure(p, dest):  # its flows on the chassis it leaves, from local to remote
        return compiler.compile_port_changes(program, table, [(cloud._rows[p], cloud.role(p, 0, 0, False),
                                                               cloud.role(p, 0, dest, True))])
    one = next(c for c in (arrival(p, dest) for p, dest in moves) if c.ndel and c.nadd)
    two = departure(*moves[1])
    assert one.ndel and one.nadd and two.ndel and two.nadd
    assert Plan(changes=[one]).messages() == [one]
    sent = Plan(changes=[one, two]).messages()
    assert [(type(m), len(m)) for m in sent] == [(core.Rows, one.ndel), (core.Rows, two.ndel),
                                                 (core.Rows, one.nadd), (core.Rows, two.nadd)]
    assert [m.rows.tobytes() for m in sent] == [one.deletes.rows.tobytes(), two.deletes.rows.tobytes(),
                                                one.adds.rows.tobytes(), two.adds.rows.tobytes()]
    assert Plan(changes=[one, two]).n_flow_mods == one.n + two.n
