"""Flows read back from OpenFlow equal the flows that were sent, so reconciliation keeps what is right."""
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.reconcile import flow_from_stats, reconcile
from test_compiler import FakeDatapath, pending_port_flows
from dfflow.flows import Command


def read_back(flow):
    message = flow.to_osken(FakeDatapath(), 1)
    message.serialize()
    return ofproto_v1_3_parser.OFPFlowMod.parser(FakeDatapath(), ofproto_v1_3.OFP_VERSION, message.msg_type,
                                                 message.msg_len, 1, bytes(message.buf))


def test_every_kind_of_flow_reads_back_equal():
    flows = [f for f in pending_port_flows() if f.command == Command.ADD]
    assert flows
    for flow in flows:
        assert flow_from_stats(read_back(flow)) == flow.as_command(Command.ADD)


def test_reconcile_keeps_right_flows_replaces_wrong_ones_and_ignores_foreign_cookies():
    flows = [f for f in pending_port_flows() if f.command == Command.ADD]
    desired = {f.key: f for f in flows}
    dumped = [read_back(f) for f in flows[1:]]  # the first is missing
    stale = flows[2].as_command(Command.ADD)
    dumped.append(read_back(type(stale)(stale.table, stale.priority + 1, stale.match, stale.actions, stale.goto,
                                        stale.write_metadata, stale.cookie)))  # ours, not wanted
    foreign = type(stale)(stale.table, 7, stale.match, cookie=0x77)  # cookie of no app of ours
    dumped.append(read_back(foreign))
    plan, kept = reconcile(dumped, desired, app_ids={1})
    assert kept == len(flows) - 1
    assert [f.key for f in plan.adds] == [flows[0].key]
    assert [f.priority for f in plan.deletes] == [stale.priority + 1]
