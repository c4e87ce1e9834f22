"""What every Neutron resource of the API shares: its interface, NB refusals as Neutron's errors, and
writes that choose values (an address, a MAC, a VNI) and choose again when another request took them.

A resource (`networks.py`, `subnets.py`, `ports.py`, `routers.py`, `floatingips.py`) takes the body's
parsed inner object and the project, writes one NB create, compare-and-set update (`modify`) or
delete, and shows what the NB holds as Neutron's dict. It keeps no state of its own.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
import uuid
from typing import Any, Awaitable, Callable, ClassVar, Iterator

from dfflow import models
from dfflow.api import alloc
from dfflow.api.attributes import check_value
from dfflow.api.errors import ApiError, bad_request, conflict, not_found, translate
from dfflow.api.views import Snapshot
from dfflow.errors import Conflict, InUse, ValidationError, VersionConflict, refused_as
from dfflow.models import Subnet

ALLOC_RETRIES = 8  # a router that keeps changing while it is deleted: give up after so many reads
# A lost race for a value the API chose (an address, a MAC, a VNI) re-reads and chooses again, with a
# jittered back-off, until this deadline: a client never sees a conflict the server can resolve.
ALLOC_DEADLINE = 30.0  # s
ALLOC_BACKOFF = (0.002, 0.2)  # s: first and largest back-off between attempts

# What a build function returns: the object (or the change) to write, and the fields whose values the
# API chose (a conflict on one of them is a lost race: choose again).
Build = Callable[[], Awaitable[tuple[Any, set[str]]]]


def nb_errors(table: str, obj: Any = None) -> contextlib.AbstractContextManager[None]:
    """NB refusals raised inside become the Neutron error for `table`."""
    return refused_as(lambda exc: translate(exc, table, obj))


def new_id() -> str:
    return str(uuid.uuid4())


def check_field(field: str, check: Callable[..., Any], value: Any, *args: Any) -> Any:
    """`check(field, value, *args)` (a model's field checker), its refusal a 400 naming `field`."""
    try:
        return check(field, value, *args)
    except ValidationError as exc:
        raise bad_request(field, exc.message) from None


def check_body(schema: dict[str, Any], body: Any) -> None:
    """A bare (unwrapped) body such as add_router_interface's `{"subnet_id": ...}`."""
    if not isinstance(body, dict):
        raise bad_request("body", "the request body must be a JSON object")
    check_value("", schema, body)


def check_host_address(field: str, subnet: Subnet, ip: str) -> None:
    """Refuse the addresses of a subnet no port may take: network, broadcast, gateway."""
    lo, hi = alloc.usable_range(subnet)
    if not lo <= int(ipaddress.ip_address(ip)) <= hi:
        raise ApiError(400, "InvalidIpForSubnet", f"Invalid input for {field}. Reason: {ip} is the network "
                                                  f"or broadcast address of subnet {subnet.id} ({subnet.cidr}).")
    if ip == subnet.gateway_ip:
        raise conflict("IpAddressAlreadyAllocated", f"IP address {ip} is the gateway IP of subnet "
                                                    f"{subnet.id}; it is reserved for its router.")


def external_ipv4(snap: Snapshot, network: str, subnet_id: str | None, ip: str | None, used: set[str],
                  fields: tuple[str, str], network_words: tuple[str, str]) -> tuple[str, bool]:
    """An IPv4 address on external `network` (a router's gateway, a floating IP): `ip` checked, or a
    free one of `subnet_id` (any IPv4 subnet if None) chosen. Returns (address, chosen here).

    `fields` names the address and the subnet in errors; `network_words` how the errors name the
    network: (for an address outside it, when it is full)."""
    ip_field, subnet_field = fields
    subnets = [s for s in snap.subnets_of(network) if s.network.version == 4]
    if subnet_id is not None:
        subnets = [s for s in subnets if s.id == subnet_id]
        if not subnets:
            raise bad_request(subnet_field, f"subnet {subnet_id} is no IPv4 subnet of network {network}")
    if ip is not None:
        ip = check_field(ip_field, models.check_ip, ip, None, 4)
        home = next((s for s in subnets if ipaddress.ip_address(ip) in s.network), None)
        if home is None:
            raise ApiError(400, "InvalidIpForNetwork", f"Invalid input for {ip_field}. Reason: {ip} is not in "
                                                       f"an IPv4 subnet of {network_words[0]}{network}.")
        check_host_address(ip_field, home, ip)
        return ip, False
    found = next((found for found in (alloc.free_ip(s, used) for s in subnets) if found), None)
    if found is None:
        raise conflict("IpAddressGenerationFailure", f"No more IP addresses available on "
                                                     f"{network_words[1]}{network}.")
    return found, True


def changed(old: models.Model, new: models.Model) -> models.Model | None:
    """`new`, or None (write nothing, keep the revision) when the update changes nothing."""
    return None if new == old else new


def revision_check(if_revision: int | None, obj: models.Model) -> None:
    """Neutron's `If-Match: revision_number=N`: refuse the update unless `obj` is at that revision."""
    if if_revision is not None and obj.version != if_revision:
        raise VersionConflict(obj.table, obj.id, if_revision, obj.version)


class Stale(Exception):
    """The object changed since the snapshot a change was computed from: compute it again."""


def _auto_conflict(exc: Exception, auto: set[str]) -> bool:
    return (isinstance(exc, Conflict) and not isinstance(exc, (InUse, VersionConflict))
            and exc.field in auto)


def allocation_retries() -> Iterator[Callable[[], Awaitable[bool]]]:
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


async def create_with_retry(nb: Any, build: Build) -> str:
    """Create what `build` makes; if a value it chose was taken meanwhile, build again."""
    for retry in allocation_retries():
        obj, auto = await build()
        try:
            return (await nb.create(obj)).id
        except Conflict as exc:
            if _auto_conflict(exc, auto) and await retry():
                continue
            raise translate(exc, obj.table, obj) from None
    raise AssertionError("unreachable")


async def modify_with_retry(nb: Any, table: str, obj_id: str, build: Build) -> None:
    """Apply the change `build` makes (compare-and-set); if a value it chose was taken meanwhile, or
    the change raised `Stale`, build again."""
    for retry in allocation_retries():
        change, auto = await build()
        wanted: list[models.Model] = []

        def recorded(current: models.Model) -> models.Model | None:
            result = change(current)
            wanted[:] = [result] if result is not None else []
            return result

        try:
            await nb.modify(table, obj_id, recorded)
            return
        except Stale:
            if await retry():
                continue
            raise conflict("Conflict", f"{table} {obj_id} kept changing; try again") from None
        except VersionConflict:
            raise
        except Conflict as exc:
            if _auto_conflict(exc, auto) and await retry():
                continue
            raise translate(exc, table, wanted[0] if wanted else None) from None


class Resource:
    """One Neutron resource over one NB table. Its `create` returns the new id, `update` writes in
    place; `NeutronService` shows the result with `view`."""

    table: ClassVar[str]

    def __init__(self, nb: Any):
        self.nb = nb

    async def views(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def view(self, obj_id: str) -> dict[str, Any]:
        obj = await self.nb.get(self.table, obj_id)
        if obj is None:
            raise not_found(self.table, obj_id)
        return await self.shown(obj)

    async def shown(self, obj: Any) -> dict[str, Any]:
        """Neutron's dict of `obj`, an object of this table."""
        raise NotImplementedError

    async def create(self, data: dict[str, Any], topic: str, obj_id: str | None = None) -> str:
        """Create from the parsed body in project `topic`; `obj_id` names the new object (a new UUID
        if None). Returns its id."""
        raise NotImplementedError

    async def update(self, obj_id: str, data: dict[str, Any], if_revision: int | None) -> None:
        raise NotImplementedError

    async def delete(self, obj_id: str) -> None:
        with nb_errors(self.table):
            await self.nb.delete(self.table, obj_id)
