"""The sandbox's cloud on neutron-server with the dfflow driver: a topology made with openstacksdk (networks,
subnets, a router with interfaces and a gateway, a floating IP), VMs booted by the sandbox's Nova (ports
through python-neutronclient, os-vif plugging), carrying L2, routed and floating-IP traffic; Nova's
live-migration calls through neutron-server on both of Nova's paths, an aborted migration, and deletes.

One 3-chassis sandbox for the module, on the session's neutron-server:
  M  net1, chassis-1 at first, with a floating IP (the VM that migrates)
  P  net1, chassis-2        Q  net2, chassis-3        E  public, chassis-3 (the external host)
"""
from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from api_fixtures import nb_call, sdk
from controller_fixtures import SyncCloud, dump_flows, migrate, pings, wait_until
from dfflow.models import FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, PortStatus, Subnet
from neutron_fixtures import events_for, sandbox_on, stale_flows

pytestmark = [pytest.mark.ovs, pytest.mark.neutron,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")]
PROJECT = "demo"  # the sandbox cloud's project: its VMs' ports are made in it
M_IP, P_IP, Q_IP, E_IP = "10.31.0.10", "10.31.0.20", "10.32.0.30", "172.24.31.100"
WAIT = 30.0  # s; Neutron's API on a shared 2-core machine


@pytest.fixture(scope="module")
def cloud(neutron):
    with sandbox_on(neutron, 3) as sb:
        yield SyncCloud(sb)


@pytest.fixture(scope="module")
def topo(neutron, cloud):
    """The topology, made through neutron-server: what openstacksdk made, and the VMs' port ids."""
    net = sdk(neutron.url).network
    made = SimpleNamespace(networks={}, subnets={}, ports={})
    for name, cidr, external in (("nsc-net1", "10.31.0.0/24", False), ("nsc-net2", "10.32.0.0/24", False),
                                 ("nsc-public", "172.24.31.0/24", True)):
        made.networks[name] = net.create_network(name=name, project_id=PROJECT, mtu=1400,
                                                 is_router_external=external)
        made.subnets[name] = net.create_subnet(network_id=made.networks[name].id, cidr=cidr, ip_version=4,
                                               enable_dhcp=False, project_id=PROJECT)
    made.router = net.create_router(name="nsc-R", project_id=PROJECT,
                                    external_gateway_info={"network_id": made.networks["nsc-public"].id})
    for name in ("nsc-net1", "nsc-net2"):
        net.add_interface_to_router(made.router, subnet_id=made.subnets[name].id)
    for vm, chassis, network, ip in (("M", "chassis-1", "nsc-net1", M_IP), ("P", "chassis-2", "nsc-net1", P_IP),
                                     ("Q", "chassis-3", "nsc-net2", Q_IP), ("E", "chassis-3", "nsc-public", E_IP)):
        made.ports[vm] = cloud.call("create_vm", vm, chassis, network, ip).vifs[0].port_id
    made.fip = net.create_ip(floating_network_id=made.networks["nsc-public"].id, port_id=made.ports["M"],
                             project_id=PROJECT)
    return made


def _reachable(cloud: SyncCloud, fip: str) -> None:
    """M answers its L2 peer, its routed peer and the external host (through its floating IP)."""
    for vm, address, what in (("P", M_IP, "L2"), ("Q", M_IP, "routed"), ("E", fip, "floating IP")):
        wait_until(lambda: pings(cloud.sb, vm, address), 20, what=f"{vm} -> M ({what}, {address})")


def _bindings(neutron, port_id: str) -> dict[str, str]:
    """Neutron's bindings of the port: host -> ACTIVE/INACTIVE (Nova's GET .../bindings)."""
    reply = httpx.get(f"{neutron.url}/v2.0/ports/{port_id}/bindings", headers={"X-Roles": "service"}, timeout=30)
    reply.raise_for_status()
    return {b["host"]: b["status"] for b in reply.json()["bindings"]}


def _flows(cloud: SyncCloud, chassis: str) -> list[str]:
    return sorted(dump_flows(cloud.sb, chassis))


def test_vms_on_a_topology_made_through_neutron_server_carry_l2_routed_and_floating_ip_traffic(neutron, cloud, topo):
    _reachable(cloud, topo.fip.floating_ip_address)
    for name, network in topo.networks.items():  # the driver wrote each with Neutron's own VNI
        switch = nb_call(neutron.nb_url, "get", LogicalSwitch.table, network.id)
        assert (switch.name, switch.segmentation_id) == (name, network.provider_segmentation_id)
    router = nb_call(neutron.nb_url, "get", LogicalRouter.table, topo.router.id)
    assert {p.subnet for p in router.ports} == {topo.subnets["nsc-net1"].id, topo.subnets["nsc-net2"].id}
    assert router.external_gateway.lswitch == topo.networks["nsc-public"].id
    fip = nb_call(neutron.nb_url, "get", FloatingIP.table, topo.fip.id)
    assert (fip.floating_ip, fip.port, fip.fixed_ip) == (topo.fip.floating_ip_address, topo.ports["M"], M_IP)
    port = sdk(neutron.url).network.get_port(topo.ports["M"])
    assert (port.status, port.binding_host_id, port.binding_vif_type) == ("ACTIVE", "chassis-1", "ovs")
    assert port.binding_vif_details["datapath_type"] == "netdev"  # what os-vif plugged the VIF with


def test_a_vif_coming_up_on_the_sandbox_reaches_nova_as_network_vif_plugged_from_neutrons_notifier(
        neutron, cloud, topo):
    vm = cloud.call("create_vm", "N", "chassis-2", "nsc-net2")
    try:
        plugged = ("network-vif-plugged", "completed", vm.uuid)
        wait_until(lambda: plugged in events_for(neutron.nova, vm.vifs[0].port_id), WAIT, 0.1,
                   what="network-vif-plugged at the Nova recorder")
    finally:
        cloud.call("delete_vm", "N")


@pytest.mark.parametrize("nova_path,dest", [("extended", "chassis-3"), ("legacy", "chassis-2")])
def test_nova_live_migration_through_neutron_server_moves_l2_l3_and_floating_ip_traffic(
        neutron, cloud, topo, nova_path, dest):
    """The VM moves next to the routed peer and external host (extended), then next to its L2 peer
    (legacy): the destination's own VMs reach it locally, the others over the overlay."""
    port_id = topo.ports["M"]
    _reachable(cloud, topo.fip.floating_ip_address)
    heard_before = len(events_for(neutron.nova, port_id))
    timeline = migrate(cloud, "M", dest, nova_path=nova_path)
    assert "done" in timeline["states"], timeline
    assert {vif.chassis for vif in cloud.sb.vm("M").vifs} == {dest}  # the source's tap is gone
    _reachable(cloud, topo.fip.floating_ip_address)
    wait_until(lambda: _bindings(neutron, port_id) == {dest: "ACTIVE"}, WAIT, 0.2, what=f"bound to {dest} only")
    net = sdk(neutron.url).network
    wait_until(lambda: net.get_port(port_id).status == "ACTIVE", WAIT, 0.2, what="the port ACTIVE again")
    lport = nb_call(neutron.nb_url, "get", LogicalPort.table, port_id)
    assert (lport.binding_chassis, lport.inactive_bindings, lport.migration) == (dest, [], None)
    if nova_path == "extended":  # the activation elsewhere: Nova hears the VIF go, then come up there
        def heard() -> list[str]:
            return [name for name, _, _ in events_for(neutron.nova, port_id)[heard_before:]]
        try:
            wait_until(lambda: "network-vif-plugged" in heard()[heard().index("network-vif-unplugged"):]
                       if "network-vif-unplugged" in heard() else False, WAIT, 0.2)
        except AssertionError:
            raise AssertionError(f"no vif-unplugged then vif-plugged at the Nova recorder: {heard()}") from None


def test_an_aborted_migration_through_neutron_server_leaves_no_binding_record_or_flow(neutron, cloud, topo):
    port_id = topo.ports["M"]
    source = cloud.sb.vm("M").vifs[0].chassis
    dest = next(name for name in ("chassis-1", "chassis-2", "chassis-3") if name != source)
    wait_until(lambda: _bindings(neutron, port_id) == {source: "ACTIVE"}, WAIT, 0.2, what="one binding")
    before = {name: _flows(cloud, name) for name in (source, dest)}

    timeline = migrate(cloud, "M", dest, nova_path="extended", rollback=True)
    assert "aborted" in timeline["states"] and "dest_binding_deleted" in timeline["steps"], timeline
    assert _bindings(neutron, port_id) == {source: "ACTIVE"}
    lport = nb_call(neutron.nb_url, "get", LogicalPort.table, port_id)
    assert (lport.binding_chassis, lport.inactive_bindings, lport.migration, lport.migrating_to) == \
        (source, [], None, None)
    assert "migrating_to" not in (sdk(neutron.url).network.get_port(port_id).binding_profile or {})
    for name in (source, dest):
        wait_until(lambda: _flows(cloud, name) == before[name], 15, what=f"{name}'s flows as before the migration")
    _reachable(cloud, topo.fip.floating_ip_address)


def test_deleting_everything_through_neutron_server_leaves_no_nb_object_and_no_flow(neutron, cloud, topo):
    net = sdk(neutron.url).network
    _reachable(cloud, topo.fip.floating_ip_address)
    net.delete_ip(topo.fip)
    for vm in topo.ports:
        cloud.call("delete_vm", vm)
    for name in ("nsc-net1", "nsc-net2"):
        net.remove_interface_from_router(topo.router, subnet_id=topo.subnets[name].id)
    net.delete_router(topo.router)
    for name, network in topo.networks.items():
        net.delete_subnet(topo.subnets[name])
        net.delete_network(network)

    made = [(FloatingIP.table, topo.fip.id), (LogicalRouter.table, topo.router.id)]
    made += [(LogicalSwitch.table, n.id) for n in topo.networks.values()]
    made += [(Subnet.table, s.id) for s in topo.subnets.values()]
    made += [(table, port_id) for port_id in topo.ports.values() for table in (LogicalPort.table, PortStatus.table)]
    assert [(table, obj_id) for table, obj_id in made if nb_call(neutron.nb_url, "get", table, obj_id)] == []
    wait_until(lambda: stale_flows(cloud.sb, neutron.nb_url) == {}, 15,
               what="no flow left of anything deleted")
