"""No `lport_status` row outlives its port: a chassis never writes the status of a port the NB no
longer has, and removes the row when the port goes (against a real Redis; on the sandbox at the end)."""
from __future__ import annotations

import time

import pytest

from controller.portstatus import StatusReporter
from controller_fixtures import controller_status, running_cloud, wait_until
from dfflow.errors import NotFound
from dfflow.models import LogicalPort, PortStatus
from test_port_status import make_port


def reporter(nb, chassis):
    # a view that still knows the port's topic after the NB deleted it: the race the NB write closes
    return StatusReporter(chassis, nb, lambda pid: "t", coalesce_delay=0)


async def test_an_up_report_for_a_port_deleted_meanwhile_writes_no_row(nb):
    await make_port(nb)
    await nb.delete(LogicalPort.table, "p1")
    a = reporter(nb, "A")
    a.up("p1", 1.0)
    assert await a.flush()  # kept for a retry while its VIF is here (the port may come back)
    assert a.stats["ports_not_known"] == 1
    assert await nb.get(PortStatus.table, "p1") is None


async def test_a_report_on_the_row_of_a_deleted_port_removes_the_row(nb):
    await make_port(nb)
    a, b = reporter(nb, "A"), reporter(nb, "B")
    a.up("p1", 1.0)
    assert not await a.flush()
    await nb.delete(LogicalPort.table, "p1")  # as neutron-server's driver does: the row stays behind
    b.up("p1", 2.0)  # a late report from another chassis
    assert await b.flush()
    assert await nb.get(PortStatus.table, "p1") is None
    a.down("p1")
    assert not await a.flush()
    assert await nb.get(PortStatus.table, "p1") is None


async def test_gone_removes_the_row_of_a_deleted_port(nb):
    await make_port(nb)
    a = reporter(nb, "A")
    a.up("p1", 1.0)
    await a.flush()
    await nb.delete(LogicalPort.table, "p1")
    a.gone("p1")
    assert not await a.flush()
    assert await nb.get(PortStatus.table, "p1") is None
    assert a.stats["rows_removed"] == 1
    a.gone("p1")  # twice (the API deleted it too): nothing to do, no error
    assert not await a.flush()


async def test_a_write_requiring_a_deleted_object_is_refused_naming_it(nb):
    await make_port(nb)
    await nb.delete(LogicalPort.table, "p1")
    with pytest.raises(NotFound, match="lport 'p1' does not exist"):
        await nb.create(PortStatus(id="p1", topic="t", up={"A": 1.0}), requires=((LogicalPort.table, "p1"),))
    assert await nb.get(PortStatus.table, "p1") is None


@pytest.mark.ovs
def test_a_port_deleted_while_its_vif_is_up_leaves_no_status_row():
    """As neutron-server's driver deletes a port (the NB port only, its VIF still plugged and up):
    the chassis removes the row, and writes none again."""
    with running_cloud(2) as cloud:
        cloud.call("create_network", "net1", "10.1.0.0/24")
        vm = cloud.call("create_vm", "A", "chassis-1", "net1", "10.1.0.11")
        port_id = vm.vifs[0].port_id
        wait_until(lambda: cloud.nb("get", PortStatus.table, port_id) is not None, 10, what="A reported up")
        cloud.nb("delete", LogicalPort.table, port_id)
        wait_until(lambda: cloud.nb("get", PortStatus.table, port_id) is None, 10, what="status row removed")
        cloud.sb.set_vif_up("A", vm.vifs[0].ifname, False)  # the VIF going down later writes nothing
        cloud.sb.set_vif_up("A", vm.vifs[0].ifname, True)
        time.sleep(1.0)
        assert cloud.nb("get", PortStatus.table, port_id) is None
        st = controller_status(cloud.sb, "chassis-1")
        assert st["port_status"]["stats"].get("rows_removed", 0) >= 1
        assert st["port_status"]["stats"].get("write_errors", 0) == 0
