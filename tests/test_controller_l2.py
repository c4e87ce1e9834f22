"""dfflow-controller on a real 3-chassis sandbox: L2 across chassis, isolation, churn, restarts."""
from __future__ import annotations

import os
import re
import signal

import pytest

from controller.apps.l2 import L2App
from dfflow.sandbox.topology import INT_BRIDGE
from sandbox_fixtures import tcp_transfer
from controller_fixtures import (running_cloud, controller_status, dump_flows, flow_cookies, pings,
                                 rx_packets, wait_controllers_ready, wait_until)

pytestmark = pytest.mark.ovs


@pytest.fixture(scope="module")
def cloud():
    """Chassis 1-3 with controllers; net1 with A1, A2 on chassis-1, B1 on chassis-2, C1 on chassis-3."""
    with running_cloud(3) as c:
        c.call("create_network", "net1", "10.0.0.0/24")
        c.call("create_vm", "A1", "chassis-1", "net1", "10.0.0.11", mac="fa:16:3e:00:00:11")
        c.call("create_vm", "A2", "chassis-1", "net1", "10.0.0.12", mac="fa:16:3e:00:00:12")
        c.call("create_vm", "B1", "chassis-2", "net1", "10.0.0.21", mac="fa:16:3e:00:00:21")
        c.call("create_vm", "C1", "chassis-3", "net1", "10.0.0.31", mac="fa:16:3e:00:00:31")
        yield c


IPS = {"A1": "10.0.0.11", "A2": "10.0.0.12", "B1": "10.0.0.21", "C1": "10.0.0.31"}


def test_every_pair_of_vms_pings_across_chassis(cloud):
    sb = cloud.sb
    for src in IPS:
        for dst, ip in IPS.items():
            if src != dst:
                wait_until(lambda: pings(sb, src, ip), 15, what=f"{src} -> {dst} ping")


def test_tcp_transfer_between_chassis(cloud):
    wait_until(lambda: pings(cloud.sb, "A1", IPS["C1"]), 15, what="A1 -> C1")
    tcp_transfer(cloud.sb, "A1", "C1", IPS["C1"], nbytes=500_000)
    tcp_transfer(cloud.sb, "B1", "A2", IPS["A2"], nbytes=500_000)


def test_networks_reusing_ips_and_macs_stay_isolated(cloud):
    sb = cloud.sb
    cloud.call("create_network", "net2", "10.0.0.0/24")
    cloud.call("create_vm", "D1", "chassis-1", "net2", "10.0.0.11", mac="fa:16:3e:00:00:11")
    cloud.call("create_vm", "D2", "chassis-2", "net2", "10.0.0.21", mac="fa:16:3e:00:00:21")
    try:
        wait_until(lambda: pings(sb, "D1", "10.0.0.21"), 15, what="D1 -> D2 inside net2")
        assert not pings(sb, "D1", IPS["C1"], count=2)  # C1 is on net1 only
        before = rx_packets(sb, "D2")
        assert pings(sb, "A1", IPS["B1"], count=20, wait=1)  # same IP and MAC as D2, other network
        assert rx_packets(sb, "D2") - before < 3
    finally:
        cloud.call("delete_vm", "D1")
        cloud.call("delete_vm", "D2")


def test_deleted_vm_leaves_no_flow_on_any_chassis_and_stops_answering(cloud):
    sb = cloud.sb
    cloud.call("create_vm", "E1", "chassis-3", "net1", "10.0.0.41", mac="fa:16:3e:00:00:41")
    wait_until(lambda: pings(sb, "A1", "10.0.0.41"), 15, what="A1 -> E1")
    port_id = sb.vm("E1").vifs[0].port_id
    cookie = L2App().cookie(port_id)
    assert any(cookie in flow_cookies(dump_flows(sb, ch.name)) for ch in sb.chassis_list())
    cloud.call("delete_vm", "E1")

    def gone() -> bool:
        for ch in sb.chassis_list():
            lines = dump_flows(sb, ch.name)
            if cookie in flow_cookies(lines) or any("fa:16:3e:00:00:41" in line for line in lines):
                return False
        return True

    wait_until(gone, 10, what="every flow of E1 removed")
    assert not pings(sb, "A1", "10.0.0.41", count=2)


def test_ovsdb_server_restarted_under_a_running_controller_keeps_vifs_coming_and_going(cloud):
    sb = cloud.sb
    sb.ovs("chassis-2").restart_ovsdb()
    wait_until(lambda: controller_status(sb, "chassis-2")["ovsdb"].get("monitor_reconnects", 0) >= 1, 10,
               what="the controller's OVSDB monitor reconnected")
    cloud.call("create_vm", "B2", "chassis-2", "net1", "10.0.0.22", mac="fa:16:3e:00:00:22")
    wait_until(lambda: pings(sb, "A1", "10.0.0.22"), 15, what="A1 -> B2, plugged after the restart")
    cookie = L2App().cookie(sb.vm("B2").vifs[0].port_id)
    cloud.call("delete_vm", "B2")
    wait_until(lambda: cookie not in flow_cookies(dump_flows(sb, "chassis-2")), 10,
               what="B2's flows gone from chassis-2 after its unplug")
    status = controller_status(sb, "chassis-2")
    assert status["ovsdb"]["monitor_disconnects"] == status["ovsdb"]["monitor_reconnects"] == 1
    assert status["stats"].get("handler_errors", 0) == 0
    assert pings(sb, "A1", IPS["B1"])


def _tunnel_peers(sb, chassis):
    out = sb.ovs(chassis).vsctl("--columns=external_ids", "find", "Interface", "type=geneve")
    return sorted(set(re.findall(r'dfflow-peer="?([^",\s}]+)', out)))


def test_chassis_leaving_and_joining_removes_and_adds_its_tunnels(cloud):
    sb = cloud.sb
    assert _tunnel_peers(sb, "chassis-1") == ["chassis-2", "chassis-3"]
    sb.stop_controller("chassis-3")  # a clean stop marks the chassis down in the NB db
    wait_until(lambda: _tunnel_peers(sb, "chassis-1") == ["chassis-2"], 10, what="tunnel to chassis-3 gone")
    assert _tunnel_peers(sb, "chassis-2") == ["chassis-1"]
    sb.start_controller("chassis-3")
    wait_until(lambda: _tunnel_peers(sb, "chassis-1") == ["chassis-2", "chassis-3"], 15,
               what="tunnel to chassis-3 back")
    wait_controllers_ready(sb)
    wait_until(lambda: pings(sb, "A1", IPS["C1"]), 15, what="A1 -> C1 after chassis-3 rejoined")


def test_controller_killed_and_restarted_reconciles_without_duplicates(cloud):
    sb = cloud.sb
    wait_until(lambda: pings(sb, "B1", IPS["A1"]), 15, what="B1 -> A1")
    before = sorted(dump_flows(sb, "chassis-1"))
    pid = sb.status()["chassis"][0]["controller_pid"]
    os.kill(pid, signal.SIGKILL)
    assert pings(sb, "B1", IPS["A1"])  # flows stay in OVS while the controller is away
    sb.start_controller("chassis-1")
    wait_controllers_ready(sb)
    status = wait_until(lambda: (lambda st: st if st["stats"].get("reconciles") else None)(
        controller_status(sb, "chassis-1")), 10, what="reconcile after restart")
    after = sorted(dump_flows(sb, "chassis-1"))
    assert after == before
    assert len(after) == len(set(after))
    assert status["stats"].get("handler_errors", 0) == 0
    assert status["flows"] == len(after)
    assert pings(sb, "B1", IPS["A1"])


def test_bad_input_is_logged_counted_and_survived(cloud):
    sb = cloud.sb
    ovs = sb.ovs("chassis-2")
    # a VIF whose iface-id names no NB port, and one whose interface cannot exist (ofport -1)
    ovs.vsctl("add-port", INT_BRIDGE, "ghost0", "--", "set", "Interface", "ghost0", "type=internal",
              "external_ids:iface-id=no-such-port")
    ovs.vsctl("add-port", INT_BRIDGE, "broken0", "--", "set", "Interface", "broken0", "type=nonexistent",
              "external_ids:iface-id=also-missing")
    try:
        wait_until(lambda: controller_status(sb, "chassis-2")["stats"].get("unknown_vifs", 0) >= 1, 10,
                   what="unknown VIF counted")
        st = controller_status(sb, "chassis-2")
        assert "no-such-port" in st["pending_vifs"]
        assert "also-missing" not in st["vifs"]
        assert pings(sb, "B1", IPS["A1"])  # the controller still serves
    finally:
        ovs.vsctl("del-port", INT_BRIDGE, "ghost0")
        ovs.vsctl("del-port", INT_BRIDGE, "broken0")


def test_port_on_a_network_this_chassis_cannot_see_is_counted_not_fatal(cloud):
    from dfflow.models import LogicalPort, LogicalSwitch, Subnet
    sb = cloud.sb
    cloud.nb("create", LogicalSwitch(id="hidden", topic="other-tenant", segmentation_id=4000))
    cloud.nb("create", Subnet(id="hidden-subnet", topic="other-tenant", lswitch="hidden",
                              cidr="10.9.0.0/24", gateway_ip="10.9.0.1"))
    # a port of the "demo" topic (which chassis-2 follows) on a network of a topic it does not follow
    cloud.nb("create", LogicalPort(id="cross-topic-port", topic="demo", lswitch="hidden",
                                   mac="fa:16:3e:00:09:01", ips=["10.9.0.5"], binding_chassis="chassis-2"))
    ovs = sb.ovs("chassis-2")
    ovs.vsctl("add-port", INT_BRIDGE, "xtopic0", "--", "set", "Interface", "xtopic0", "type=internal",
              "external_ids:iface-id=cross-topic-port")
    try:
        wait_until(lambda: controller_status(sb, "chassis-2")["engine"].get("ports_without_switch", 0) >= 1,
                   10, what="port without a known network counted")
        assert controller_status(sb, "chassis-2")["stats"].get("handler_errors", 0) == 0
        assert pings(sb, "B1", IPS["A1"])
    finally:
        ovs.vsctl("del-port", INT_BRIDGE, "xtopic0")
