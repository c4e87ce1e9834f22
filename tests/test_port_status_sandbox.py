"""On the real sandbox: each chassis registers its datapath and reports its VIFs up and down
(lport_status), and a restarted controller resynchronises its reports from OVSDB."""
from __future__ import annotations

import pytest

from dfflow.sandbox.topology import DATAPATH_TYPE, INT_BRIDGE
from controller_fixtures import controller_status, running_cloud, wait_controllers_ready, wait_until
from dfflow.models import Chassis, PortStatus

pytestmark = pytest.mark.ovs


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(2) as c:
        c.call("create_network", "net1", "10.1.0.0/24")
        yield c


def status_up(cloud, port_id: str) -> set[str]:
    status = cloud.nb("get", PortStatus.table, port_id)
    return set(status.up) if status is not None else set()


def test_each_chassis_registers_its_bridge_and_datapath_type(cloud):
    assert all(ch["osvif_alive"] for ch in cloud.sb.status()["chassis"])  # nova-compute's os-vif, per chassis
    for ch in cloud.sb.chassis_list():
        row = cloud.nb("get", Chassis.table, ch.name)
        assert (row.datapath_type, row.bridge_name) == (DATAPATH_TYPE, INT_BRIDGE) == ("netdev", "br-int")
        assert cloud.sb.ovs(ch.name).vsctl("get", "Bridge", INT_BRIDGE, "datapath_type").strip() == "netdev"
        assert controller_status(cloud.sb, ch.name)["datapath_type"] == "netdev"


def test_a_plugged_vif_is_reported_up_on_its_chassis_and_an_unplugged_one_taken_back(cloud):
    sb = cloud.sb
    vm = cloud.call("create_vm", "A", "chassis-1", "net1", "10.1.0.11")
    port_id = vm.vifs[0].port_id
    wait_until(lambda: status_up(cloud, port_id) == {"chassis-1"}, 10, what="A up on chassis-1")
    port = cloud.nb("get", "lport", port_id)
    sb.plug_vif("A", "chassis-2", port_id, port.mac, "eth1")  # as a migration's destination would
    wait_until(lambda: status_up(cloud, port_id) == {"chassis-1", "chassis-2"}, 10, what="up on both")
    sb.unplug_vif("A", "eth1")
    wait_until(lambda: status_up(cloud, port_id) == {"chassis-1"}, 10, what="chassis-2 taken back")
    for ch in ("chassis-1", "chassis-2"):
        st = controller_status(sb, ch)
        assert st["port_status"]["stats"].get("write_errors", 0) == 0
        assert st["stats"].get("handler_errors", 0) == 0
        assert st["engine"].get("ignored_events", 0) == 0  # the daemon drops them before the engine
        assert st["stats"].get("nb_events.lport_status", 0) > 0  # ... though they do arrive


def test_a_restarted_controller_reports_what_ovsdb_shows_and_takes_back_what_went(cloud):
    sb = cloud.sb
    vm = cloud.call("create_vm", "B", "chassis-2", "net1", "10.1.0.12")
    gone = vm.vifs[0].port_id
    wait_until(lambda: status_up(cloud, gone) == {"chassis-2"}, 10, what="B up on chassis-2")
    sb.stop_controller("chassis-2")
    sb.unplug_vif("B", "eth0")  # while the controller is away
    # plugged while the controller is away (Nova would wait for its vif-plugged: plug it by hand)
    port = cloud.call("create_port", "net1", "chassis-2", "10.1.0.13", name="C-port")
    came = sb.plug_vm("C", "chassis-2", port.id, port.mac, ip="10.1.0.13/24").vifs[0].port_id
    assert status_up(cloud, gone) == {"chassis-2"} and status_up(cloud, came) == set()
    sb.start_controller("chassis-2")
    wait_controllers_ready(sb)
    wait_until(lambda: status_up(cloud, gone) == set() and status_up(cloud, came) == {"chassis-2"}, 10,
               what="chassis-2's reports resynchronised")
