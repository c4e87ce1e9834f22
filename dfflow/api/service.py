"""Neutron's operations on networks, subnets, ports, routers and floating IPs, over the NB. No HTTP.

`NeutronService(nb)` takes and returns Neutron-shaped dicts (the body's inner object) and raises
`ApiError` with Neutron's status, type and message. Every write is one `NbApi` create, compare-and-set
update (`modify`) or delete, so it is validated, versioned and published by the NB, and never half
done; this object keeps no state, so any number of API processes can serve one NB db. The HTTP layer
(`dfflow.api.app`) is a thin shell around it; the sandbox can drive it directly:

    svc = NeutronService(nb)
    net = await svc.create("networks", {"name": "net1"}, project="demo")
    await svc.create("subnets", {"network_id": net["id"], "cidr": "10.0.0.0/24"}, project="demo")
    port = await svc.create("ports", {"network_id": net["id"], "binding:host_id": "chassis-1"}, project="demo")
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
import uuid
from typing import Any, Awaitable, Callable, Iterator

from dfflow import models
from dfflow.api import alloc, secgroups
from dfflow.api.attributes import INTERFACE_IN, RESOURCES, check_value, parse_body
from dfflow.api.attributes import request_project as _project
from dfflow.api.errors import ApiError, bad_request, conflict, not_found, translate
from dfflow.api.query import Page, parse_query, run
from dfflow.api.views import (OWNER_FLOATINGIP, OWNER_GATEWAY, OWNER_INTERFACE, Snapshot, floatingip_view,
                              network_view, port_view, router_view, subnet_view,
                              virtual_port_id)
from dfflow.errors import Conflict, DfflowError, InUse, NotFound, ValidationError, VersionConflict
from dfflow.models import (ExternalGateway, FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, RouterPort,
                           Subnet)
from dfflow.nb import neutron

ALLOC_RETRIES = 8  # a router that keeps changing while it is deleted: give up after so many reads
# A lost race for a value the API chose (an address, a MAC, a VNI) re-reads and chooses again, with a
# jittered back-off, until this deadline: a client never sees a conflict the server can resolve.
ALLOC_DEADLINE = 30.0  # s
ALLOC_BACKOFF = (0.002, 0.2)  # s: first and largest back-off between attempts
VNI_COUNTER = "vni"  # the NB's high-water mark of VNIs handed out: never one twice while any is new
TABLES = {"networks": "lswitch", "subnets": "subnet", "ports": "lport", "routers": "lrouter",
          "floatingips": "floatingip"}


@contextlib.contextmanager
def nb_errors(table: str) -> Iterator[None]:
    """NB refusals raised inside become the Neutron error for `table`."""
    try:
        yield
    except DfflowError as exc:
        raise translate(exc, table) from None


def _new_id() -> str:
    return str(uuid.uuid4())


def _check(field: str, check: Callable[..., Any], value: Any, *args: Any) -> Any:
    try:
        return check(field, value, *args)
    except ValidationError as exc:
        raise bad_request(field, exc.message) from None


def _check_body(schema: dict[str, Any], body: Any) -> None:
    """A bare (unwrapped) body such as add_router_interface's `{"subnet_id": ...}`."""
    if not isinstance(body, dict):
        raise bad_request("body", "the request body must be a JSON object")
    check_value("", schema, body)


def _check_host_address(field: str, subnet: Subnet, ip: str) -> None:
    """Refuse the addresses of a subnet no port may take: network, broadcast, gateway."""
    lo, hi = alloc.usable_range(subnet)
    if not lo <= int(ipaddress.ip_address(ip)) <= hi:
        raise ApiError(400, "InvalidIpForSubnet", f"Invalid input for {field}. Reason: {ip} is the network "
                                                  f"or broadcast address of subnet {subnet.id} ({subnet.cidr}).")
    if ip == subnet.gateway_ip:
        raise conflict("IpAddressAlreadyAllocated", f"IP address {ip} is the gateway IP of subnet "
                                                    f"{subnet.id}; it is reserved for its router.")


def _changed(old: models.Model, new: models.Model) -> models.Model | None:
    """`new`, or None (write nothing, keep the revision) when the update changes nothing."""
    return None if new == old else new


class _Stale(Exception):
    """The object changed since the snapshot a change was computed from: compute it again."""


def _auto_conflict(exc: Exception, auto: set[str]) -> bool:
    return (isinstance(exc, Conflict) and not isinstance(exc, (InUse, VersionConflict))
            and exc.field in auto)


def _allocation_retries() -> Iterator[Callable[[], Awaitable[bool]]]:
    """Attempts, each with a `retry()` that sleeps a jittered, growing back-off and says whether
    another attempt fits before ALLOC_DEADLINE."""
    deadline = time.monotonic() + ALLOC_DEADLINE
    ceiling = ALLOC_BACKOFF[0]
    alloc.contended.set(False)  # uncontended, a request takes the lowest free address

    async def retry() -> bool:
        nonlocal ceiling
        alloc.contended.set(True)
        pause = random.uniform(0, ceiling)  # full jitter: the losers of one race do not meet again
        ceiling = min(ceiling * 2, ALLOC_BACKOFF[1])
        if time.monotonic() + pause >= deadline:
            return False
        await asyncio.sleep(pause)
        return True

    while True:
        yield retry


class NeutronService:
    def __init__(self, nb: Any, default_project: str = "admin"):
        self.nb = nb
        self.default_project = default_project

    # -- dispatch --------------------------------------------------------------------------------
    async def list(self, plural: str, params: list[tuple[str, str]]) -> Page:
        resource = RESOURCES[plural]
        query = parse_query(resource, params)
        return run(query, await self._views(plural))

    async def show(self, plural: str, obj_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        view = await self._view(plural, obj_id)
        if fields:
            view = {k: view[k] for k in fields if k in view}
        return view

    async def create(self, plural: str, data: dict[str, Any], project: str | None = None,
                     wrapped: bool = False) -> dict[str, Any]:
        """Create from the body's inner object (or the whole body if `wrapped`)."""
        resource = RESOURCES[plural]
        data = parse_body(resource, data if wrapped else {resource.singular: data}, "POST")
        topic = _project(data, project or self.default_project)
        create = getattr(self, f"_create_{resource.singular}")
        with nb_errors(TABLES[plural]):
            obj_id = await create(data, topic)
        return await self._view(plural, obj_id)

    async def update(self, plural: str, obj_id: str, data: dict[str, Any], wrapped: bool = False,
                     if_revision: int | None = None) -> dict[str, Any]:
        resource = RESOURCES[plural]
        data = parse_body(resource, data if wrapped else {resource.singular: data}, "PUT")
        update = getattr(self, f"_update_{resource.singular}")
        with nb_errors(TABLES[plural]):
            await update(obj_id, data, if_revision)
        return await self._view(plural, obj_id)

    async def delete(self, plural: str, obj_id: str) -> None:
        table = TABLES[plural]
        with nb_errors(table):
            if plural == "ports" and await self.nb.get(table, obj_id) is None:
                await self._refuse_virtual_port(obj_id, "deleted")
            if plural == "routers":
                await self._delete_router(obj_id)
                return
            await self.nb.delete(table, obj_id)
        if plural == "ports":  # its VIF reports go with it (an orphan left by a failure here is harmless)
            with contextlib.suppress(NotFound):
                await self.nb.delete("lport_status", obj_id)

    async def _delete_router(self, obj_id: str) -> None:
        """Neutron refuses to delete a router with interfaces; compare-and-set so none sneaks in meanwhile."""
        for _ in range(ALLOC_RETRIES):
            router = await self.nb.get_or_raise("lrouter", obj_id)
            if router.ports:
                raise conflict("RouterInUse", f"Router {obj_id} still has ports on subnets "
                                              f"{', '.join(p.subnet for p in router.ports)}: remove its "
                                              f"interfaces first.")
            try:
                await self.nb.delete("lrouter", obj_id, version=router.version)
                return
            except VersionConflict:
                continue
        raise conflict("Conflict", f"router {obj_id} kept changing; try again")

    # -- reading -----------------------------------------------------------------------------------
    async def _views(self, plural: str) -> list[dict[str, Any]]:
        if plural == "networks":
            snap = await Snapshot.load(self.nb, ("lswitch", "subnet"))
            return [network_view(ls, [s.id for s in snap.subnets_of(ls.id)]) for ls in snap.switches.values()]
        if plural == "subnets":
            return [subnet_view(s) for s in await self.nb.list(table="subnet")]
        if plural == "ports":
            snap = await Snapshot.load(self.nb, ("lport", "lrouter", "floatingip") + Snapshot.PORTS)
            return [port_view(p, snap) for p in snap.ports.values()] + snap.virtual_ports()
        if plural == "routers":
            snap = await Snapshot.load(self.nb, ("subnet", "lrouter"))
            return [router_view(r, snap) for r in snap.routers.values()]
        return [floatingip_view(f) for f in await self.nb.list(table="floatingip")]

    async def _view(self, plural: str, obj_id: str) -> dict[str, Any]:
        table = TABLES[plural]
        obj = await self.nb.get(table, obj_id)
        if obj is None:
            if plural == "ports":
                snap = await Snapshot.load(self.nb, ("subnet", "lrouter", "floatingip"))
                for vport in snap.virtual_ports():
                    if vport["id"] == obj_id:
                        return vport
            raise not_found(table, obj_id)
        if plural == "networks":
            subnets = await self.nb.list(table="subnet")
            return network_view(obj, [s.id for s in subnets if s.lswitch == obj_id])
        if plural == "subnets":
            return subnet_view(obj)
        if plural == "ports":
            return port_view(obj, await Snapshot.for_port(self.nb, obj))
        if plural == "routers":
            return router_view(obj, await Snapshot.load(self.nb, ("subnet",)))
        return floatingip_view(obj)

    async def _create_with_retry(self, build: Callable[[], Awaitable[tuple[models.Model, set[str]]]]) -> str:
        """Create what `build` makes; if a value it chose was taken meanwhile, build again."""
        for retry in _allocation_retries():
            obj, auto = await build()
            try:
                return (await self.nb.create(obj)).id
            except Conflict as exc:
                if _auto_conflict(exc, auto) and await retry():
                    continue
                raise translate(exc, obj.table, obj) from None
        raise AssertionError("unreachable")

    async def _modify_with_retry(self, table: str, obj_id: str,
                                 build: Callable[[], Awaitable[tuple[Callable, set[str]]]]) -> None:
        for retry in _allocation_retries():
            change, auto = await build()
            wanted: list[models.Model] = []

            def recorded(current: models.Model) -> models.Model | None:
                result = change(current)
                wanted[:] = [result] if result is not None else []
                return result

            try:
                await self.nb.modify(table, obj_id, recorded)
                return
            except _Stale:
                if await retry():
                    continue
                raise conflict("Conflict", f"{table} {obj_id} kept changing; try again") from None
            except VersionConflict:
                raise
            except Conflict as exc:
                if _auto_conflict(exc, auto) and await retry():
                    continue
                raise translate(exc, table, wanted[0] if wanted else None) from None

    @staticmethod
    def _revision_check(if_revision: int | None, obj: models.Model) -> None:
        if if_revision is not None and obj.version != if_revision:
            raise VersionConflict(obj.table, obj.id, if_revision, obj.version)

    # -- networks ----------------------------------------------------------------------------------
    @staticmethod
    def _network_flags(data: dict[str, Any]) -> None:
        if data.get("admin_state_up") is False:
            raise bad_request("admin_state_up", "a dfflow network is always up; set admin_state_up on its ports")
        if data.get("shared") is True:
            raise bad_request("shared", "shared networks are not supported")

    async def _create_network(self, data: dict[str, Any], topic: str) -> str:
        self._network_flags(data)
        await secgroups.ensure_default(self.nb, topic)  # Neutron makes it with a project's first network
        given_vni = data.get("provider:segmentation_id")

        attempts = 0

        async def build() -> tuple[models.Model, set[str]]:
            nonlocal attempts
            attempts += 1
            vni = given_vni
            if vni is None:
                floor = models.VNI_MIN
                if attempts > 1:  # lost a VNI to a network made with an explicit one: jump past them all
                    floor = max([floor - 1] + [ls.segmentation_id for ls in await self.nb.list(table="lswitch")
                                               if ls.segmentation_id <= models.VNI_MAX]) + 1
                vni = await self.nb.advance(VNI_COUNTER, floor)
                if vni > models.VNI_MAX:  # every VNI was handed out once: reuse the lowest free one
                    vni = alloc.free_vni(ls.segmentation_id for ls in await self.nb.list(table="lswitch"))
                if vni is None:
                    raise conflict("NoNetworkAvailable", "Unable to create the network: no free "
                                                         "segmentation ID is left.")
            ls = LogicalSwitch(id=_new_id(), topic=topic, name=data.get("name", ""), segmentation_id=vni,
                               mtu=data.get("mtu", LogicalSwitch.mtu),
                               router_external=data.get("router:external", False))
            return ls, set() if given_vni is not None else {"segmentation_id"}

        return await self._create_with_retry(build)

    async def _update_network(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        self._network_flags(data)
        if data.get("router:external") is False:
            snap = await Snapshot.load(self.nb, ("lrouter", "floatingip"))
            users = [f"router {r.id}" for r in snap.routers.values()
                     if r.external_gateway and r.external_gateway.lswitch == obj_id]
            users += [f"floating IP {f.id}" for f in snap.fips.values() if f.lswitch == obj_id]
            if users:
                raise conflict("ExternalNetworkInUse", f"External network {obj_id} cannot be made internal: "
                                                       f"it is used by {', '.join(sorted(users)[:5])}.")

        def change(ls: LogicalSwitch) -> LogicalSwitch:
            self._revision_check(if_revision, ls)
            values = {"name": data.get("name", ls.name), "mtu": data.get("mtu", ls.mtu),
                      "router_external": data.get("router:external", ls.router_external)}
            return _changed(ls, ls.replace(**values))

        await self.nb.modify("lswitch", obj_id, change)

    # -- subnets -----------------------------------------------------------------------------------
    async def _create_subnet(self, data: dict[str, Any], topic: str) -> str:
        if data.get("enable_dhcp") is True:
            raise bad_request("enable_dhcp", "dfflow serves no DHCP; create the subnet with enable_dhcp false")
        cidr = _check("cidr", models.check_cidr, data["cidr"])
        version = ipaddress.ip_network(cidr).version
        if data.get("ip_version", version) != version:
            raise bad_request("ip_version", f"cidr {cidr} is IPv{version}, not IPv{data['ip_version']}")
        gateway = data["gateway_ip"] if "gateway_ip" in data else alloc.default_gateway(cidr)
        await self.nb.get_or_raise("lswitch", data["network_id"])
        subnet = Subnet(id=_new_id(), topic=topic, lswitch=data["network_id"], cidr=cidr, gateway_ip=gateway,
                        name=data.get("name", ""))
        try:
            return (await self.nb.create(subnet)).id
        except Conflict as exc:
            raise translate(exc, subnet.table, subnet) from None

    async def _update_subnet(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
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
                    new_gw = _check("gateway_ip", models.check_ip, new_gw)
                    if new_gw in snap.used_ips(subnet.lswitch) - {subnet.gateway_ip}:
                        raise conflict("GatewayIpInUse", f"Gateway IP {new_gw} of subnet {obj_id} is already "
                                                         f"allocated on network {subnet.lswitch}.")

        def change(subnet: Subnet) -> Subnet:
            self._revision_check(if_revision, subnet)
            return _changed(subnet, subnet.replace(name=data.get("name", subnet.name),
                                                   gateway_ip=data.get("gateway_ip", subnet.gateway_ip)))

        await self.nb.modify("subnet", obj_id, change)

    # -- ports -------------------------------------------------------------------------------------
    def _fixed_ips(self, snap: Snapshot, lswitch: str, entries: list[dict[str, Any]] | None,
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
                ip = _check("fixed_ips", models.check_ip, ip)
                if subnet is None:
                    subnet = snap.subnet_for(lswitch, ip)
                    if subnet is None:
                        raise ApiError(400, "InvalidIpForNetwork", f"Invalid input for fixed_ips. Reason: IP "
                                                                   f"address {ip} is not in any subnet of "
                                                                   f"network {lswitch}.")
                elif ipaddress.ip_address(ip) not in subnet.network:
                    raise ApiError(400, "InvalidIpForSubnet", f"Invalid input for fixed_ips. Reason: IP address "
                                                              f"{ip} is not in subnet {subnet.id} ({subnet.cidr}).")
                _check_host_address("fixed_ips", subnet, ip)
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

    @staticmethod
    def _profile(data: dict[str, Any], port: LogicalPort | None) -> dict[str, Any]:
        """The active binding's profile after this request (null clears it); 400 naming binding:profile."""
        if "binding:profile" not in data:
            return dict(port.binding_profile) if port is not None else {}
        profile = data["binding:profile"]
        return dict(_check("binding:profile", models.check_profile, {} if profile is None else profile))

    async def _create_port(self, data: dict[str, Any], topic: str) -> str:
        lswitch = data["network_id"]
        host = _check("binding:host_id", lambda f, v: neutron.host_to_chassis(v), data.get("binding:host_id"))
        profile = self._profile(data, None)
        given_mac = data.get("mac_address")
        if given_mac is not None:
            given_mac = _check("mac_address", models.check_mac, given_mac)

        async def build() -> tuple[models.Model, set[str]]:
            snap = await Snapshot.for_network(self.nb, lswitch)
            if lswitch not in snap.switches:
                raise not_found("lswitch", lswitch)
            ips, auto = self._fixed_ips(snap, lswitch, data.get("fixed_ips"), [])
            mac = given_mac or alloc.random_mac()
            port = LogicalPort(id=_new_id(), topic=topic, lswitch=lswitch, mac=mac,
                               **await secgroups.port_create_fields(self.nb, data, topic, mac),
                               ips=ips, binding_chassis=host, device_owner=data.get("device_owner", ""),
                               device_id=data.get("device_id", ""), name=data.get("name", ""),
                               enabled=data.get("admin_state_up", True),
                               port_security=data.get("port_security_enabled", True),
                               activation_strategy=data.get("dfflow:activation_strategy"),
                               vnic_type=data.get("binding:vnic_type", "normal"), binding_profile=profile)
            return port, auto | (set() if given_mac else {"mac"})

        return await self._create_with_retry(build)

    async def _refuse_virtual_port(self, port_id: str, verb: str) -> None:
        snap = await Snapshot.load(self.nb, ("subnet", "lrouter", "floatingip"))
        for vport in snap.virtual_ports():
            if vport["id"] == port_id:
                use = {OWNER_INTERFACE: "remove_router_interface", OWNER_GATEWAY: "the router's "
                       "external_gateway_info", OWNER_FLOATINGIP: "the floating IP"}[vport["device_owner"]]
                raise conflict("PortInUse", f"Port {port_id} has device owner {vport['device_owner']} and "
                                            f"cannot be {verb} directly: use {use}.")
        raise not_found("lport", port_id)

    async def _update_port(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        if await self.nb.get("lport", obj_id) is None:
            await self._refuse_virtual_port(obj_id, "updated")
        if set(data) == {"binding:host_id"}:
            # Live migration, step 3: the same conversion the control plane calls without HTTP.
            try:
                await neutron.update_port_binding(self.nb, obj_id, data["binding:host_id"], if_revision)
            except ValidationError as exc:
                raise bad_request("binding:host_id", exc.message) from None
            return
        if "binding:host_id" in data:
            _check("binding:host_id", lambda f, v: neutron.host_to_chassis(v), data["binding:host_id"])
        self._profile(data, None)  # malformed: refused before any read
        mac = data.get("mac_address")
        if mac is not None:
            mac = _check("mac_address", models.check_mac, mac)

        async def build() -> tuple[Callable, set[str]]:
            # Only what this update needs: the port, and for new addresses what its network holds
            # and the floating IPs on the port (not every table: a busy NB made that the cost).
            current = await self.nb.get("lport", obj_id)
            if current is None:
                raise not_found("lport", obj_id)
            ips, auto = list(current.ips), set()
            if "fixed_ips" in data:
                snap = await Snapshot.for_network(self.nb, current.lswitch)
                ips, auto = self._fixed_ips(snap, current.lswitch, data["fixed_ips"], current.ips)
                lost = set(current.ips) - set(ips)
                fips = await self.nb.get_many([r for r in await self.nb.referrers("lport", obj_id)
                                               if r[0] == "floatingip"])
                for fip in fips:
                    if fip.port == obj_id and fip.fixed_ip in lost:
                        raise conflict("IpAddressInUse", f"Fixed IP {fip.fixed_ip} of port {obj_id} has "
                                                         f"floating IP {fip.floating_ip} ({fip.id}): "
                                                         f"disassociate it first.")

            def change(port: LogicalPort) -> LogicalPort:
                self._revision_check(if_revision, port)
                if port.ips != current.ips:  # changed since the snapshot: choose again
                    raise _Stale()
                if mac is not None and mac != port.mac and port.binding_chassis is not None:
                    raise conflict("PortBound", f"Unable to change the MAC address of port {obj_id}: it is "
                                                f"bound to {port.binding_chassis}.")
                old = port
                if "binding:host_id" in data:
                    port = neutron.bind(port, data["binding:host_id"]) or port
                return _changed(old, port.replace(
                    mac=mac or port.mac, ips=ips, name=data.get("name", port.name),
                    device_owner=data.get("device_owner", port.device_owner),
                    device_id=data.get("device_id", port.device_id),
                    enabled=data.get("admin_state_up", port.enabled),
                    **secgroups.port_update_fields(data, port, mac or port.mac),
                    activation_strategy=data.get("dfflow:activation_strategy", port.activation_strategy),
                    vnic_type=data.get("binding:vnic_type", port.vnic_type),
                    binding_profile=self._profile(data, port)))

            return change, auto

        await self._modify_with_retry("lport", obj_id, build)

    # -- routers -----------------------------------------------------------------------------------
    def _gateway(self, snap: Snapshot, info: dict[str, Any], current: ExternalGateway | None
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
        ip, subnet_id = entry.get("ip_address"), entry.get("subnet_id")
        subnets = [s for s in snap.subnets_of(network) if s.network.version == 4]
        if subnet_id is not None:
            subnets = [s for s in subnets if s.id == subnet_id]
            if not subnets:
                raise bad_request("external_gateway_info", f"subnet {subnet_id} is no IPv4 subnet of "
                                                           f"network {network}")
        if ip is not None:
            ip = _check("external_gateway_info", models.check_ip, ip, None, 4)
            home = next((s for s in subnets if ipaddress.ip_address(ip) in s.network), None)
            if home is None:
                raise ApiError(400, "InvalidIpForNetwork", f"Invalid input for external_gateway_info. Reason: "
                                                           f"{ip} is not in an IPv4 subnet of network {network}.")
            _check_host_address("external_gateway_info", home, ip)
        else:
            ip = next((found for found in (alloc.free_ip(s, used) for s in subnets) if found), None)
            if ip is None:
                raise conflict("IpAddressGenerationFailure", f"No more IP addresses available on external "
                                                             f"network {network}.")
            auto.add("external_gateway.ip")
        return ExternalGateway(lswitch=network, ip=ip, mac=mac), auto

    async def _create_router(self, data: dict[str, Any], topic: str) -> str:
        if data.get("admin_state_up") is False:
            raise bad_request("admin_state_up", "a dfflow router is always up")

        async def build() -> tuple[models.Model, set[str]]:
            gateway, auto = None, set()
            if data.get("external_gateway_info"):
                snap = await Snapshot.load(self.nb)
                gateway, auto = self._gateway(snap, data["external_gateway_info"], None)
            return LogicalRouter(id=_new_id(), topic=topic, name=data.get("name", ""),
                                 external_gateway=gateway), auto

        return await self._create_with_retry(build)

    async def _update_router(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        if data.get("admin_state_up") is False:
            raise bad_request("admin_state_up", "a dfflow router is always up")

        async def build() -> tuple[Callable, set[str]]:
            snap = await Snapshot.load(self.nb)
            router = snap.routers.get(obj_id)
            if router is None:
                raise not_found("lrouter", obj_id)
            gateway, auto = router.external_gateway, set()
            if "external_gateway_info" in data:
                info = data["external_gateway_info"]
                gateway, auto = self._gateway(snap, info, router.external_gateway) if info else (None, set())
                need = sorted({f.lswitch for f in snap.fips.values() if f.router == obj_id})
                if any(gateway is None or gateway.lswitch != net for net in need):
                    raise conflict("RouterExternalGatewayInUseByFloatingIp",
                                   f"Gateway cannot be updated for router {obj_id}: floating IPs on network "
                                   f"{', '.join(need)} need it.")

            def change(current: LogicalRouter) -> LogicalRouter:
                self._revision_check(if_revision, current)
                if current.external_gateway != router.external_gateway:
                    raise _Stale()
                return _changed(current, current.replace(name=data.get("name", current.name),
                                                         external_gateway=gateway))

            return change, auto

        await self._modify_with_retry("lrouter", obj_id, build)

    def _interface_reply(self, router: LogicalRouter, subnet: Subnet) -> dict[str, Any]:
        return {"id": router.id, "tenant_id": router.topic, "project_id": router.topic,
                "subnet_id": subnet.id, "subnet_ids": [subnet.id], "network_id": subnet.lswitch,
                "port_id": virtual_port_id("router-interface", router.id, subnet.id)}

    def _interface_subnet(self, snap: Snapshot, router_id: str, body: dict[str, Any], adding: bool) -> Subnet:
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

    async def add_router_interface(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        _check_body(INTERFACE_IN, body)
        with nb_errors("lrouter"):
            async def build() -> tuple[Callable, set[str]]:
                snap = await Snapshot.load(self.nb)
                if router_id not in snap.routers:
                    raise not_found("lrouter", router_id)
                subnet = self._interface_subnet(snap, router_id, body, adding=True)
                if subnet.gateway_ip is None:
                    raise bad_request("subnet_id", f"subnet {subnet.id} has no gateway_ip for a router interface")
                mac = alloc.random_mac()
                auto: set[str] = set()

                def change(router: LogicalRouter) -> LogicalRouter:
                    for rport in router.ports:
                        if rport.subnet == subnet.id:
                            raise bad_request("subnet_id", f"router {router_id} already has a port on subnet "
                                                           f"{subnet.id}")
                        other = snap.subnets.get(rport.subnet)
                        if other is not None and other.network.version == subnet.network.version \
                                and other.network.overlaps(subnet.network):
                            raise bad_request("subnet_id", f"cidr {subnet.cidr} of subnet {subnet.id} overlaps "
                                                           f"cidr {other.cidr} of subnet {other.id}, already "
                                                           f"attached to router {router_id}")
                    auto.clear()
                    auto.add(f"ports[{len(router.ports)}].mac")  # the MAC this API chose
                    return router.replace(ports=[*router.ports, RouterPort(subnet=subnet.id, mac=mac,
                                                                           ip=subnet.gateway_ip)])

                return change, auto

            await self._modify_with_retry("lrouter", router_id, build)
            router = await self.nb.get_or_raise("lrouter", router_id)
            subnet_id = body.get("subnet_id")
            subnet = await self.nb.get_or_raise("subnet", subnet_id)
            return self._interface_reply(router, subnet)

    async def remove_router_interface(self, router_id: str, body: dict[str, Any]) -> dict[str, Any]:
        _check_body(INTERFACE_IN, body)
        with nb_errors("lrouter"):
            snap = await Snapshot.load(self.nb)
            if router_id not in snap.routers:
                raise not_found("lrouter", router_id)
            subnet = self._interface_subnet(snap, router_id, body, adding=False)
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

            router = await self.nb.modify("lrouter", router_id, change)
            return self._interface_reply(router, subnet)

    # -- floating IPs ------------------------------------------------------------------------------
    def _association(self, snap: Snapshot, network: str, port_id: str, fixed_ip: str | None
                     ) -> tuple[str, str]:
        """(fixed IP, router) for a floating IP on `network` mapped to `port_id`."""
        port = snap.ports.get(port_id)
        if port is None:
            if any(v["id"] == port_id for v in snap.virtual_ports()):
                raise bad_request("port_id", f"port {port_id} belongs to a router or floating IP")
            raise not_found("lport", port_id)
        v4 = list(alloc.addresses(port.ips, 4))
        if fixed_ip is not None:
            fixed_ip = _check("fixed_ip_address", models.check_ip, fixed_ip, None, 4)
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

    async def _create_floatingip(self, data: dict[str, Any], topic: str) -> str:
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
            subnets = [s for s in snap.subnets_of(network) if s.network.version == 4]
            if data.get("subnet_id") is not None:
                subnets = [s for s in subnets if s.id == data["subnet_id"]]
                if not subnets:
                    raise bad_request("subnet_id", f"subnet {data['subnet_id']} is no IPv4 subnet of "
                                                   f"network {network}")
            auto = {"mac"}
            ip = data.get("floating_ip_address")
            if ip is not None:
                ip = _check("floating_ip_address", models.check_ip, ip, None, 4)
                home = next((s for s in subnets if ipaddress.ip_address(ip) in s.network), None)
                if home is None:
                    raise ApiError(400, "InvalidIpForNetwork", f"Invalid input for floating_ip_address. Reason: "
                                                               f"{ip} is not in an IPv4 subnet of {network}.")
                _check_host_address("floating_ip_address", home, ip)
            else:
                used = snap.used_ips(network)
                ip = next((found for found in (alloc.free_ip(s, used) for s in subnets) if found), None)
                if ip is None:
                    raise conflict("IpAddressGenerationFailure", f"No more IP addresses available on "
                                                                 f"network {network}.")
                auto.add("floating_ip")
            fixed, router = None, None
            if data.get("port_id") is not None:
                fixed, router = self._association(snap, network, data["port_id"], data.get("fixed_ip_address"))
            return FloatingIP(id=_new_id(), topic=topic, floating_ip=ip, lswitch=network, mac=alloc.random_mac(),
                              port=data.get("port_id"), fixed_ip=fixed, router=router), auto

        return await self._create_with_retry(build)

    async def _update_floatingip(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        snap = await Snapshot.load(self.nb)
        fip = snap.fips.get(obj_id)
        if fip is None:
            raise not_found("floatingip", obj_id)
        port_id = data.get("port_id", fip.port)
        fixed_wanted = data.get("fixed_ip_address")
        if port_id is None:
            if fixed_wanted is not None:
                raise bad_request("fixed_ip_address", "set without a port_id")
            fixed, router = None, None
        elif port_id == fip.port and "fixed_ip_address" not in data:
            fixed, router = fip.fixed_ip, fip.router
        else:
            fixed, router = self._association(snap, fip.lswitch, port_id, fixed_wanted)

        def change(current: FloatingIP) -> FloatingIP:
            self._revision_check(if_revision, current)
            return _changed(current, current.replace(port=port_id, fixed_ip=fixed, router=router))

        async def build() -> tuple[Callable, set[str]]:
            return change, set()

        await self._modify_with_retry("floatingip", obj_id, build)
