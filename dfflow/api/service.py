"""Neutron's operations on networks, subnets, ports, routers and floating IPs, over the NB. No HTTP.

`NeutronService(nb)` takes and returns Neutron-shaped dicts (the body's inner object) and raises
`ApiError` with Neutron's status, type and message. It parses the request against Neutron's attribute
map and hands it to the resource's module (`networks`, `subnets`, `ports`, `routers`, `floatingips`),
whose every write is one `NbApi` create, compare-and-set update (`modify`) or delete, so it is
validated, versioned and published by the NB, and never half done; nothing here keeps state, so any
number of API processes can serve one NB db. The HTTP layer (`dfflow.api.app`) is a thin shell
around it; the sandbox drives it directly:

    svc = NeutronService(nb)
    net = await svc.create("networks", {"name": "net1"}, project="demo")
    await svc.create("subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24"}, project="demo")
    port = await svc.create("ports", {"network_id": net["id"], "binding:host_id": "chassis-1"}, project="demo")
"""
from __future__ import annotations

from typing import Any

from dfflow.api.attributes import RESOURCES, parse_body
from dfflow.api.attributes import request_project as _project
from dfflow.api.floatingips import FloatingIPs
from dfflow.api.networks import Networks
from dfflow.api.ports import Ports
from dfflow.api.query import Page, parse_query, run
from dfflow.api.resource import Resource, nb_errors
from dfflow.api.routers import Routers
from dfflow.api.subnets import Subnets

RESOURCE_CLASSES: dict[str, type[Resource]] = {"networks": Networks, "subnets": Subnets, "ports": Ports,
                                               "routers": Routers, "floatingips": FloatingIPs}


class NeutronService:
    def __init__(self, nb: Any, default_project: str = "admin"):
        self.nb = nb
        self.default_project = default_project
        self.resources = {plural: cls(nb) for plural, cls in RESOURCE_CLASSES.items()}
        self.routers: Routers = self.resources["routers"]  # type: ignore[assignment]

    async def list(self, plural: str, params: list[tuple[str, str]]) -> Page:
        query = parse_query(RESOURCES[plural], params)
        return run(query, await self.resources[plural].views())

    async def show(self, plural: str, obj_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        view = await self.resources[plural].view(obj_id)
        if fields:
            view = {k: view[k] for k in fields if k in view}
        return view

    async def create(self, plural: str, data: dict[str, Any], project: str | None = None,
                     wrapped: bool = False, obj_id: str | None = None) -> dict[str, Any]:
        """Create from the body's inner object (or the whole body if `wrapped`). `obj_id`: the new
        object's id, for a caller that names its objects (the sandbox); a new UUID if None."""
        resource = RESOURCES[plural]
        data = parse_body(resource, data if wrapped else {resource.singular: data}, "POST")
        topic = _project(data, project or self.default_project)
        handler = self.resources[plural]
        with nb_errors(handler.table):
            created = await handler.create(data, topic, obj_id)
        return await handler.view(created)

    async def update(self, plural: str, obj_id: str, data: dict[str, Any], wrapped: bool = False,
                     if_revision: int | None = None) -> dict[str, Any]:
        resource = RESOURCES[plural]
        data = parse_body(resource, data if wrapped else {resource.singular: data}, "PUT")
        handler = self.resources[plural]
        with nb_errors(handler.table):
            await handler.update(obj_id, data, if_revision)
        return await handler.view(obj_id)

    async def delete(self, plural: str, obj_id: str) -> None:
        await self.resources[plural].delete(obj_id)

    async def add_router_interface(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.routers.add_interface(router_id, body)

    async def remove_router_interface(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.routers.remove_interface(router_id, body)
