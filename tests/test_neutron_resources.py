"""openstacksdk through a real neutron-server whose ML2 driver and router plugin are dfflow's: what Neutron
creates, changes and deletes is what the NB db holds; ports bind to the hosts that run a dfflow chassis."""
from __future__ import annotations

import httpx
import pytest
from openstack import exceptions as sdk_errors

from api_fixtures import nb_call, sdk
from dfflow.models import Chassis

pytestmark = [pytest.mark.neutron,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")]


@pytest.fixture
def conn(neutron):
    return sdk(neutron.url)


def _chassis(nb_url: str, name: str, **fields) -> Chassis:
    """A chassis row, as a compute node's dfflow-controller registers it."""
    return nb_call(nb_url, "create", Chassis(id=name, topic="chassis", tunnel_ip="172.31.0.9", **fields))


def test_networks_subnets_ports_are_the_nb_switches_subnets_and_ports(conn, neutron):
    net = conn.network
    network = net.create_network(name="private", mtu=1400)
    subnet = net.create_subnet(network_id=network.id, cidr="10.10.0.0/24", ip_version=4, name="private-v4")
    port = net.create_port(network_id=network.id, name="vm1", device_owner="compute:nova", device_id="vm-1")

    switch = nb_call(neutron.nb_url, "get", "lswitch", network.id)
    assert network.provider_network_type == "geneve" and network.provider_segmentation_id >= 1
    assert (switch.name, switch.segmentation_id, switch.mtu, switch.router_external, switch.topic) == (
        "private", network.provider_segmentation_id, 1400, False, network.project_id)
    nb_subnet = nb_call(neutron.nb_url, "get", "subnet", subnet.id)
    assert (nb_subnet.lswitch, nb_subnet.cidr, nb_subnet.gateway_ip, nb_subnet.name) == (
        network.id, "10.10.0.0/24", "10.10.0.1", "private-v4")
    lport = nb_call(neutron.nb_url, "get", "lport", port.id)
    assert (lport.lswitch, lport.mac, lport.ips, lport.name, lport.device_owner, lport.device_id) == (
        network.id, port.mac_address, [port.fixed_ips[0]["ip_address"]], "vm1", "compute:nova", "vm-1")
    assert (lport.binding_chassis, lport.enabled, lport.port_security, lport.inactive_bindings) == (
        None, True, True, [])

    net.update_network(network, name="renamed")
    net.update_subnet(subnet, name="renamed-v4")
    port = net.update_port(port, name="vm1b", is_admin_state_up=False,
                           fixed_ips=[{"subnet_id": subnet.id, "ip_address": "10.10.0.77"}])
    assert nb_call(neutron.nb_url, "get", "lswitch", network.id).name == "renamed"
    assert nb_call(neutron.nb_url, "get", "subnet", subnet.id).name == "renamed-v4"
    lport = nb_call(neutron.nb_url, "get", "lport", port.id)
    assert (lport.name, lport.enabled, lport.ips) == ("vm1b", False, ["10.10.0.77"])

    net.delete_port(port)
    assert nb_call(neutron.nb_url, "get", "lport", port.id) is None
    net.delete_network(network)  # Neutron deletes its subnet with it
    for table, obj_id in (("lswitch", network.id), ("subnet", subnet.id)):
        assert nb_call(neutron.nb_url, "get", table, obj_id) is None, (table, obj_id)


def test_router_interfaces_gateway_and_floating_ip_are_the_nb_router_and_floating_ip(conn, neutron):
    net = conn.network
    ext = net.create_network(name="public", is_router_external=True)
    ext_subnet = net.create_subnet(network_id=ext.id, cidr="172.24.4.0/24", ip_version=4)
    priv = net.create_network(name="tenant")
    subnet = net.create_subnet(network_id=priv.id, cidr="10.20.0.0/24", ip_version=4)
    vm = net.create_port(network_id=priv.id, device_owner="compute:nova")

    router = net.create_router(name="r1", external_gateway_info={"network_id": ext.id})
    net.add_interface_to_router(router, subnet_id=subnet.id)
    fip = net.create_ip(floating_network_id=ext.id, port_id=vm.id)

    owned = {p.device_owner: p for p in net.ports(device_id=router.id)}
    interface, gateway = owned["network:router_interface"], owned["network:router_gateway"]
    nb_router = nb_call(neutron.nb_url, "get", "lrouter", router.id)
    assert nb_router.name == "r1"
    assert [(p.subnet, p.ip, p.mac) for p in nb_router.ports] == [(subnet.id, "10.20.0.1", interface.mac_address)]
    gw = nb_router.external_gateway
    assert (gw.lswitch, gw.ip, gw.mac) == (ext.id, gateway.fixed_ips[0]["ip_address"], gateway.mac_address)
    assert nb_call(neutron.nb_url, "get", "lswitch", ext.id).router_external is True
    fip_port = next(net.ports(device_id=fip.id, device_owner="network:floatingip"))
    nb_fip = nb_call(neutron.nb_url, "get", "floatingip", fip.id)
    assert (nb_fip.floating_ip, nb_fip.lswitch, nb_fip.mac, nb_fip.port, nb_fip.fixed_ip, nb_fip.router) == (
        fip.floating_ip_address, ext.id, fip_port.mac_address, vm.id, vm.fixed_ips[0]["ip_address"], router.id)
    # Router and floating-IP ports are parts of the NB router and floating IP, not NB ports.
    for port in (interface, gateway, fip_port):
        assert nb_call(neutron.nb_url, "get", "lport", port.id) is None

    net.update_ip(fip, port_id=None)
    nb_fip = nb_call(neutron.nb_url, "get", "floatingip", fip.id)
    assert (nb_fip.port, nb_fip.fixed_ip, nb_fip.router) == (None, None, None)
    net.update_ip(fip, port_id=vm.id)
    net.delete_port(vm)  # Neutron disassociates the floating IP; the NB port goes, the floating IP stays
    assert nb_call(neutron.nb_url, "get", "lport", vm.id) is None
    assert nb_call(neutron.nb_url, "get", "floatingip", fip.id).port is None

    net.delete_ip(fip)
    assert nb_call(neutron.nb_url, "get", "floatingip", fip.id) is None
    net.remove_interface_from_router(router, subnet_id=subnet.id)
    assert nb_call(neutron.nb_url, "get", "lrouter", router.id).ports == []
    net.update_router(router, external_gateway_info={})
    assert nb_call(neutron.nb_url, "get", "lrouter", router.id).external_gateway is None
    net.delete_router(router)
    for network in (priv, ext):
        net.delete_network(network)
    for table, obj_id in (("lrouter", router.id), ("lswitch", priv.id), ("lswitch", ext.id),
                          ("subnet", subnet.id), ("subnet", ext_subnet.id)):
        assert nb_call(neutron.nb_url, "get", table, obj_id) is None, (table, obj_id)


def test_a_host_with_a_chassis_binds_with_its_bridge_and_datapath_one_without_fails(conn, neutron):
    _chassis(neutron.nb_url, "compute-netdev", datapath_type="netdev", bridge_name="br-dfflow")
    net = conn.network
    network = net.create_network(name="bind")
    net.create_subnet(network_id=network.id, cidr="10.30.0.0/24", ip_version=4)

    bound = net.create_port(network_id=network.id, binding_host_id="compute-netdev", device_owner="compute:nova")
    assert (bound.binding_host_id, bound.binding_vif_type) == ("compute-netdev", "ovs")
    details = bound.binding_vif_details
    assert (details["datapath_type"], details["bridge_name"], details["port_filter"]) == ("netdev", "br-dfflow", True)
    assert nb_call(neutron.nb_url, "get", "lport", bound.id).binding_chassis == "compute-netdev"

    failed = net.create_port(network_id=network.id, binding_host_id="no-chassis-here")
    assert failed.binding_vif_type == "binding_failed"
    assert nb_call(neutron.nb_url, "get", "lport", failed.id).binding_chassis is None

    # The chassis registers later: the port's next update binds it there (ML2 retries a failed binding).
    _chassis(neutron.nb_url, "no-chassis-here")
    rebound = net.update_port(failed, name="retried")
    assert (rebound.binding_vif_type, rebound.binding_vif_details["datapath_type"]) == ("ovs", "system")
    assert nb_call(neutron.nb_url, "get", "lport", failed.id).binding_chassis == "no-chassis-here"


def test_nova_binding_extended_calls_move_the_nb_binding(conn, neutron):
    """Nova's live-migration calls (binding-extended): an inactive binding for the destination, then
    its activation; each shows in the NB port, as does an aborted migration's deleted binding."""
    _chassis(neutron.nb_url, "src-host")
    _chassis(neutron.nb_url, "dst-host", datapath_type="netdev")
    net = conn.network
    network = net.create_network(name="migrate")
    net.create_subnet(network_id=network.id, cidr="10.40.0.0/24", ip_version=4)
    port = net.create_port(network_id=network.id, binding_host_id="src-host", device_owner="compute:nova")
    nova = httpx.Client(base_url=neutron.url + "/v2.0", headers={"X-Roles": "service"}, timeout=30)

    reply = nova.post(f"/ports/{port.id}/bindings", json={"binding": {
        "host": "dst-host", "vnic_type": "normal", "profile": {"os_vif_delegation": True}}})
    assert reply.status_code == 201, reply.text
    assert reply.json()["binding"]["status"] == "INACTIVE"
    assert reply.json()["binding"]["vif_details"]["datapath_type"] == "netdev"
    lport = nb_call(neutron.nb_url, "get", "lport", port.id)
    assert lport.binding_chassis == "src-host"
    assert [(b.host, b.vnic_type, b.profile) for b in lport.inactive_bindings] == [
        ("dst-host", "normal", {"os_vif_delegation": True})]

    # An aborted migration: Nova deletes the destination's binding; then it tries again.
    assert nova.delete(f"/ports/{port.id}/bindings/dst-host").status_code == 204
    assert nb_call(neutron.nb_url, "get", "lport", port.id).inactive_bindings == []
    assert nova.post(f"/ports/{port.id}/bindings", json={"binding": {"host": "dst-host"}}).status_code == 201
    assert [b.host for b in nb_call(neutron.nb_url, "get", "lport", port.id).inactive_bindings] == ["dst-host"]

    reply = nova.put(f"/ports/{port.id}/bindings/dst-host/activate")
    assert reply.status_code == 200, reply.text
    lport = nb_call(neutron.nb_url, "get", "lport", port.id)
    assert (lport.binding_chassis, lport.inactive_bindings) == ("dst-host", [])
    assert net.get_port(port.id).binding_host_id == "dst-host"

    # A destination without a chassis cannot get a binding (Nova then aborts before plugging).
    reply = nova.post(f"/ports/{port.id}/bindings", json={"binding": {"host": "nowhere"}})
    assert reply.status_code >= 400 and "nowhere" in reply.text
    assert nb_call(neutron.nb_url, "get", "lport", port.id).inactive_bindings == []


def test_neutron_refuses_what_the_nb_would_refuse_naming_the_field(conn, neutron):
    net = conn.network
    network = net.create_network(name="refusals")
    net.create_subnet(network_id=network.id, cidr="10.50.0.0/24", ip_version=4)
    before = {p.id for p in net.ports(network_id=network.id)}

    with pytest.raises(sdk_errors.BadRequestException, match="vnic_type"):
        net.create_port(network_id=network.id, binding_vnic_type="direct")
    port = net.create_port(network_id=network.id, name="kept")
    with pytest.raises(sdk_errors.BadRequestException, match="vnic_type"):
        net.update_port(port, name="changed", binding_vnic_type="macvtap")
    assert net.get_port(port.id).name == "kept"  # the update's transaction was rolled back
    assert nb_call(neutron.nb_url, "get", "lport", port.id).name == "kept"
    before.add(port.id)
    # Nothing half-written: neither Neutron nor the NB holds a port from the refused requests.
    assert {p.id for p in net.ports(network_id=network.id)} == before
    assert {p.id for p in nb_call(neutron.nb_url, "list", "lport") if p.lswitch == network.id} == before


def test_a_router_interface_the_nb_refuses_is_undone_in_neutron(conn, neutron):
    """The NB routes a subnet through its gateway address only: an interface on a port holding another
    address is refused with the NB's reason, and Neutron's router is left without it."""
    net = conn.network
    network = net.create_network(name="not-gateway")
    subnet = net.create_subnet(network_id=network.id, cidr="10.70.0.0/24", ip_version=4)
    port = net.create_port(network_id=network.id, fixed_ips=[{"subnet_id": subnet.id, "ip_address": "10.70.0.50"}])
    router = net.create_router(name="strict")

    with pytest.raises(sdk_errors.BadRequestException, match=r"ports\[0\]\.ip.*gateway 10\.70\.0\.1"):
        net.add_interface_to_router(router, port_id=port.id)
    assert list(net.ports(device_id=router.id)) == []
    assert nb_call(neutron.nb_url, "get", "lrouter", router.id).ports == []
    # The interface took the port (as Neutron's own removal of a port interface, the undo deletes it).
    assert nb_call(neutron.nb_url, "get", "lport", port.id) is None

    net.add_interface_to_router(router, subnet_id=subnet.id)  # on the gateway address: accepted
    assert [p.ip for p in nb_call(neutron.nb_url, "get", "lrouter", router.id).ports] == ["10.70.0.1"]


def test_novas_legacy_migrating_to_reaches_the_nb_port(conn, neutron):
    """Without binding-extended, Nova announces a live migration's destination in the active binding's
    profile (`migrating_to`) and ends it with update_port(binding:host_id)."""
    _chassis(neutron.nb_url, "legacy-src")
    _chassis(neutron.nb_url, "legacy-dst")
    net = conn.network
    network = net.create_network(name="legacy")
    net.create_subnet(network_id=network.id, cidr="10.90.0.0/24", ip_version=4)
    port = net.create_port(network_id=network.id, binding_host_id="legacy-src", device_owner="compute:nova")
    nova = httpx.Client(base_url=neutron.url + "/v2.0", headers={"X-Roles": "service"}, timeout=30)

    reply = nova.put(f"/ports/{port.id}", json={"port": {"binding:profile": {"migrating_to": "legacy-dst"}}})
    assert reply.status_code == 200, reply.text
    lport = nb_call(neutron.nb_url, "get", "lport", port.id)
    assert (lport.binding_chassis, lport.migrating_to) == ("legacy-src", "legacy-dst")

    reply = nova.put(f"/ports/{port.id}", json={"port": {"binding:host_id": "legacy-dst", "binding:profile": {}}})
    assert reply.status_code == 200 and reply.json()["port"]["binding:vif_type"] == "ovs", reply.text
    lport = nb_call(neutron.nb_url, "get", "lport", port.id)
    assert (lport.binding_chassis, lport.migrating_to) == ("legacy-dst", None)
