"""Neutron resources -> NB fields (dfflow.nb.convert): what the ML2 driver writes, without a server."""
from __future__ import annotations

from dfflow.models import ExternalGateway, FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, RouterPort
from dfflow.nb import convert


def _port(**fields):
    port = {"id": "p1", "project_id": "tenant", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}], "binding:host_id": "compute-1",
            "device_owner": "compute:nova", "device_id": "vm-1", "name": "vm", "admin_state_up": True,
            "port_security_enabled": False, "binding:vnic_type": "normal", "binding:profile": {"k": "v"}}
    port.update(fields)
    return port


def test_a_port_keeps_its_nb_only_fields_when_neutron_fields_are_applied():
    migrating = LogicalPort(id="p1", topic="tenant", lswitch="n1", mac="fa:16:3e:00:00:01",
                            activation_strategy="announce")
    updated = migrating.replace(**convert.port_fields(_port(name="renamed")))
    updated.check()
    assert (updated.name, updated.binding_chassis, updated.port_security, updated.binding_profile) == (
        "renamed", "compute-1", False, {"k": "v"})
    assert updated.activation_strategy == "announce"  # the NB's own field is not Neutron's to reset


def test_neutron_leaving_fields_out_gives_the_nb_defaults():
    fields = convert.port_fields({"network_id": "n1", "mac_address": "fa:16:3e:00:00:02", "binding:host_id": "",
                                  "port_security_enabled": None, "binding:profile": None})
    assert (fields["binding_chassis"], fields["port_security"], fields["binding_profile"], fields["ips"],
            fields["vnic_type"]) == (None, True, {}, [], "normal")
    switch = LogicalSwitch(id="n1", topic=convert.topic({"project_id": ""}), **convert.switch_fields({}, 7))
    switch.check()
    assert (switch.topic, switch.segmentation_id, switch.mtu, switch.router_external) == (
        convert.DEFAULT_TOPIC, 7, LogicalSwitch.mtu, False)


def test_router_and_floating_ip_fields_come_from_their_ports():
    interfaces = [_port(id="if2", mac_address="fa:16:3e:00:00:22",
                        fixed_ips=[{"subnet_id": "s2", "ip_address": "10.2.0.1"}]),
                  _port(id="if1", mac_address="fa:16:3e:00:00:11",
                        fixed_ips=[{"subnet_id": "s1", "ip_address": "10.1.0.1"}])]
    gw_port = _port(network_id="ext", mac_address="fa:16:3e:00:00:33",
                    fixed_ips=[{"subnet_id": "v6", "ip_address": "2001:db8::5"},
                               {"subnet_id": "v4", "ip_address": "172.24.4.5"}])
    router = LogicalRouter(id="r1", topic="tenant", **convert.router_fields({"name": "r"}, interfaces, gw_port))
    assert router.ports == [RouterPort("s1", "fa:16:3e:00:00:11", "10.1.0.1"),
                            RouterPort("s2", "fa:16:3e:00:00:22", "10.2.0.1")]
    assert router.external_gateway == ExternalGateway("ext", "172.24.4.5", "fa:16:3e:00:00:33")  # its IPv4 one
    assert convert.gateway(None) is None

    unassociated = {"floating_ip_address": "172.24.4.9", "floating_network_id": "ext", "port_id": None,
                    "fixed_ip_address": None, "router_id": "r1"}
    fip = FloatingIP(id="f1", topic="tenant", **convert.floatingip_fields(unassociated, "fa:16:3e:00:00:44"))
    fip.check()  # a floating IP on no port names no router either
    assert (fip.port, fip.fixed_ip, fip.router) == (None, None, None)


def test_router_and_floating_ip_ports_are_not_nb_ports():
    for owner in ("network:router_interface", "network:router_gateway", "network:floatingip"):
        assert not convert.is_nb_port({"device_owner": owner})
    for owner in ("compute:nova", "", "network:dhcp"):
        assert convert.is_nb_port({"device_owner": owner})
