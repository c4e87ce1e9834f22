"""Neutron resources (API-shaped dicts) -> the NB fields they set: the one place the mapping lives.

Each `*_fields` function returns the fields of the NB object that Neutron owns, so a create is
`Model(id=..., topic=..., **fields)` and an update is `current.replace(**fields)`, which keeps what the
NB alone holds (a port's migration record and activation strategy). Keys Neutron left out take the
NB's defaults. Nothing here imports Neutron: the ML2 driver (`dfflow.neutron`) calls it with the dicts
neutron-server hands its drivers, and the embedded API can with the bodies it parses.
"""
from __future__ import annotations

from typing import Any, Iterable

from dfflow.errors import ValidationError
from dfflow.models import AddressPair, ExternalGateway, LogicalSwitch, RouterPort

DEFAULT_TOPIC = "admin"  # the NB topic of a resource Neutron gives no project (noauth, admin-created)

# Neutron ports that are not the NB's ports: a router interface or gateway is part of its NB router,
# a floating IP's port is its NB floating IP.
OWNER_ROUTER_INTERFACE = "network:router_interface"
OWNER_ROUTER_GATEWAY = "network:router_gateway"
OWNER_FLOATINGIP = "network:floatingip"
NOT_NB_PORTS = frozenset({OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY, OWNER_FLOATINGIP,
                          "network:router_interface_distributed", "network:router_centralized_snat",
                          "network:router_ha_interface"})


def topic(resource: dict[str, Any]) -> str:
    """The NB topic of a Neutron resource: its project."""
    return resource.get("project_id") or resource.get("tenant_id") or DEFAULT_TOPIC


def is_nb_port(port: dict[str, Any]) -> bool:
    return port.get("device_owner", "") not in NOT_NB_PORTS


def switch_fields(network: dict[str, Any], segmentation_id: int) -> dict[str, Any]:
    """A Neutron network -> LogicalSwitch fields; the VNI is the network's segmentation id."""
    return {"name": network.get("name") or "", "segmentation_id": segmentation_id,
            "mtu": network.get("mtu") or LogicalSwitch.mtu,
            "router_external": bool(network.get("router:external", False))}


def subnet_fields(subnet: dict[str, Any]) -> dict[str, Any]:
    return {"lswitch": subnet["network_id"], "cidr": subnet["cidr"], "gateway_ip": subnet.get("gateway_ip"),
            "name": subnet.get("name") or ""}


def fixed_ips(port: dict[str, Any]) -> list[str]:
    return [entry["ip_address"] for entry in port.get("fixed_ips") or []]


def port_fields(port: dict[str, Any]) -> dict[str, Any]:
    """A Neutron port -> LogicalPort fields, its active binding included (`binding:host_id`)."""
    security = port.get("port_security_enabled")
    return {"lswitch": port["network_id"], "mac": port["mac_address"], "ips": fixed_ips(port),
            "binding_chassis": port.get("binding:host_id") or None,
            "device_owner": port.get("device_owner") or "", "device_id": port.get("device_id") or "",
            "name": port.get("name") or "", "enabled": port.get("admin_state_up", True),
            "port_security": True if security is None else security,
            "vnic_type": port.get("binding:vnic_type") or "normal",
            "binding_profile": port.get("binding:profile") or {},
            "security_groups": list(port.get("security_groups") or []),
            "allowed_address_pairs": address_pairs(port)}


def address_pairs(port: dict[str, Any]) -> list[AddressPair]:
    """A port's allowed address pairs; a pair without a MAC takes the port's."""
    return [AddressPair(ip_address=pair["ip_address"], mac_address=pair.get("mac_address") or port["mac_address"])
            for pair in port.get("allowed_address_pairs") or []]


def secgroup_fields(group: dict[str, Any], is_default: bool) -> dict[str, Any]:
    """A Neutron security group -> SecurityGroup fields (its rules are objects of their own)."""
    return {"name": group.get("name") or "", "description": group.get("description") or "",
            "is_default": is_default}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)  # (Neutron's rule before it is made holds a netaddr network)


def secgroup_rule_fields(rule: dict[str, Any]) -> dict[str, Any]:
    """A Neutron security group rule -> SecurityGroupRule fields. One naming an address group is refused:
    the NB has none, and without its remote the rule would allow traffic from anywhere."""
    if rule.get("remote_address_group_id"):
        raise ValidationError("remote_address_group_id", "address groups are not supported: dfflow cannot "
                                                         "enforce a rule whose remote end is one", "secgroup_rule")
    return {"secgroup": rule["security_group_id"], "direction": rule["direction"],
            "ethertype": rule.get("ethertype") or "IPv4", "protocol": rule.get("protocol"),
            "port_range_min": rule.get("port_range_min"), "port_range_max": rule.get("port_range_max"),
            "remote_ip_prefix": _text(rule.get("remote_ip_prefix")), "remote_group": rule.get("remote_group_id"),
            "description": rule.get("description") or ""}


def router_ports(interfaces: Iterable[dict[str, Any]]) -> list[RouterPort]:
    """A router's interface ports -> its RouterPorts, one per subnet, ordered by subnet id."""
    found = [RouterPort(subnet=ip["subnet_id"], mac=port["mac_address"], ip=ip["ip_address"])
             for port in interfaces for ip in port.get("fixed_ips") or []]
    return sorted(found, key=lambda p: p.subnet)


def gateway(gw_port: dict[str, Any] | None) -> ExternalGateway | None:
    """A router's gateway port -> its ExternalGateway (on the port's first IPv4 address)."""
    if gw_port is None:
        return None
    v4 = [ip for ip in fixed_ips(gw_port) if ":" not in ip]
    if not v4:
        return None
    return ExternalGateway(lswitch=gw_port["network_id"], ip=v4[0], mac=gw_port["mac_address"])


def router_fields(router: dict[str, Any], interfaces: Iterable[dict[str, Any]],
                  gw_port: dict[str, Any] | None) -> dict[str, Any]:
    return {"name": router.get("name") or "", "ports": router_ports(interfaces), "external_gateway": gateway(gw_port)}


def floatingip_fields(fip: dict[str, Any], mac: str) -> dict[str, Any]:
    """A Neutron floating IP -> FloatingIP fields; `mac` is its floating IP port's MAC."""
    port = fip.get("port_id")
    return {"floating_ip": fip["floating_ip_address"], "lswitch": fip["floating_network_id"], "mac": mac,
            "port": port, "fixed_ip": fip.get("fixed_ip_address") if port else None,
            "router": fip.get("router_id") if port else None}

