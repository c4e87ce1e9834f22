"""The controller's send path packs with the compiled core and matches os-ken byte for byte."""
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller import compiler
from controller.apps.l2 import L2App
from controller.engine import Engine
from dfflow.openflow import XidAllocator
from controller.view import Vif
from dfflow.flowbatch import FlowBatch
from dfflow.flows import Command
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
    return [f for m in messages for f in (compiler.flows_of_rows(m.rows) if isinstance(m, FlowBatch) else [m])]


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
