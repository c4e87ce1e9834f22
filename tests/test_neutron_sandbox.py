"""neutron-server with the dfflow driver over a sandbox: VMs on ports made through Neutron's API, on two
chassis run by dfflow-controllers following the session neutron-server's NB db, talk to each other."""
from __future__ import annotations

import pytest

from api_fixtures import nb_call, sdk
from controller.sandbox.topology import Sandbox
from controller_fixtures import pings, wait_controllers_ready, wait_until
from sandbox_fixtures import _new_dir, _teardown, require_substrate

pytestmark = [pytest.mark.ovs, pytest.mark.neutron,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")]


@pytest.fixture
def sandbox_on_neutron_nb(neutron):
    """Two chassis whose controllers follow the neutron-server's NB db. A controller tunnels to every
    chassis row in the NB: the rows other tests made for hosts that do not exist are removed first."""
    require_substrate()
    for chassis in nb_call(neutron.nb_url, "list", "chassis"):
        nb_call(neutron.nb_url, "delete", "chassis", chassis.id)
    sb = Sandbox(_new_dir())
    try:
        sb.up(chassis=2, controllers=True, nb_url=neutron.nb_url)
        wait_controllers_ready(sb)
        yield sb
    finally:
        _teardown([sb])


def test_vms_on_ports_made_through_neutron_server_ping_across_chassis(neutron, sandbox_on_neutron_nb):
    sb = sandbox_on_neutron_nb
    net = sdk(neutron.url).network
    network = net.create_network(name="l2")
    net.create_subnet(network_id=network.id, cidr="10.8.0.0/24", ip_version=4)
    assert nb_call(neutron.nb_url, "get", "lswitch", network.id).segmentation_id == network.provider_segmentation_id
    ips = {}
    for vm, host in (("N1", "chassis-1"), ("N2", "chassis-2")):
        port = net.create_port(network_id=network.id, binding_host_id=host, device_owner="compute:nova")
        assert port.binding_vif_type == "ovs", port.binding_vif_type  # bound: the controller's chassis row
        ips[vm] = port.fixed_ips[0]["ip_address"]
        sb.plug_vm(vm, host, port.id, port.mac_address, ip=f"{ips[vm]}/24")
    wait_until(lambda: pings(sb, "N1", ips["N2"]), 20, what="N1 -> N2 through Neutron-made ports")
    assert pings(sb, "N2", ips["N1"])
