"""Rules that relate an NB object to others, checked inside the write's transaction.

Each rule reads through a `Context` (which WATCHes what it reads, so the write
fails and retries if any of it changes before commit) and either raises an error
naming the field, or returns extra uniqueness claims the object makes.
"""
from __future__ import annotations

import ipaddress
from typing import Awaitable, Callable, Protocol

from dfflow.errors import Conflict, InUse, ValidationError
from dfflow.models import (FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, Model, SecurityGroup,
                           SecurityGroupRule, Subnet)

Claims = list[tuple[str, str]]


class Context(Protocol):
    async def get(self, table: str, obj_id: str) -> Model | None: ...

    async def get_many(self, pairs: list[tuple[str, str]]) -> list[Model | None]: ...

    async def referrers(self, table: str, obj_id: str, watch: bool = True,
                        of_table: str | None = None) -> list[tuple[str, str]]: ...


async def _subnets_of(ctx: Context, lswitch: str, watch_all: bool = True) -> list[Subnet]:
    """The switch's subnets (WATCHed, read in one round trip; its referrers filtered by Redis, not sent:
    a network's ports are most of them). `watch_all=False` leaves the set of the switch's referrers
    unwatched: a port needs its subnets unchanged, not the switch's other ports."""
    referrers = await ctx.referrers(LogicalSwitch.table, lswitch, watch=watch_all, of_table=Subnet.table)
    found = await ctx.get_many(referrers)
    return [subnet for subnet in found if subnet is not None]


def _subnet_containing(subnets: list[Subnet], ip: str) -> Subnet | None:
    addr = ipaddress.ip_address(ip)
    for subnet in subnets:
        if addr.version == subnet.network.version and addr in subnet.network:
            return subnet
    return None


async def check_subnet(subnet: Subnet, ctx: Context) -> Claims:
    for other in await _subnets_of(ctx, subnet.lswitch):
        if other.id != subnet.id and other.network.version == subnet.network.version \
                and other.network.overlaps(subnet.network):
            raise Conflict(f"{subnet.cidr} overlaps subnet {other.id!r} ({other.cidr}) on "
                           f"switch {subnet.lswitch!r}", field="cidr")
    return []


async def check_port(port: LogicalPort, ctx: Context) -> Claims:
    # A subnet deleted meanwhile changes its WATCHed object; one created meanwhile could only have
    # made an address valid that this check refuses, which is still a serialisable answer.
    subnets = await _subnets_of(ctx, port.lswitch, watch_all=False)
    for i, ip in enumerate(port.ips):
        if _subnet_containing(subnets, ip) is None:
            cidrs = ", ".join(s.cidr for s in subnets) or "none"
            raise ValidationError(f"ips[{i}]", f"{ip} is in no subnet of switch {port.lswitch!r} "
                                               f"(subnets: {cidrs})", port.table)
    return []


async def check_router(router: LogicalRouter, ctx: Context) -> Claims:
    claims: Claims = []
    for i, rport in enumerate(router.ports):
        subnet = await ctx.get(Subnet.table, rport.subnet)
        assert subnet is not None  # references are checked before rules
        if subnet.gateway_ip is None:
            raise ValidationError(f"ports[{i}].subnet", f"subnet {subnet.id!r} has no gateway IP", router.table)
        if rport.ip != subnet.gateway_ip:
            raise ValidationError(f"ports[{i}].ip", f"must be subnet {subnet.id!r}'s gateway "
                                                    f"{subnet.gateway_ip}, got {rport.ip}", router.table)
        claims += [(f"ports[{i}].ip", f"ip:{subnet.lswitch}:{rport.ip}"),
                   (f"ports[{i}].mac", f"mac:{subnet.lswitch}:{rport.mac.lower()}")]
    gw = router.external_gateway
    if gw is not None:
        ext = await ctx.get(LogicalSwitch.table, gw.lswitch)
        if not ext.router_external:
            raise ValidationError("external_gateway.lswitch",
                                  f"switch {gw.lswitch!r} is not an external network", router.table)
        if _subnet_containing(await _subnets_of(ctx, gw.lswitch), gw.ip) is None:
            raise ValidationError("external_gateway.ip", f"{gw.ip} is in no subnet of {gw.lswitch!r}",
                                  router.table)
    return claims


async def check_floatingip(fip: FloatingIP, ctx: Context) -> Claims:
    ext = await ctx.get(LogicalSwitch.table, fip.lswitch)
    if not ext.router_external:
        raise ValidationError("lswitch", f"switch {fip.lswitch!r} is not an external network", fip.table)
    if _subnet_containing(await _subnets_of(ctx, fip.lswitch), fip.floating_ip) is None:
        raise ValidationError("floating_ip", f"{fip.floating_ip} is in no subnet of {fip.lswitch!r}",
                              fip.table)
    if fip.port is None:
        return []
    port = await ctx.get(LogicalPort.table, fip.port)
    if fip.fixed_ip not in port.ips:
        raise ValidationError("fixed_ip", f"{fip.fixed_ip} is not an address of port {port.id!r} "
                                          f"({', '.join(port.ips) or 'none'})", fip.table)
    router = await ctx.get(LogicalRouter.table, fip.router)
    if router.external_gateway is None or router.external_gateway.lswitch != fip.lswitch:
        raise ValidationError("router", f"router {router.id!r} has no gateway on {fip.lswitch!r}", fip.table)
    internal = _subnet_containing(await _subnets_of(ctx, port.lswitch), fip.fixed_ip)
    if internal is None or internal.id not in {p.subnet for p in router.ports}:
        raise ValidationError("port", f"port {port.id!r}'s subnet is not attached to router "
                                      f"{router.id!r}", fip.table)
    return []


async def check_secgroup_rule(rule: SecurityGroupRule, ctx: Context) -> Claims:
    group = await ctx.get(SecurityGroup.table, rule.secgroup)
    if group.topic != rule.topic:
        raise ValidationError("topic", f"must be the topic of its group {group.id!r} ({group.topic!r})", rule.table)
    return []


async def check_subnet_delete(subnet: Subnet, ctx: Context) -> None:
    users = []
    for table, obj_id in await ctx.referrers(LogicalSwitch.table, subnet.lswitch):
        if table == LogicalPort.table:
            port = await ctx.get(table, obj_id)
            if port is not None and any(
                    ipaddress.ip_address(ip) in subnet.network for ip in port.ips
                    if ipaddress.ip_address(ip).version == subnet.network.version):
                users.append(f"{table}:{obj_id}")
    if users:
        raise InUse(subnet.table, subnet.id, users)


WRITE_RULES: dict[str, Callable[[Model, Context], Awaitable[Claims]]] = {
    Subnet.table: check_subnet,
    LogicalPort.table: check_port,
    LogicalRouter.table: check_router,
    FloatingIP.table: check_floatingip,
    SecurityGroupRule.table: check_secgroup_rule,
}
DELETE_RULES: dict[str, Callable[[Model, Context], Awaitable[None]]] = {
    Subnet.table: check_subnet_delete,
}
# The referrers (table, id, of that table) a rule reads unwatched, by the table of the object written: read
# ahead, in the write's first round trip, they cost it none of their own.
REFERRERS_READ_AHEAD: dict[str, Callable[[Model], list[tuple[str, str, str]]]] = {
    LogicalPort.table: lambda port: [(LogicalSwitch.table, port.lswitch, Subnet.table)],
}
# Fields an update may not change (Neutron refuses these too).
IMMUTABLE = {
    Subnet.table: ("lswitch", "cidr"),
    LogicalPort.table: ("lswitch",),
    FloatingIP.table: ("lswitch", "floating_ip"),
    SecurityGroup.table: ("is_default",),
    # A rule is what it matches: only its description may change.
    SecurityGroupRule.table: ("secgroup", "direction", "ethertype", "protocol", "port_range_min",
                              "port_range_max", "remote_ip_prefix", "remote_group"),
}
