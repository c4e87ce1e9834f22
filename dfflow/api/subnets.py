"""Neutron's subnets over the NB: no DHCP, Neutron's default gateway (the first address), a gateway
that stays while a router interface holds it."""
from __future__ import annotations

import ipaddress
from typing import Any

from dfflow import models
from dfflow.api import alloc
from dfflow.api.errors import bad_request, conflict, not_found, translate
from dfflow.api.resource import Resource, changed, check_field, new_id, revision_check
from dfflow.api.views import Snapshot, subnet_view
from dfflow.errors import Conflict
from dfflow.models import Subnet


class Subnets(Resource):
    table = Subnet.table

    async def views(self) -> list[dict[str, Any]]:
        return [subnet_view(s) for s in await self.nb.list(table=self.table)]

    async def shown(self, obj: Subnet) -> dict[str, Any]:
        return subnet_view(obj)

    async def create(self, data: dict[str, Any], topic: str, obj_id: str | None = None) -> str:
        """`obj_id`: the new subnet's id (a new UUID if None)."""
        if data.get("enable_dhcp") is True:
            raise bad_request("enable_dhcp", "dfflow serves no DHCP; create the subnet with enable_dhcp false")
        cidr = check_field("cidr", models.check_cidr, data["cidr"])
        version = ipaddress.ip_network(cidr).version
        if data.get("ip_version", version) != version:
            raise bad_request("ip_version", f"cidr {cidr} is IPv{version}, not IPv{data['ip_version']}")
        gateway = data["gateway_ip"] if "gateway_ip" in data else alloc.default_gateway(cidr)
        await self.nb.get_or_raise("lswitch", data["network_id"])
        subnet = Subnet(id=obj_id or new_id(), topic=topic, lswitch=data["network_id"], cidr=cidr,
                        gateway_ip=gateway, name=data.get("name", ""))
        try:
            return (await self.nb.create(subnet)).id
        except Conflict as exc:
            raise translate(exc, subnet.table, subnet) from None

    async def update(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        if data.get("enable_dhcp") is True:
            raise bad_request("enable_dhcp", "dfflow serves no DHCP")
        if "gateway_ip" in data:
            snap = await Snapshot.load(self.nb)
            subnet = snap.subnets.get(obj_id)
            if subnet is None:
                raise not_found("subnet", obj_id)
            new_gw = data["gateway_ip"]
            if new_gw != subnet.gateway_ip:
                if any(p.subnet == obj_id for r in snap.routers.values() for p in r.ports):
                    raise conflict("GatewayIpInUse", f"Gateway IP of subnet {obj_id} cannot change while a "
                                                     f"router interface uses it.")
                if new_gw is not None:
                    new_gw = check_field("gateway_ip", models.check_ip, new_gw)
                    if new_gw in snap.used_ips(subnet.lswitch) - {subnet.gateway_ip}:
                        raise conflict("GatewayIpInUse", f"Gateway IP {new_gw} of subnet {obj_id} is already "
                                                         f"allocated on network {subnet.lswitch}.")

        def change(subnet: Subnet) -> Subnet | None:
            revision_check(if_revision, subnet)
            return changed(subnet, subnet.replace(name=data.get("name", subnet.name),
                                                  gateway_ip=data.get("gateway_ip", subnet.gateway_ip)))

        await self.nb.modify(self.table, obj_id, change)
