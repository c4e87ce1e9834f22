"""Neutron's ports over the NB's logical ports: fixed IPs and the MAC chosen when not given, the
binding (`binding:host_id`, `binding:profile`), security groups and address pairs. Router interfaces,
gateways and floating IPs show as ports too (virtual, from their own objects): those are refused here,
each naming the operation that changes it."""
from __future__ import annotations

import contextlib
import ipaddress
from typing import Any, Callable

from dfflow import models
from dfflow.api import alloc, secgroups
from dfflow.api.errors import ApiError, bad_request, conflict, not_found
from dfflow.api.resource import (Resource, Stale, changed, check_field, check_host_address, create_with_retry,
                                 modify_with_retry, nb_errors, new_id, revision_check)
from dfflow.api.views import OWNER_FLOATINGIP, OWNER_GATEWAY, OWNER_INTERFACE, Snapshot, port_view
from dfflow.errors import NotFound, ValidationError
from dfflow.models import LogicalPort, PortStatus
from dfflow.nb import neutron

_VIRTUAL_TABLES = ("subnet", "lrouter", "floatingip")  # what the virtual ports are made from


def fixed_ips(snap: Snapshot, lswitch: str, entries: list[dict[str, Any]] | None,
              current: list[str], offset: int = 0) -> tuple[list[str], set[str]]:
    """The port's addresses for the requested `fixed_ips` (None: one allocated) and which the API chose.

    `current` are the port's present addresses: an entry naming only a subnet keeps the port's
    address in that subnet rather than taking another one.
    """
    used = snap.used_ips(lswitch) - set(current)
    subnets = snap.subnets_of(lswitch)
    if entries is None:
        for subnet in subnets:
            ip = alloc.free_ip(subnet, used)
            if ip is not None:
                return [ip], {f"ips[{offset}]"}
        if subnets:
            raise conflict("IpAddressGenerationFailure", f"No more IP addresses available on network "
                                                         f"{lswitch}.")
        return [], set()
    ips: list[str] = []
    auto: set[str] = set()
    for entry in entries:
        ip, subnet_id = entry.get("ip_address"), entry.get("subnet_id")
        if ip is None and subnet_id is None:
            raise bad_request("fixed_ips", "each entry needs a subnet_id or an ip_address")
        subnet = None
        if subnet_id is not None:
            subnet = snap.subnets.get(subnet_id)
            if subnet is None:
                raise not_found("subnet", subnet_id)
            if subnet.lswitch != lswitch:
                raise bad_request("fixed_ips", f"subnet {subnet_id} is not on network {lswitch}")
        if ip is not None:
            ip = check_field("fixed_ips", models.check_ip, ip)
            if subnet is None:
                subnet = snap.subnet_for(lswitch, ip)
                if subnet is None:
                    raise ApiError(400, "InvalidIpForNetwork", f"Invalid input for fixed_ips. Reason: IP "
                                                               f"address {ip} is not in any subnet of "
                                                               f"network {lswitch}.")
            elif ipaddress.ip_address(ip) not in subnet.network:
                raise ApiError(400, "InvalidIpForSubnet", f"Invalid input for fixed_ips. Reason: IP address "
                                                          f"{ip} is not in subnet {subnet.id} ({subnet.cidr}).")
            check_host_address("fixed_ips", subnet, ip)
        else:
            kept = [c for c in current if c not in ips and ipaddress.ip_address(c) in subnet.network
                    and ipaddress.ip_address(c).version == subnet.network.version]
            if kept:
                ip = kept[0]
            else:
                ip = alloc.free_ip(subnet, used | set(ips))
                if ip is None:
                    raise conflict("IpAddressGenerationFailure", f"No more IP addresses available on "
                                                                 f"subnet {subnet.id}.")
                auto.add(f"ips[{offset + len(ips)}]")
        if ip in ips:
            raise bad_request("fixed_ips", f"IP address {ip} is listed twice")
        ips.append(ip)
    return ips, auto


def _profile(data: dict[str, Any], port: LogicalPort | None) -> dict[str, Any]:
    """The active binding's profile after this request (null clears it); 400 naming binding:profile."""
    if "binding:profile" not in data:
        return dict(port.binding_profile) if port is not None else {}
    profile = data["binding:profile"]
    return dict(check_field("binding:profile", models.check_profile, {} if profile is None else profile))


def _host(value: Any) -> str | None:
    return check_field("binding:host_id", lambda f, v: neutron.host_to_chassis(v), value)


class Ports(Resource):
    table = LogicalPort.table

    async def views(self) -> list[dict[str, Any]]:
        snap = await Snapshot.load(self.nb, ("lport", "lrouter", "floatingip") + Snapshot.PORTS)
        return [port_view(p, snap) for p in snap.ports.values()] + snap.virtual_ports()

    async def view(self, obj_id: str) -> dict[str, Any]:
        obj = await self.nb.get(self.table, obj_id)
        if obj is not None:
            return await self.shown(obj)
        vport = await self._virtual_port(obj_id)
        if vport is None:
            raise not_found(self.table, obj_id)
        return vport

    async def shown(self, obj: LogicalPort) -> dict[str, Any]:
        return port_view(obj, await Snapshot.for_port(self.nb, obj))

    async def _virtual_port(self, port_id: str) -> dict[str, Any] | None:
        snap = await Snapshot.load(self.nb, _VIRTUAL_TABLES)
        return next((vport for vport in snap.virtual_ports() if vport["id"] == port_id), None)

    async def _refuse_virtual_port(self, port_id: str, verb: str) -> None:
        vport = await self._virtual_port(port_id)
        if vport is None:
            raise not_found(self.table, port_id)
        use = {OWNER_INTERFACE: "remove_router_interface", OWNER_GATEWAY: "the router's "
               "external_gateway_info", OWNER_FLOATINGIP: "the floating IP"}[vport["device_owner"]]
        raise conflict("PortInUse", f"Port {port_id} has device owner {vport['device_owner']} and "
                                    f"cannot be {verb} directly: use {use}.")

    async def create(self, data: dict[str, Any], topic: str, obj_id: str | None = None) -> str:
        """`obj_id`: the new port's id (a new UUID if None)."""
        lswitch = data["network_id"]
        host = _host(data.get("binding:host_id"))
        profile = _profile(data, None)
        given_mac = data.get("mac_address")
        if given_mac is not None:
            given_mac = check_field("mac_address", models.check_mac, given_mac)

        async def build() -> tuple[models.Model, set[str]]:
            snap = await Snapshot.for_network(self.nb, lswitch)
            if lswitch not in snap.switches:
                raise not_found("lswitch", lswitch)
            ips, auto = fixed_ips(snap, lswitch, data.get("fixed_ips"), [])
            mac = given_mac or alloc.random_mac()
            port = LogicalPort(id=obj_id or new_id(), topic=topic, lswitch=lswitch, mac=mac,
                               **await secgroups.port_create_fields(self.nb, data, topic, mac),
                               ips=ips, binding_chassis=host, device_owner=data.get("device_owner", ""),
                               device_id=data.get("device_id", ""), name=data.get("name", ""),
                               enabled=data.get("admin_state_up", True),
                               port_security=data.get("port_security_enabled", True),
                               activation_strategy=data.get("dfflow:activation_strategy"),
                               vnic_type=data.get("binding:vnic_type", "normal"), binding_profile=profile)
            return port, auto | (set() if given_mac else {"mac"})

        return await create_with_retry(self.nb, build)

    async def update(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        if await self.nb.get(self.table, obj_id) is None:
            await self._refuse_virtual_port(obj_id, "updated")
        if set(data) == {"binding:host_id"}:
            # Live migration, step 3: the same conversion the control plane calls without HTTP.
            try:
                await neutron.update_port_binding(self.nb, obj_id, data["binding:host_id"], if_revision)
            except ValidationError as exc:
                raise bad_request("binding:host_id", exc.message) from None
            return
        if "binding:host_id" in data:
            _host(data["binding:host_id"])
        _profile(data, None)  # malformed: refused before any read
        mac = data.get("mac_address")
        if mac is not None:
            mac = check_field("mac_address", models.check_mac, mac)

        async def build() -> tuple[Callable, set[str]]:
            # Only what this update needs: the port, and for new addresses what its network holds
            # and the floating IPs on the port (not every table: a busy NB made that the cost).
            current = await self.nb.get(self.table, obj_id)
            if current is None:
                raise not_found(self.table, obj_id)
            ips, auto = list(current.ips), set()
            if "fixed_ips" in data:
                snap = await Snapshot.for_network(self.nb, current.lswitch)
                ips, auto = fixed_ips(snap, current.lswitch, data["fixed_ips"], current.ips)
                lost = set(current.ips) - set(ips)
                fips = await self.nb.get_many([r for r in await self.nb.referrers(self.table, obj_id)
                                               if r[0] == "floatingip"])
                for fip in fips:
                    if fip.port == obj_id and fip.fixed_ip in lost:
                        raise conflict("IpAddressInUse", f"Fixed IP {fip.fixed_ip} of port {obj_id} has "
                                                         f"floating IP {fip.floating_ip} ({fip.id}): "
                                                         f"disassociate it first.")

            def change(port: LogicalPort) -> LogicalPort | None:
                revision_check(if_revision, port)
                if port.ips != current.ips:  # changed since the snapshot: choose again
                    raise Stale()
                if mac is not None and mac != port.mac and port.binding_chassis is not None:
                    raise conflict("PortBound", f"Unable to change the MAC address of port {obj_id}: it is "
                                                f"bound to {port.binding_chassis}.")
                old = port
                if "binding:host_id" in data:
                    port = neutron.bind(port, data["binding:host_id"]) or port
                return changed(old, port.replace(
                    mac=mac or port.mac, ips=ips, name=data.get("name", port.name),
                    device_owner=data.get("device_owner", port.device_owner),
                    device_id=data.get("device_id", port.device_id),
                    enabled=data.get("admin_state_up", port.enabled),
                    **secgroups.port_update_fields(data, port, mac or port.mac),
                    activation_strategy=data.get("dfflow:activation_strategy", port.activation_strategy),
                    vnic_type=data.get("binding:vnic_type", port.vnic_type),
                    binding_profile=_profile(data, port)))

            return change, auto

        await modify_with_retry(self.nb, self.table, obj_id, build)

    async def delete(self, obj_id: str) -> None:
        with nb_errors(self.table):
            if await self.nb.get(self.table, obj_id) is None:
                await self._refuse_virtual_port(obj_id, "deleted")
            await self.nb.delete(self.table, obj_id)
        # its VIF reports go with it (an orphan left by a failure here is harmless)
        with contextlib.suppress(NotFound):
            await self.nb.delete(PortStatus.table, obj_id)
