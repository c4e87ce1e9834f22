"""Open vSwitch restarted under a running controller, on one chassis of three: ovs-vswitchd (stopped,
and killed) comes back with empty flow tables and the controller, reconnected over OpenFlow,
programs exactly its flows again; ovsdb-server comes back and the controller's OVSDB monitor
reconnects. Traffic returns, nothing stale is left, and live migrations from and to that chassis
work afterwards."""
from __future__ import annotations

import signal
import time

import pytest

from controller_fixtures import controller_status, dump_flows, migrate, network_with_vms, pings, running_cloud, wait_until
from fault_audit import assert_clean
from test_robust_nb_faults import controller_pids, received, start_ping

pytestmark = pytest.mark.ovs
IPS = {"A1": "10.0.0.11", "B1": "10.0.0.21", "C1": "10.0.0.31"}
RESTARTED = "chassis-2"


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(3) as c:
        network_with_vms(c, {name: (f"chassis-{i}", ip) for i, (name, ip) in enumerate(IPS.items(), start=1)})
        yield c


def flows(sb, chassis: str) -> list[str]:
    return sorted(dump_flows(sb, chassis))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_a_restarted_ovs_vswitchd_gets_exactly_its_flows_back_from_the_running_controller(cloud, sig):
    sb = cloud.sb
    assert_clean(cloud)
    before, pids = flows(sb, RESTARTED), controller_pids(sb)
    connects = controller_status(sb, RESTARTED)["stats"]["switch_connects"]
    ping = start_ping(sb, "A1", IPS["B1"], 4)
    time.sleep(0.5)
    sb.ovs(RESTARTED).restart_vswitchd(sig=sig)
    wait_until(lambda: controller_status(sb, RESTARTED)["stats"]["switch_connects"] == connects + 1, 15,
               what="the controller reconnected to the new ovs-vswitchd")
    wait_until(lambda: flows(sb, RESTARTED) == before, 15, what="every flow programmed again, none more")
    sent, got = received(ping)
    assert got >= sent // 2, f"{sent - got} of {sent} pings lost: traffic did not come back"
    assert pings(sb, "A1", IPS["B1"]) and pings(sb, "C1", IPS["B1"]) and pings(sb, "B1", IPS["C1"])
    assert controller_pids(sb) == pids, "a controller was restarted: the reconnection is the controller's job"
    assert_clean(cloud)


def test_a_restarted_ovsdb_server_leaves_the_flows_and_traffic_and_the_monitor_reconnects(cloud):
    sb = cloud.sb
    before, pids = flows(sb, RESTARTED), controller_pids(sb)
    reconnects = controller_status(sb, RESTARTED)["ovsdb"].get("monitor_reconnects", 0)
    ping = start_ping(sb, "A1", IPS["B1"], 3)
    sb.ovs(RESTARTED).restart_ovsdb()
    wait_until(lambda: controller_status(sb, RESTARTED)["ovsdb"].get("monitor_reconnects", 0) == reconnects + 1,
               15, what="the controller's OVSDB monitor reconnected")
    sent, got = received(ping)
    assert got == sent, f"{sent - got} of {sent} pings lost across an ovsdb-server restart"
    assert flows(sb, RESTARTED) == before
    assert controller_pids(sb) == pids
    assert_clean(cloud)


def test_live_migrations_from_and_to_the_restarted_chassis_work_afterwards(cloud):
    sb = cloud.sb
    for dest in ("chassis-3", RESTARTED):
        result = migrate(cloud, "B1", dest)
        assert "done" in result["states"], result
        assert cloud.nb("get", "lport", sb.vm("B1").vifs[0].port_id).binding_chassis == dest
        wait_until(lambda: pings(sb, "A1", IPS["B1"]), 15, what=f"A1 -> B1 on {dest}")
        assert_clean(cloud)
