"""Neutron's networks over the NB's logical switches: a VNI chosen for each (`provider:segmentation_id`
when given), the project's default security group made with its first network."""
from __future__ import annotations

from typing import Any

from dfflow import models
from dfflow.api import alloc, secgroups
from dfflow.api.errors import bad_request, conflict
from dfflow.api.resource import Resource, changed, create_with_retry, new_id, revision_check
from dfflow.api.views import Snapshot, network_view
from dfflow.models import LogicalSwitch

VNI_COUNTER = "vni"  # the NB's high-water mark of VNIs handed out: never one twice while any is new


def _check_flags(data: dict[str, Any]) -> None:
    if data.get("admin_state_up") is False:
        raise bad_request("admin_state_up", "a dfflow network is always up; set admin_state_up on its ports")
    if data.get("shared") is True:
        raise bad_request("shared", "shared networks are not supported")


async def choose_vni(nb: Any, lost_before: bool) -> int:
    """A VNI for a new network: one never handed out while there is one (the NB's counter), then the
    lowest free one. After a lost race (`lost_before`: a network made with an explicit VNI took it),
    the counter jumps past every VNI in use."""
    floor = models.VNI_MIN
    if lost_before:
        floor = max([floor - 1] + [ls.segmentation_id for ls in await nb.list(table="lswitch")
                                   if ls.segmentation_id <= models.VNI_MAX]) + 1
    vni = await nb.advance(VNI_COUNTER, floor)
    if vni > models.VNI_MAX:  # every VNI was handed out once: reuse the lowest free one
        vni = alloc.free_vni(ls.segmentation_id for ls in await nb.list(table="lswitch"))
    if vni is None:
        raise conflict("NoNetworkAvailable", "Unable to create the network: no free segmentation ID is left.")
    return vni


class Networks(Resource):
    table = LogicalSwitch.table

    async def views(self) -> list[dict[str, Any]]:
        snap = await Snapshot.load(self.nb, ("lswitch", "subnet"))
        return [network_view(ls, [s.id for s in snap.subnets_of(ls.id)]) for ls in snap.switches.values()]

    async def shown(self, obj: LogicalSwitch) -> dict[str, Any]:
        subnets = await self.nb.list(table="subnet")
        return network_view(obj, [s.id for s in subnets if s.lswitch == obj.id])

    async def create(self, data: dict[str, Any], topic: str, obj_id: str | None = None) -> str:
        """`obj_id`: the new network's id (a new UUID if None)."""
        _check_flags(data)
        await secgroups.ensure_default(self.nb, topic)  # Neutron makes it with a project's first network
        given_vni = data.get("provider:segmentation_id")
        attempts = 0

        async def build() -> tuple[models.Model, set[str]]:
            nonlocal attempts
            attempts += 1
            vni = given_vni if given_vni is not None else await choose_vni(self.nb, attempts > 1)
            ls = LogicalSwitch(id=obj_id or new_id(), topic=topic, name=data.get("name", ""), segmentation_id=vni,
                               mtu=data.get("mtu", LogicalSwitch.mtu),
                               router_external=data.get("router:external", False))
            return ls, set() if given_vni is not None else {"segmentation_id"}

        return await create_with_retry(self.nb, build)

    async def update(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        _check_flags(data)
        if data.get("router:external") is False:
            snap = await Snapshot.load(self.nb, ("lrouter", "floatingip"))
            users = [f"router {r.id}" for r in snap.routers.values()
                     if r.external_gateway and r.external_gateway.lswitch == obj_id]
            users += [f"floating IP {f.id}" for f in snap.fips.values() if f.lswitch == obj_id]
            if users:
                raise conflict("ExternalNetworkInUse", f"External network {obj_id} cannot be made internal: "
                                                       f"it is used by {', '.join(sorted(users)[:5])}.")

        def change(ls: LogicalSwitch) -> LogicalSwitch | None:
            revision_check(if_revision, ls)
            values = {"name": data.get("name", ls.name), "mtu": data.get("mtu", ls.mtu),
                      "router_external": data.get("router:external", ls.router_external)}
            return changed(ls, ls.replace(**values))

        await self.nb.modify(self.table, obj_id, change)
