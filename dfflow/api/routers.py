"""Neutron's routers over the NB's logical routers: the external gateway (an address and a MAC chosen
on the external network unless given) and the interfaces, each on one subnet's gateway IP with a
MAC chosen here. A router with interfaces is not deleted (Neutron's RouterInUse)."""
from __future__ import annotations

import ipaddress
from typing import Any, Callable

from dfflow import models
from dfflow.api import alloc
from dfflow.api.attributes import INTERFACE_IN
from dfflow.api.errors import ApiError, bad_request, conflict, not_found
from dfflow.api.resource import (ALLOC_RETRIES, Resource, Stale, changed, check_body, create_with_retry,
                                 external_ipv4, modify_with_retry, nb_errors, new_id, revision_check)
from dfflow.api.views import Snapshot, router_view, virtual_port_id
from dfflow.errors import VersionConflict
from dfflow.models import ExternalGateway, LogicalRouter, RouterPort, Subnet


def _gateway(snap: Snapshot, info: dict[str, Any], current: ExternalGateway | None
             ) -> tuple[ExternalGateway, set[str]]:
    if info.get("enable_snat") is False:
        raise bad_request("external_gateway_info", "enable_snat false is not supported")
    network = info.get("network_id")
    if network is None:
        raise bad_request("external_gateway_info", "network_id is required")
    ext = snap.switches.get(network)
    if ext is None:
        raise not_found("lswitch", network)
    if not ext.router_external:
        raise bad_request("external_gateway_info", f"network {network} is not an external network "
                                                   f"(router:external is false)")
    fixed = info.get("external_fixed_ips")
    if not fixed and current is not None and current.lswitch == network:
        return current, set()
    mac = current.mac if current is not None and current.lswitch == network else alloc.random_mac()
    auto = {"external_gateway.mac"} if mac != (current.mac if current else None) else set()
    used = snap.used_ips(network) - ({current.ip} if current is not None else set())
    entry = (fixed or [{}])[0]
    ip, chosen = external_ipv4(snap, network, entry.get("subnet_id"), entry.get("ip_address"), used,
                               ("external_gateway_info", "external_gateway_info"), ("network ", "external network "))
    if chosen:
        auto.add("external_gateway.ip")
    return ExternalGateway(lswitch=network, ip=ip, mac=mac), auto


def _check_up(data: dict[str, Any]) -> None:
    if data.get("admin_state_up") is False:
        raise bad_request("admin_state_up", "a dfflow router is always up")


def _interface_reply(router: LogicalRouter, subnet: Subnet) -> dict[str, Any]:
    return {"id": router.id, "tenant_id": router.topic, "project_id": router.topic,
            "subnet_id": subnet.id, "subnet_ids": [subnet.id], "network_id": subnet.lswitch,
            "port_id": virtual_port_id("router-interface", router.id, subnet.id)}


def _interface_subnet(snap: Snapshot, router_id: str, body: dict[str, Any], adding: bool) -> Subnet:
    subnet_id, port_id = body.get("subnet_id"), body.get("port_id")
    if subnet_id is not None and port_id is not None:
        raise bad_request("port_id", "give subnet_id or port_id, not both")
    if port_id is not None:
        if adding:
            raise bad_request("port_id", "attaching a router to an existing port is not supported; "
                                         "pass subnet_id (the interface takes the subnet's gateway IP)")
        router = snap.routers[router_id]
        for rport in router.ports:
            if virtual_port_id("router-interface", router_id, rport.subnet) == port_id:
                subnet_id = rport.subnet
                break
        else:
            raise ApiError(404, "RouterInterfaceNotFound",
                           f"Router {router_id} does not have an interface with id {port_id}")
    if subnet_id is None:
        raise bad_request("subnet_id", "either subnet_id or port_id must be specified")
    subnet = snap.subnets.get(subnet_id)
    if subnet is None:
        raise not_found("subnet", subnet_id)
    return subnet


def _added_interface(router: LogicalRouter, subnet: Subnet, mac: str, snap: Snapshot) -> LogicalRouter:
    """`router` with an interface on `subnet` (its gateway IP, `mac`); 400 if it has one there, or on
    a subnet that overlaps it."""
    for rport in router.ports:
        if rport.subnet == subnet.id:
            raise bad_request("subnet_id", f"router {router.id} already has a port on subnet {subnet.id}")
        other = snap.subnets.get(rport.subnet)
        if other is not None and other.network.version == subnet.network.version \
                and other.network.overlaps(subnet.network):
            raise bad_request("subnet_id", f"cidr {subnet.cidr} of subnet {subnet.id} overlaps "
                                           f"cidr {other.cidr} of subnet {other.id}, already "
                                           f"attached to router {router.id}")
    return router.replace(ports=[*router.ports, RouterPort(subnet=subnet.id, mac=mac, ip=subnet.gateway_ip)])


class Routers(Resource):
    table = LogicalRouter.table

    async def views(self) -> list[dict[str, Any]]:
        snap = await Snapshot.load(self.nb, ("subnet", "lrouter"))
        return [router_view(r, snap) for r in snap.routers.values()]

    async def shown(self, obj: LogicalRouter) -> dict[str, Any]:
        return router_view(obj, await Snapshot.load(self.nb, ("subnet",)))

    async def create(self, data: dict[str, Any], topic: str, obj_id: str | None = None) -> str:
        """`obj_id`: the new router's id (a new UUID if None)."""
        _check_up(data)

        async def build() -> tuple[models.Model, set[str]]:
            gateway, auto = None, set()
            if data.get("external_gateway_info"):
                snap = await Snapshot.load(self.nb)
                gateway, auto = _gateway(snap, data["external_gateway_info"], None)
            return LogicalRouter(id=obj_id or new_id(), topic=topic, name=data.get("name", ""),
                                 external_gateway=gateway), auto

        return await create_with_retry(self.nb, build)

    async def update(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        _check_up(data)

        async def build() -> tuple[Callable, set[str]]:
            snap = await Snapshot.load(self.nb)
            router = snap.routers.get(obj_id)
            if router is None:
                raise not_found(self.table, obj_id)
            gateway, auto = router.external_gateway, set()
            if "external_gateway_info" in data:
                info = data["external_gateway_info"]
                gateway, auto = _gateway(snap, info, router.external_gateway) if info else (None, set())
                need = sorted({f.lswitch for f in snap.fips.values() if f.router == obj_id})
                if any(gateway is None or gateway.lswitch != net for net in need):
                    raise conflict("RouterExternalGatewayInUseByFloatingIp",
                                   f"Gateway cannot be updated for router {obj_id}: floating IPs on network "
                                   f"{', '.join(need)} need it.")

            def change(current: LogicalRouter) -> LogicalRouter | None:
                revision_check(if_revision, current)
                if current.external_gateway != router.external_gateway:
                    raise Stale()
                return changed(current, current.replace(name=data.get("name", current.name),
                                                        external_gateway=gateway))

            return change, auto

        await modify_with_retry(self.nb, self.table, obj_id, build)

    async def delete(self, obj_id: str) -> None:
        """Neutron refuses to delete a router with interfaces; compare-and-set so none sneaks in meanwhile."""
        with nb_errors(self.table):
            for _ in range(ALLOC_RETRIES):
                router = await self.nb.get_or_raise(self.table, obj_id)
                if router.ports:
                    raise conflict("RouterInUse", f"Router {obj_id} still has ports on subnets "
                                                  f"{', '.join(p.subnet for p in router.ports)}: remove its "
                                                  f"interfaces first.")
                try:
                    await self.nb.delete(self.table, obj_id, version=router.version)
                    return
                except VersionConflict:
                    continue
            raise conflict("Conflict", f"router {obj_id} kept changing; try again")

    async def add_interface(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        check_body(INTERFACE_IN, body)
        with nb_errors(self.table):
            async def build() -> tuple[Callable, set[str]]:
                snap = await Snapshot.load(self.nb)
                if router_id not in snap.routers:
                    raise not_found(self.table, router_id)
                subnet = _interface_subnet(snap, router_id, body, adding=True)
                if subnet.gateway_ip is None:
                    raise bad_request("subnet_id", f"subnet {subnet.id} has no gateway_ip for a router interface")
                mac = alloc.random_mac()
                auto: set[str] = set()

                def change(router: LogicalRouter) -> LogicalRouter:
                    added = _added_interface(router, subnet, mac, snap)
                    auto.clear()
                    auto.add(f"ports[{len(router.ports)}].mac")  # the MAC this API chose
                    return added

                return change, auto

            await modify_with_retry(self.nb, self.table, router_id, build)
            router = await self.nb.get_or_raise(self.table, router_id)
            subnet = await self.nb.get_or_raise("subnet", body.get("subnet_id"))
            return _interface_reply(router, subnet)

    async def remove_interface(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        check_body(INTERFACE_IN, body)
        with nb_errors(self.table):
            snap = await Snapshot.load(self.nb)
            if router_id not in snap.routers:
                raise not_found(self.table, router_id)
            subnet = _interface_subnet(snap, router_id, body, adding=False)
            users = [f.id for f in snap.fips.values() if f.router == router_id and f.fixed_ip is not None
                     and (port := snap.ports.get(f.port)) is not None and port.lswitch == subnet.lswitch
                     and ipaddress.ip_address(f.fixed_ip) in subnet.network]
            if users:
                raise conflict("RouterInterfaceInUseByFloatingIP",
                               f"Router interface for subnet {subnet.id} on router {router_id} cannot be "
                               f"deleted, as it is required by floating IPs {', '.join(sorted(users))}.")

            def change(router: LogicalRouter) -> LogicalRouter:
                kept = [p for p in router.ports if p.subnet != subnet.id]
                if len(kept) == len(router.ports):
                    raise ApiError(404, "RouterInterfaceNotFoundForSubnet",
                                   f"Router {router_id} has no interface on subnet {subnet.id}")
                return router.replace(ports=kept)

            router = await self.nb.modify(self.table, router_id, change)
            return _interface_reply(router, subnet)
