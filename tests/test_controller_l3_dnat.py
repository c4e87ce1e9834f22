"""Distributed routing and floating IPs on a real 3-chassis sandbox, with real packets."""
from __future__ import annotations

import pytest

from controller_fixtures import (running_cloud, dump_flows, pings, udp_probe, wait_until)
from dfflow.errors import Conflict, ValidationError
from dfflow.models import FloatingIP
from sandbox_fixtures import tcp_transfer

pytestmark = pytest.mark.ovs

X, Y, Z, E = "10.1.0.10", "10.2.0.20", "10.2.0.30", "172.24.4.100"


@pytest.fixture(scope="module")
def cloud():
    """net1 + net2 behind router R with a gateway on `public`; X net1/chassis-1, Y net2/chassis-2,
    Z net2/chassis-1, external host E on public/chassis-3 (no port security: not a VM of the cloud); X has
    a floating IP. The VMs' default group lets in, as a user would, what E's probes send."""
    with running_cloud(3) as c:
        c.call("create_network", "net1", "10.1.0.0/24")
        c.call("create_network", "net2", "10.2.0.0/24")
        c.call("create_network", "public", "172.24.4.0/24", external=True)
        c.call("create_router", "R", ["net1", "net2"], external="public")
        c.call("create_vm", "X", "chassis-1", "net1", X)
        c.call("create_vm", "Y", "chassis-2", "net2", Y)
        c.call("create_vm", "Z", "chassis-1", "net2", Z)
        c.call("create_vm", "E", "chassis-3", "public", E, port_attrs={"port_security_enabled": False})
        c.fip = c.call("create_floating_ip", "X")
        default_group = c.nb("get", "lport", c.sb.vm("X").vifs[0].port_id).security_groups[0]
        for protocol, port in (("icmp", None), ("udp", 7000), ("tcp", 5001)):
            rule = {"security_group_id": default_group, "direction": "ingress", "protocol": protocol,
                    "port_range_min": port, "port_range_max": port, "remote_ip_prefix": "172.24.4.0/24"}
            c.call("neutron", "create_security_group_rule", {"security_group_rule": rule})
        yield c


def test_routed_ping_and_tcp_between_subnets_on_the_same_and_other_chassis(cloud):
    sb = cloud.sb
    wait_until(lambda: pings(sb, "X", Y), 15, what="X -> Y routed across chassis")
    wait_until(lambda: pings(sb, "X", Z), 15, what="X -> Z routed on one chassis")
    assert pings(sb, "Y", X) and pings(sb, "Z", X)
    tcp_transfer(sb, "X", "Y", Y, nbytes=300_000)
    tcp_transfer(sb, "Z", "X", X, nbytes=300_000)


def test_routing_decrements_the_ttl_by_one(cloud):
    seen, reply = udp_probe(cloud.sb, "X", "Y", Y, ttl=10)
    assert seen == f"from {X} ttl 9", seen
    assert reply == f"reply from {Y}"


def test_vm_pings_its_gateway(cloud):
    wait_until(lambda: pings(cloud.sb, "X", "10.1.0.1"), 10, what="X -> its gateway")
    assert pings(cloud.sb, "Y", "10.2.0.1")


def test_external_host_reaches_the_vm_through_its_floating_ip(cloud):
    sb, fip = cloud.sb, cloud.fip.floating_ip
    wait_until(lambda: pings(sb, "E", fip), 15, what="E -> floating IP")
    seen, reply = udp_probe(sb, "E", "X", fip, ttl=10)
    assert seen == f"from {E} ttl 9", seen  # X sees E's real address
    assert reply == f"reply from {fip}"  # E sees the floating IP answering
    tcp_transfer(sb, "E", "X", fip, nbytes=300_000, bind_ip="0.0.0.0")


def test_vm_reaches_the_external_host_with_its_floating_ip_as_source(cloud):
    seen, reply = udp_probe(cloud.sb, "X", "E", E, ttl=10)
    assert seen == f"from {cloud.fip.floating_ip} ttl 9", seen
    assert reply == f"reply from {E}"


def test_bad_router_and_floating_ip_input_is_refused_and_nothing_written(cloud):
    sb = cloud.sb
    with pytest.raises(Conflict):  # a subnet already attached
        cloud.call("create_router", "R2", ["net1"])
    assert cloud.nb("get", "lrouter", "R2") is None
    port = cloud.nb("get", "lport", sb.vm("Y").vifs[0].port_id)
    base = dict(topic="demo", lswitch="public", mac="fa:16:3e:77:00:01", router="R", port=port.id)
    with pytest.raises(ValidationError) as info:  # floating IP on a non-external network
        cloud.nb("create", FloatingIP(id="bad1", floating_ip="10.2.0.99", **{**base, "lswitch": "net2"},
                                      fixed_ip=Y))
    assert info.value.field == "lswitch"
    with pytest.raises(ValidationError) as info:  # a fixed IP that is not the port's
        cloud.nb("create", FloatingIP(id="bad2", floating_ip="172.24.4.201", fixed_ip="10.2.0.77", **base))
    assert info.value.field == "fixed_ip"
    x_port = sb.vm("X").vifs[0].port_id
    with pytest.raises(Conflict) as info:  # a second floating IP for X's fixed IP
        cloud.nb("create", FloatingIP(id="bad3", floating_ip="172.24.4.202", fixed_ip=X,
                                      **{**base, "port": x_port}))
    assert info.value.field == "fixed_ip"
    assert [f.id for f in cloud.nb("list", "floatingip")] == [cloud.fip.id]


def test_disassociated_floating_ip_leaves_no_flow_and_no_path(cloud):
    sb, fip = cloud.sb, cloud.fip
    wait_until(lambda: pings(sb, "E", fip.floating_ip), 15, what="E -> floating IP before")
    cloud.call("disassociate_floating_ip", fip.id)

    def gone() -> bool:
        return not any(fip.floating_ip in line or fip.mac in line
                       for ch in sb.chassis_list() for line in dump_flows(sb, ch.name))

    wait_until(gone, 10, what="no flow mentions the floating IP")
    assert not pings(sb, "E", fip.floating_ip, count=2)
    cloud.call("delete_floating_ip", fip.id)


def test_removing_a_router_interface_cuts_routing_and_removes_its_flows(cloud):
    sb = cloud.sb
    wait_until(lambda: pings(sb, "X", Y), 15, what="X -> Y before")
    router = cloud.nb("get", "lrouter", "R")
    net2_port = next(p for p in router.ports if p.subnet == "net2-subnet")
    cloud.call("remove_router_interface", "R", "net2")

    def gone() -> bool:
        return not any(net2_port.mac in line or "nw_dst=10.2.0.0/24" in line
                       for ch in sb.chassis_list() for line in dump_flows(sb, ch.name))

    wait_until(gone, 10, what="net2's router interface flows removed everywhere")
    assert not pings(sb, "X", Y, count=2)
    assert pings(sb, "Y", "10.2.0.1", count=1) is False  # the interface no longer answers either
