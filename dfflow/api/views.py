"""NB objects as Neutron shows them, and what the API reads from the NB to show or allocate.

Fields the NB does not store are derived: a network is ACTIVE and up, a subnet's allocation pools are
its CIDR minus the gateway; a port is ACTIVE once the chassis of its active binding reports its VIF up
(`lport_status`), and its vif_type/vif_details come from that chassis. Router interfaces, router
gateways and floating IPs hold a MAC and an IP on a network as Neutron ports do; the API shows them as
read-only ports with stable ids (`virtual_port_id`), so `?device_id=<router>` finds a router's ports.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from dfflow.api import alloc
from dfflow.models import (Chassis, FloatingIP, InactiveBinding, LogicalPort, LogicalRouter, LogicalSwitch,
                           PortStatus, Subnet)
from dfflow.nb.bindings import bindings_of, status_of
from dfflow.nb.neutron import chassis_to_host

OWNER_INTERFACE = "network:router_interface"
OWNER_GATEWAY = "network:router_gateway"
OWNER_FLOATINGIP = "network:floatingip"
_VIRTUAL_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://dfflow/virtual-port")


def virtual_port_id(kind: str, *ids: str) -> str:
    """The id of the port Neutron would show for a router interface, router gateway or floating IP.

    A name-based (version 5) UUID: stable across API processes, and never equal to a version 4 id.
    """
    return str(uuid.uuid5(_VIRTUAL_NS, ":".join((kind, *ids))))


@dataclass
class Snapshot:
    """The NB tables an operation needs, read once."""

    switches: dict[str, LogicalSwitch]
    subnets: dict[str, Subnet]
    ports: dict[str, LogicalPort]
    routers: dict[str, LogicalRouter]
    fips: dict[str, FloatingIP]
    chassis: dict[str, Chassis] = field(default_factory=dict)
    statuses: dict[str, PortStatus] = field(default_factory=dict)  # by port id
    held_ips: dict[str, set[str]] = field(default_factory=dict)  # by network: ports' addresses read raw

    TABLES: ClassVar[tuple[str, ...]] = ("lswitch", "subnet", "lport", "lrouter", "floatingip", "chassis",
                                         "lport_status")
    PORTS: ClassVar[tuple[str, ...]] = ("subnet", "chassis", "lport_status")  # what a port's view needs

    @classmethod
    async def load(cls, nb: Any, tables: Iterable[str] = ("lswitch", "subnet", "lport", "lrouter",
                                                           "floatingip")) -> "Snapshot":
        wanted = set(tables)
        found: dict[str, dict[str, Any]] = {}
        for table in cls.TABLES:
            found[table] = {o.id: o for o in await nb.list(table=table)} if table in wanted else {}
        return cls(found["lswitch"], found["subnet"], found["lport"], found["lrouter"], found["floatingip"],
                   found["chassis"], found["lport_status"])

    @classmethod
    async def for_network(cls, nb: Any, lswitch: str) -> "Snapshot":
        """What allocating on one network needs, read through the NB's referrer sets rather than
        whole tables: the network, every subnet, and what holds an address on this network (its
        ports, floating IPs, router gateways, and the routers on its subnets)."""
        subnets = {s.id: s for s in await nb.list(table="subnet")}
        pairs = [("lswitch", lswitch)] + await nb.referrers("lswitch", lswitch)
        for subnet in subnets.values():
            if subnet.lswitch == lswitch:
                pairs += await nb.referrers("subnet", subnet.id)
        found: dict[str, dict[str, Any]] = {t: {} for t in ("lswitch", "lrouter", "floatingip")}
        for obj in await nb.get_many(sorted(set(p for p in pairs if p[0] in found))):
            found[obj.table][obj.id] = obj
        # Only the ports' addresses matter here, and a network may have thousands of ports: their JSON
        # is read, not validated into models (the NB's claims make the final call on an address).
        held = {ip for port in await nb.get_raw_many([p for p in pairs if p[0] == "lport"])
                if isinstance(port.get("ips"), list) for ip in port["ips"] if isinstance(ip, str)}
        return cls(found["lswitch"], subnets, {}, found["lrouter"], found["floatingip"],
                   held_ips={lswitch: held})

    @classmethod
    async def for_port(cls, nb: Any, port: LogicalPort) -> "Snapshot":
        """What one port's view needs: its subnets' table, its hosts' chassis and its status."""
        hosts = [b.host for b in bindings_of(port)]
        objects = await nb.get_many([("chassis", h) for h in hosts] + [("lport_status", port.id)])
        return cls({}, {s.id: s for s in await nb.list(table="subnet")}, {}, {}, {},
                   {o.id: o for o in objects if o.table == "chassis"},
                   {o.id: o for o in objects if o.table == "lport_status"})

    def subnets_of(self, lswitch: str) -> list[Subnet]:
        """A network's subnets, IPv4 first, in address order."""
        return sorted((s for s in self.subnets.values() if s.lswitch == lswitch),
                      key=lambda s: (s.network.version, int(s.network.network_address), s.network.prefixlen))

    def subnet_for(self, lswitch: str, ip: str) -> Subnet | None:
        addr = ipaddress.ip_address(ip)
        for subnet in self.subnets_of(lswitch):
            if addr.version == subnet.network.version and addr in subnet.network:
                return subnet
        return None

    def used_ips(self, lswitch: str) -> set[str]:
        """Every address held on a network: ports, router interfaces and gateways, floating IPs, gateways."""
        mine = {s.id for s in self.subnets_of(lswitch)}
        used = {s.gateway_ip for s in self.subnets.values() if s.id in mine and s.gateway_ip}
        used.update(self.held_ips.get(lswitch, ()))
        for port in self.ports.values():
            if port.lswitch == lswitch:
                used.update(port.ips)
        for router in self.routers.values():
            used.update(p.ip for p in router.ports if p.subnet in mine)
            gw = router.external_gateway
            if gw is not None and gw.lswitch == lswitch:
                used.add(gw.ip)
        used.update(f.floating_ip for f in self.fips.values() if f.lswitch == lswitch)
        return used

    def virtual_ports(self) -> list[dict[str, Any]]:
        found = []
        for router in self.routers.values():
            for rport in router.ports:
                subnet = self.subnets.get(rport.subnet)
                found.append(_virtual_port(
                    virtual_port_id("router-interface", router.id, rport.subnet), router.topic,
                    subnet.lswitch if subnet else "", rport.mac, [(rport.subnet, rport.ip)],
                    OWNER_INTERFACE, router.id))
            gw = router.external_gateway
            if gw is not None:
                subnet = self.subnet_for(gw.lswitch, gw.ip)
                found.append(_virtual_port(
                    virtual_port_id("router-gateway", router.id), router.topic, gw.lswitch, gw.mac,
                    [(subnet.id if subnet else "", gw.ip)], OWNER_GATEWAY, router.id))
        for fip in self.fips.values():
            subnet = self.subnet_for(fip.lswitch, fip.floating_ip)
            found.append(_virtual_port(
                virtual_port_id("floatingip", fip.id), fip.topic, fip.lswitch, fip.mac,
                [(subnet.id if subnet else "", fip.floating_ip)], OWNER_FLOATINGIP, fip.id))
        return found


def _common(obj: Any) -> dict[str, Any]:
    return {"id": obj.id, "project_id": obj.topic, "tenant_id": obj.topic, "revision_number": obj.version}


def network_view(ls: LogicalSwitch, subnet_ids: list[str]) -> dict[str, Any]:
    return {**_common(ls), "name": ls.name, "admin_state_up": True, "shared": False, "status": "ACTIVE",
            "subnets": sorted(subnet_ids), "mtu": ls.mtu, "provider:network_type": "geneve",
            "provider:physical_network": None, "provider:segmentation_id": ls.segmentation_id,
            "router:external": ls.router_external, "port_security_enabled": True}


def subnet_view(sn: Subnet) -> dict[str, Any]:
    return {**_common(sn), "name": sn.name, "network_id": sn.lswitch, "cidr": sn.cidr,
            "ip_version": sn.network.version, "gateway_ip": sn.gateway_ip,
            "enable_dhcp": False, "allocation_pools": alloc.allocation_pools(sn), "dns_nameservers": [],
            "host_routes": [], "ipv6_ra_mode": None, "ipv6_address_mode": None, "subnetpool_id": None}


def vif_binding(host: str | None, snap: Snapshot) -> tuple[str, dict[str, Any]]:
    """(vif_type, vif_details) of a binding to `host`: what os-vif needs to plug the VIF there.

    `datapath_type` and `bridge_name` are the chassis' own: without `datapath_type` os-vif (re)creates
    the bridge with the kernel datapath, which a userspace (netdev) chassis cannot run."""
    if not host:
        return "unbound", {}
    chassis = snap.chassis.get(host)
    if chassis is None:
        return "binding_failed", {}
    return "ovs", {"port_filter": True, "datapath_type": chassis.datapath_type,
                   "bridge_name": chassis.bridge_name, "ovs_hybrid_plug": False, "connectivity": "l2"}


def port_status(port: LogicalPort, snap: Snapshot) -> str:
    """ACTIVE once the chassis of its active binding reports the VIF up (and the port is enabled)."""
    status = snap.statuses.get(port.id)
    up = status is not None and port.binding_chassis is not None and port.binding_chassis in status.up
    return "ACTIVE" if up and port.enabled else "DOWN"


def binding_view(port: LogicalPort, binding: InactiveBinding, snap: Snapshot) -> dict[str, Any]:
    """One of the port's bindings as Neutron's binding-extended extension shows it."""
    vif_type, vif_details = vif_binding(binding.host, snap)
    return {"host": binding.host, "vif_type": vif_type, "vif_details": vif_details,
            "vnic_type": binding.vnic_type, "profile": dict(binding.profile),
            "status": status_of(port, binding.host)}


def port_view(port: LogicalPort, snap: Snapshot) -> dict[str, Any]:
    fixed = []
    for ip in port.ips:
        subnet = snap.subnet_for(port.lswitch, ip)
        fixed.append({"subnet_id": subnet.id if subnet else "", "ip_address": ip})
    vif_type, vif_details = vif_binding(port.binding_chassis, snap)
    return {**_common(port), "name": port.name, "network_id": port.lswitch, "mac_address": port.mac,
            "fixed_ips": fixed, "device_owner": port.device_owner, "device_id": port.device_id,
            "admin_state_up": port.enabled, "status": port_status(port, snap),
            "port_security_enabled": port.port_security,
            "security_groups": list(port.security_groups),
            "allowed_address_pairs": [dataclasses.asdict(p) for p in port.allowed_address_pairs],
            "binding:host_id": chassis_to_host(port.binding_chassis),
            "binding:profile": dict(port.binding_profile),
            "binding:vif_type": vif_type, "binding:vif_details": vif_details,
            "binding:vnic_type": port.vnic_type,
            "dfflow:activation_strategy": port.activation_strategy,
            "dfflow:migration": dataclasses.asdict(port.migration) if port.migration else None}


def _virtual_port(port_id: str, topic: str, lswitch: str, mac: str, fixed: list[tuple[str, str]],
                  owner: str, device: str) -> dict[str, Any]:
    return {"id": port_id, "project_id": topic, "tenant_id": topic, "revision_number": 0, "name": "",
            "network_id": lswitch, "mac_address": mac,
            "fixed_ips": [{"subnet_id": s, "ip_address": ip} for s, ip in fixed],
            "device_owner": owner, "device_id": device, "admin_state_up": True, "status": "ACTIVE",
            "port_security_enabled": False, "security_groups": [], "allowed_address_pairs": [],
            "binding:host_id": "", "binding:profile": {},
            "binding:vif_type": "distributed", "binding:vif_details": {}, "binding:vnic_type": "normal",
            "dfflow:activation_strategy": None, "dfflow:migration": None}


def gateway_info(router: LogicalRouter, snap: Snapshot) -> dict[str, Any] | None:
    gw = router.external_gateway
    if gw is None:
        return None
    subnet = snap.subnet_for(gw.lswitch, gw.ip)
    return {"network_id": gw.lswitch, "enable_snat": True,
            "external_fixed_ips": [{"subnet_id": subnet.id if subnet else "", "ip_address": gw.ip}]}


def router_view(router: LogicalRouter, snap: Snapshot) -> dict[str, Any]:
    return {**_common(router), "name": router.name, "admin_state_up": True, "status": "ACTIVE",
            "external_gateway_info": gateway_info(router, snap), "routes": []}


def floatingip_view(fip: FloatingIP) -> dict[str, Any]:
    return {**_common(fip), "floating_network_id": fip.lswitch, "floating_ip_address": fip.floating_ip,
            "port_id": fip.port, "fixed_ip_address": fip.fixed_ip, "router_id": fip.router,
            "status": "ACTIVE" if fip.port else "DOWN"}
