"""Neutron's floating IPs over the NB: an address (and a MAC) chosen on the external network unless
given, mapped to one IPv4 address of a port through the router that joins the port's subnet to
that network."""
from __future__ import annotations

from typing import Any, Callable

from dfflow import models
from dfflow.api import alloc
from dfflow.api.errors import ApiError, bad_request, not_found
from dfflow.api.resource import (Resource, changed, check_field, create_with_retry, external_ipv4,
                                 modify_with_retry, new_id, revision_check)
from dfflow.api.views import Snapshot, floatingip_view
from dfflow.models import FloatingIP


def _association(snap: Snapshot, network: str, port_id: str, fixed_ip: str | None) -> tuple[str, str]:
    """(fixed IP, router) for a floating IP on `network` mapped to `port_id`."""
    port = snap.ports.get(port_id)
    if port is None:
        if any(v["id"] == port_id for v in snap.virtual_ports()):
            raise bad_request("port_id", f"port {port_id} belongs to a router or floating IP")
        raise not_found("lport", port_id)
    v4 = list(alloc.addresses(port.ips, 4))
    if fixed_ip is not None:
        fixed_ip = check_field("fixed_ip_address", models.check_ip, fixed_ip, None, 4)
        if fixed_ip not in v4:
            raise bad_request("fixed_ip_address", f"{fixed_ip} is not an IPv4 address of port {port_id} "
                                                  f"({', '.join(port.ips) or 'none'})")
    elif len(v4) == 1:
        fixed_ip = v4[0]
    elif not v4:
        raise bad_request("port_id", f"port {port_id} has no IPv4 address to map a floating IP to")
    else:
        raise bad_request("fixed_ip_address", f"port {port_id} has several IPv4 addresses; give "
                                              f"fixed_ip_address")
    subnet = snap.subnet_for(port.lswitch, fixed_ip)
    for router in sorted(snap.routers.values(), key=lambda r: r.id):
        gw = router.external_gateway
        if gw is not None and gw.lswitch == network and subnet is not None \
                and any(p.subnet == subnet.id for p in router.ports):
            return fixed_ip, router.id
    raise ApiError(404, "ExternalGatewayForFloatingIPNotFound",
                   f"External network {network} is not reachable from subnet "
                   f"{subnet.id if subnet else '?'}. Therefore, cannot associate port {port_id} with a "
                   f"floating IP.")


class FloatingIPs(Resource):
    table = FloatingIP.table

    async def views(self) -> list[dict[str, Any]]:
        return [floatingip_view(f) for f in await self.nb.list(table=self.table)]

    async def shown(self, obj: FloatingIP) -> dict[str, Any]:
        return floatingip_view(obj)

    async def create(self, data: dict[str, Any], topic: str, obj_id: str | None = None) -> str:
        """`obj_id`: the new floating IP's id (a new UUID if None)."""
        network = data["floating_network_id"]
        if data.get("fixed_ip_address") is not None and data.get("port_id") is None:
            raise bad_request("fixed_ip_address", "set without a port_id")

        async def build() -> tuple[models.Model, set[str]]:
            snap = await Snapshot.load(self.nb)
            ext = snap.switches.get(network)
            if ext is None:
                raise not_found("lswitch", network)
            if not ext.router_external:
                raise bad_request("floating_network_id", f"network {network} is not an external network")
            auto = {"mac"}
            ip, chosen = external_ipv4(snap, network, data.get("subnet_id"), data.get("floating_ip_address"),
                                       snap.used_ips(network), ("floating_ip_address", "subnet_id"),
                                       ("", "network "))
            if chosen:
                auto.add("floating_ip")
            fixed, router = None, None
            if data.get("port_id") is not None:
                fixed, router = _association(snap, network, data["port_id"], data.get("fixed_ip_address"))
            return FloatingIP(id=obj_id or new_id(), topic=topic, floating_ip=ip, lswitch=network,
                              mac=alloc.random_mac(), port=data.get("port_id"), fixed_ip=fixed, router=router), auto

        return await create_with_retry(self.nb, build)

    async def update(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        snap = await Snapshot.load(self.nb)
        fip = snap.fips.get(obj_id)
        if fip is None:
            raise not_found(self.table, obj_id)
        port_id = data.get("port_id", fip.port)
        fixed_wanted = data.get("fixed_ip_address")
        if port_id is None:
            if fixed_wanted is not None:
                raise bad_request("fixed_ip_address", "set without a port_id")
            fixed, router = None, None
        elif port_id == fip.port and "fixed_ip_address" not in data:
            fixed, router = fip.fixed_ip, fip.router
        else:
            fixed, router = _association(snap, fip.lswitch, port_id, fixed_wanted)

        def change(current: FloatingIP) -> FloatingIP | None:
            revision_check(if_revision, current)
            return changed(current, current.replace(port=port_id, fixed_ip=fixed, router=router))

        async def build() -> tuple[Callable, set[str]]:
            return change, set()

        await modify_with_retry(self.nb, self.table, obj_id, build)
