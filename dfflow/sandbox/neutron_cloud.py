"""The sandbox's cloud when neutron-server (with the dfflow driver) serves its API.

Neutron's database is then the source of truth: every network, subnet, router, interface, gateway and
floating IP is made through Neutron's API (python-neutronclient), never written to the NB db directly
(the driver writes it there, and its sync would delete what Neutron does not know). Neutron names its
objects by UUID: the sandbox's commands keep taking names, looked up in Neutron. VMs are booted and
live-migrated as with `dfflow api` (cloud.py, nova.py): the same Nova calls reach neutron-server.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from dfflow.sandbox.cloud import Cloud
from dfflow.errors import NotFound, ValidationError
from dfflow.sandbox.topology import Vm
from dfflow.models import FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, Subnet


class NeutronCloud(Cloud):
    async def _lookup(self, kind: str, name_or_id: str) -> str:
        """The id of the Neutron network or router named (or with the id) `name_or_id`."""
        for query in ({"name": name_or_id}, {"id": name_or_id}):
            found = (await self.neutron(f"list_{kind}s", **query))[f"{kind}s"]
            if len(found) == 1:
                return found[0]["id"]
            if len(found) > 1:
                raise ValidationError(kind, f"{len(found)} {kind}s are named {name_or_id!r}: give the id")
        raise NotFound(LogicalSwitch.table if kind == "network" else LogicalRouter.table, name_or_id, field=kind)

    async def network_id(self, network: str) -> str:
        return await self._lookup("network", network)

    async def create_network(self, name: str, cidr: str, vni: int | None = None,
                             external: bool = False, mtu: int = 1400) -> tuple[LogicalSwitch, Subnet]:
        net = ipaddress.ip_network(cidr, strict=False)
        body: dict[str, Any] = {"name": name, "project_id": self.topic, "mtu": mtu, "router:external": external}
        if vni is not None:
            body.update({"provider:network_type": "geneve", "provider:segmentation_id": vni})
        network = (await self.neutron("create_network", {"network": body}))["network"]
        try:
            subnet = (await self.neutron("create_subnet", {"subnet": {
                "network_id": network["id"], "name": f"{name}-subnet", "project_id": self.topic,
                "cidr": str(net), "ip_version": net.version, "gateway_ip": str(net.network_address + 1),
                "enable_dhcp": False}}))["subnet"]
        except Exception:
            await self.neutron("delete_network", network["id"])
            raise
        return (await self.nb.get_or_raise(LogicalSwitch.table, network["id"]),
                await self.nb.get_or_raise(Subnet.table, subnet["id"]))

    async def _subnet(self, network: str) -> Subnet:
        return await super()._subnet(await self.network_id(network))

    async def create_port(self, network: str, chassis: str | None, ip: str | None = None,
                          name: str = "", device_id: str = "", mac: str | None = None,
                          attrs: dict[str, Any] | None = None) -> LogicalPort:
        return await super().create_port(await self.network_id(network), chassis, ip, name, device_id, mac,
                                         attrs)

    async def create_vm(self, name: str, chassis: str, network: str, ip: str | None = None,
                        mac: str | None = None, port_attrs: dict[str, Any] | None = None) -> Vm:
        return await super().create_vm(name, chassis, await self.network_id(network), ip, mac, port_attrs)

    # -- routers and floating IPs ---------------------------------------------------
    async def create_router(self, name: str, networks: list[str], external: str | None = None) -> LogicalRouter:
        body: dict[str, Any] = {"name": name, "project_id": self.topic}
        if external is not None:
            body["external_gateway_info"] = {"network_id": await self.network_id(external)}
        router = (await self.neutron("create_router", {"router": body}))["router"]
        for network in networks:
            await self.add_router_interface(router["id"], network)
        return await self.nb.get_or_raise(LogicalRouter.table, router["id"])

    async def add_router_interface(self, router: str, network: str) -> LogicalRouter:
        router_id, subnet = await self._lookup("router", router), await self._subnet(network)
        await self.neutron("add_interface_router", router_id, {"subnet_id": subnet.id})
        return await self.nb.get_or_raise(LogicalRouter.table, router_id)

    async def remove_router_interface(self, router: str, network: str) -> LogicalRouter:
        router_id, subnet = await self._lookup("router", router), await self._subnet(network)
        await self.neutron("remove_interface_router", router_id, {"subnet_id": subnet.id})
        return await self.nb.get_or_raise(LogicalRouter.table, router_id)

    async def create_floating_ip(self, vm: str, external: str | None = None) -> FloatingIP:
        """A floating IP for the VM's port, on `external` or the gateway network of a router on its subnet
        (Neutron picks the address and the router)."""
        port_id = self.sandbox.vm(vm).vifs[0].port_id
        if external is None:
            port = await self.nb.get_or_raise(LogicalPort.table, port_id)
            subnet = await super()._subnet(port.lswitch)
            gateways = [r.external_gateway.lswitch for r in await self.nb.list(LogicalRouter.table)
                        if subnet.id in {p.subnet for p in r.ports} and r.external_gateway is not None]
            if not gateways:
                raise ValidationError("vm", f"no router with an external gateway serves {vm}'s subnet")
            external_id = gateways[0]
        else:
            external_id = await self.network_id(external)
        fip = (await self.neutron("create_floatingip", {"floatingip": {
            "floating_network_id": external_id, "port_id": port_id, "project_id": self.topic}}))["floatingip"]
        return await self.nb.get_or_raise(FloatingIP.table, fip["id"])

    async def disassociate_floating_ip(self, fip_id: str) -> FloatingIP:
        await self.neutron("update_floatingip", fip_id, {"floatingip": {"port_id": None}})
        return await self.nb.get_or_raise(FloatingIP.table, fip_id)

    async def delete_floating_ip(self, fip_id: str) -> None:
        await self.neutron("delete_floatingip", fip_id)
