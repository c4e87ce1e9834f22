"""openstacksdk, unmodified, drives the sandbox's own Neutron API; VMs on its ports talk across chassis."""
from __future__ import annotations

import contextlib

import pytest

from dfflow.sandbox.topology import Sandbox
from controller_fixtures import pings, wait_controllers_ready, wait_until
from sandbox_fixtures import _new_dir, _teardown, require_substrate

pytestmark = pytest.mark.ovs


@contextlib.contextmanager
def api_sandbox(chassis: int):
    """A sandbox with its controllers ready, and openstacksdk on its API."""
    openstack = pytest.importorskip("openstack")
    require_substrate()
    sb = Sandbox(_new_dir())
    try:
        sb.up(chassis=chassis, controllers=True)
        wait_controllers_ready(sb)
        yield sb, openstack.connection.Connection(auth_type="none", auth={"endpoint": sb.status()["api_url"]})
    finally:
        _teardown([sb])


def test_ports_created_through_the_api_carry_traffic_between_chassis():
    with api_sandbox(2) as (sb, conn):
        net = conn.network.create_network(name="api-net", project_id="api-tenant")
        conn.network.create_subnet(network_id=net.id, cidr="10.7.0.0/24", ip_version=4, project_id="api-tenant")
        ports = {}
        for vm, host in (("V1", "chassis-1"), ("V2", "chassis-2")):
            port = conn.network.create_port(network_id=net.id, binding_host_id=host, project_id="api-tenant")
            ip = port.fixed_ips[0]["ip_address"]
            sb.plug_vm(vm, host, port.id, port.mac_address, ip=f"{ip}/24", gateway="10.7.0.1")
            ports[vm] = (port, ip)
        wait_until(lambda: pings(sb, "V1", ports["V2"][1]), 20, what="V1 -> V2 through API-made ports")
        assert pings(sb, "V2", ports["V1"][1])
        shown = conn.network.get_port(ports["V1"][0].id)
        assert (shown.binding_host_id, shown.binding_vif_type) == ("chassis-1", "ovs")


def test_a_port_is_active_once_its_chassis_reports_the_vif_up():
    with api_sandbox(1) as (sb, conn):
        net = conn.network.create_network(name="api-net")
        conn.network.create_subnet(network_id=net.id, cidr="10.7.0.0/24", ip_version=4)
        port = conn.network.create_port(network_id=net.id, binding_host_id="chassis-1")
        assert conn.network.get_port(port.id).status == "DOWN"
        sb.plug_vm("V1", "chassis-1", port.id, port.mac_address, ip=f"{port.fixed_ips[0]['ip_address']}/24")
        wait_until(lambda: conn.network.get_port(port.id).status == "ACTIVE", 10, what="the port ACTIVE")
