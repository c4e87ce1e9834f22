"""Neutron's security groups and their rules over the NB, and what they mean for a port. No HTTP.

`SecurityGroupService(nb)` serves `security-groups` and `security-group-rules` with the same interface as
`NeutronService` (list, show, create, update, delete), so the HTTP shell routes to it alike. Every write
is one NB transaction: a group is created with its rules, and deleted with them; a rule names its group.

Each project has one `default` group, made on first need (its first network or port, or its first list
of security groups) with Neutron's default rules: ingress from members of the group itself and egress
anywhere, for IPv4 and for IPv6. Every other new group starts with the two egress rules. The default
group is a unique claim of its project in the NB, so concurrent first requests make exactly one.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from dfflow import models
from dfflow.api.attributes import RESOURCES, parse_body, request_project
from dfflow.api.errors import ApiError, bad_request, conflict, not_found
from dfflow.api.query import Page, parse_query, run
from dfflow.api.resource import nb_errors, new_id
from dfflow.errors import Conflict, ValidationError
from dfflow.models import AddressPair, LogicalPort, SecurityGroup, SecurityGroupRule

PLURALS = {"security_groups": "secgroup", "security_group_rules": "secgroup_rule"}
DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "Default security group"
MAX_DEFAULT_TRIES = 8


# -- views ---------------------------------------------------------------------------------------------

def rule_view(rule: SecurityGroupRule, default_groups: set[str]) -> dict[str, Any]:
    normalized = None
    if rule.remote_ip_prefix is not None:
        normalized = str(ipaddress.ip_interface(rule.remote_ip_prefix).network)
    return {"id": rule.id, "project_id": rule.topic, "tenant_id": rule.topic, "revision_number": rule.version,
            "security_group_id": rule.secgroup, "direction": rule.direction, "ethertype": rule.ethertype,
            "protocol": rule.protocol, "port_range_min": rule.port_range_min,
            "port_range_max": rule.port_range_max, "remote_ip_prefix": rule.remote_ip_prefix,
            "remote_group_id": rule.remote_group, "remote_address_group_id": None,
            "normalized_cidr": normalized, "description": rule.description,
            "belongs_to_default_sg": rule.secgroup in default_groups}


def group_view(group: SecurityGroup, rules: list[SecurityGroupRule]) -> dict[str, Any]:
    defaults = {group.id} if group.is_default else set()
    return {"id": group.id, "project_id": group.topic, "tenant_id": group.topic, "revision_number": group.version,
            "name": group.name, "description": group.description, "stateful": True, "shared": False,
            "security_group_rules": [rule_view(r, defaults) for r in sorted(rules, key=lambda r: r.id)]}


# -- the default group ---------------------------------------------------------------------------------

def new_group_rules(group: SecurityGroup) -> list[SecurityGroupRule]:
    """The rules Neutron gives a new group: egress anywhere; the default group also ingress from itself."""
    found = []
    for ethertype in models.ETHERTYPES:
        found.append(SecurityGroupRule(id=new_id(), topic=group.topic, secgroup=group.id, direction="egress",
                                       ethertype=ethertype))
        if group.is_default:
            found.append(SecurityGroupRule(id=new_id(), topic=group.topic, secgroup=group.id,
                                           direction="ingress", ethertype=ethertype, remote_group=group.id))
    return found


async def find_default(nb: Any, topic: str) -> SecurityGroup | None:
    groups = await nb.list(table=SecurityGroup.table, topic=topic)
    return next((g for g in groups if g.is_default), None)


async def ensure_default(nb: Any, topic: str) -> str:
    """The id of `topic`'s default group, created with its rules if it has none yet."""
    for _ in range(MAX_DEFAULT_TRIES):
        found = await find_default(nb, topic)
        if found is not None:
            return found.id
        group = SecurityGroup(id=new_id(), topic=topic, name=DEFAULT_NAME, description=DEFAULT_DESCRIPTION,
                              is_default=True)
        try:
            await nb.create_all([group, *new_group_rules(group)])
            return group.id
        except Conflict as exc:
            if exc.field != "is_default":  # not a concurrent creation of the same default group
                raise
    raise conflict("Conflict", f"the default security group of project {topic} kept changing; try again")


# -- a port's groups and address pairs -------------------------------------------------------------------

def _address_pairs(entries: list[dict[str, Any]] | None, mac: str) -> list[AddressPair]:
    pairs: list[AddressPair] = []
    for entry in entries or []:
        ip = entry["ip_address"]
        try:
            models.check_address_or_cidr("allowed_address_pairs", ip)
            pair_mac = models.check_mac("allowed_address_pairs", entry.get("mac_address") or mac)
        except ValidationError as exc:
            raise bad_request("allowed_address_pairs", exc.message) from None
        pair = AddressPair(ip_address=ip, mac_address=pair_mac)
        if pair in pairs:
            raise ApiError(400, "DuplicateAddressPairInRequest", f"Request contains duplicate address pair: "
                                                                 f"mac_address {pair_mac} ip_address {ip}.")
        pairs.append(pair)
    if len(pairs) > models.MAX_ADDRESS_PAIRS:
        raise ApiError(400, "AllowedAddressPairExhausted", f"The number of allowed address pair exceeds the "
                                                           f"maximum {models.MAX_ADDRESS_PAIRS}.")
    return pairs


def _groups(given: list[str] | None) -> list[str]:
    found: list[str] = []
    for group in given or []:
        if group not in found:  # Neutron treats the list as a set
            found.append(group)
    return found


async def port_create_fields(nb: Any, data: dict[str, Any], topic: str, mac: str) -> dict[str, Any]:
    """`security_groups` and `allowed_address_pairs` of a port to be created from request `data` (its
    MAC is `mac`): a port with port security and no groups given gets its project's default group
    (a network's own ports, device_owner network:*, get none)."""
    security = data.get("port_security_enabled", True)
    pairs = _address_pairs(data.get("allowed_address_pairs"), mac)
    if "security_groups" in data:
        groups = _groups(data["security_groups"])
    elif security and not data.get("device_owner", "").startswith("network:"):
        groups = [await ensure_default(nb, topic)]
    else:
        groups = []
    _check_port_security(security, groups, pairs, None)
    return {"security_groups": groups, "allowed_address_pairs": pairs}


def port_update_fields(data: dict[str, Any], port: LogicalPort, mac: str) -> dict[str, Any]:
    """The port's `port_security`, `security_groups` and `allowed_address_pairs` after update `data`."""
    security = data.get("port_security_enabled", port.port_security)
    groups = _groups(data["security_groups"]) if "security_groups" in data else port.security_groups
    pairs = (_address_pairs(data["allowed_address_pairs"], mac) if "allowed_address_pairs" in data
             else port.allowed_address_pairs)
    _check_port_security(security, groups, pairs, port)
    return {"port_security": security, "security_groups": groups, "allowed_address_pairs": pairs}


def _check_port_security(security: bool, groups: list[str], pairs: list[AddressPair],
                         port: LogicalPort | None) -> None:
    if security:
        return
    if groups:
        if port is not None and port.port_security and set(groups) == set(port.security_groups):
            raise conflict("PortSecurityPortHasSecurityGroup", "Port has security group associated. Cannot "
                                                               "disable port security or IP address until "
                                                               "security group is removed.")
        raise ApiError(400, "PortSecurityAndIPRequiredForSecurityGroups", "Port security must be enabled and "
                                                                          "port must have an IP address in "
                                                                          "order to use security groups.")
    if pairs:
        raise conflict("AddressPairAndPortSecurityRequired", "Port Security must be enabled in order to have "
                                                             "allowed address pairs on a port.")


# -- a rule's values as Neutron converts them ---------------------------------------------------------

def _ethertype(value: Any) -> Any:
    """`ipv4` is IPv4 (Neutron matches the names in any case); anything else is left for the rule's check."""
    if isinstance(value, str):
        return next((e for e in models.ETHERTYPES if e.lower() == value.lower()), value)
    return value


def _port(data: dict[str, Any], name: str) -> int | None:
    """A port value given as a number or a string of digits, as Neutron takes it."""
    value = data.get(name)
    if value is None or isinstance(value, int):
        return value
    if value.strip().isdigit():
        return int(value)
    raise ApiError(400, "SecurityGroupInvalidPortValue", f"Invalid value for port {value}")


# -- the resources -------------------------------------------------------------------------------------

class SecurityGroupService:
    def __init__(self, nb: Any, default_project: str = "admin"):
        self.nb = nb
        self.default_project = default_project

    async def _rules_by_group(self) -> dict[str, list[SecurityGroupRule]]:
        found: dict[str, list[SecurityGroupRule]] = {}
        for rule in await self.nb.list(table=SecurityGroupRule.table):
            found.setdefault(rule.secgroup, []).append(rule)
        return found

    async def _views(self, plural: str) -> list[dict[str, Any]]:
        groups = await self.nb.list(table=SecurityGroup.table)
        rules = await self._rules_by_group()
        if plural == "security_groups":
            return [group_view(g, rules.get(g.id, [])) for g in groups]
        defaults = {g.id for g in groups if g.is_default}
        return [rule_view(r, defaults) for group_rules in rules.values() for r in group_rules]

    async def _view(self, plural: str, obj_id: str) -> dict[str, Any]:
        table = PLURALS[plural]
        obj = await self.nb.get(table, obj_id)
        if obj is None:
            raise not_found(table, obj_id)
        if plural == "security_groups":
            rules = [r for r in await self.nb.list(table=SecurityGroupRule.table, topic=obj.topic)
                     if r.secgroup == obj_id]
            return group_view(obj, rules)
        group = await self.nb.get(SecurityGroup.table, obj.secgroup)
        return rule_view(obj, {group.id} if group is not None and group.is_default else set())

    async def list(self, plural: str, params: list[tuple[str, str]], project: str | None = None) -> Page:
        query = parse_query(RESOURCES[plural], params)
        if plural == "security_groups":  # as Neutron: the default group of the project asked for, or the caller's
            asked = next((value for key, value in params if key in ("project_id", "tenant_id")), None)
            with nb_errors(SecurityGroup.table):
                await ensure_default(self.nb, asked or project or self.default_project)
        return run(query, await self._views(plural))

    async def show(self, plural: str, obj_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        view = await self._view(plural, obj_id)
        return {k: view[k] for k in fields if k in view} if fields else view

    async def create(self, plural: str, data: dict[str, Any], project: str | None = None,
                     wrapped: bool = False) -> dict[str, Any]:
        resource = RESOURCES[plural]
        data = parse_body(resource, data if wrapped else {resource.singular: data}, "POST")
        topic = request_project(data, project or self.default_project)
        if plural == "security_groups":
            obj_id = await self._create_group(data, topic)
        else:
            obj_id = await self._create_rule(data, topic, "project_id" in data or "tenant_id" in data)
        return await self._view(plural, obj_id)

    async def update(self, plural: str, obj_id: str, data: dict[str, Any], wrapped: bool = False,
                     if_revision: int | None = None) -> dict[str, Any]:
        resource = RESOURCES[plural]
        data = parse_body(resource, data if wrapped else {resource.singular: data}, "PUT")
        table = PLURALS[plural]
        if plural == "security_groups":
            self._check_group_fields(data)

        def change(current: Any) -> Any:
            if if_revision is not None and current.version != if_revision:
                raise ApiError(412, "RevisionNumberConstraintFailed", f"Constrained to revision {if_revision} "
                                                                      f"but the current revision is "
                                                                      f"{current.version}.")
            values = {"description": data.get("description", current.description)}
            if table == SecurityGroup.table:
                if current.is_default and data.get("name", current.name) != current.name:
                    raise conflict("SecurityGroupCannotUpdateDefault", "Updating default security group not "
                                                                       "allowed.")
                values["name"] = data.get("name", current.name)
            wanted = current.replace(**values)
            return None if wanted == current else wanted

        with nb_errors(table):
            await self.nb.modify(table, obj_id, change)
        return await self._view(plural, obj_id)

    async def delete(self, plural: str, obj_id: str) -> None:
        with nb_errors(PLURALS[plural]):
            await self.nb.delete(PLURALS[plural], obj_id)

    # -- groups --------------------------------------------------------------------------------------
    @staticmethod
    def _check_group_fields(data: dict[str, Any]) -> None:
        if data.get("stateful") is False:
            raise bad_request("stateful", "stateless security groups are not supported")
        if isinstance(data.get("name"), str) and data["name"].lower() == DEFAULT_NAME:
            raise conflict("SecurityGroupDefaultAlreadyExists", "Default security group already exists.")

    async def _create_group(self, data: dict[str, Any], topic: str) -> str:
        self._check_group_fields(data)
        with nb_errors(SecurityGroup.table):
            await ensure_default(self.nb, topic)
        group = SecurityGroup(id=new_id(), topic=topic, name=data.get("name", ""),
                              description=data.get("description", ""))
        with nb_errors(SecurityGroup.table, group):
            await self.nb.create_all([group, *new_group_rules(group)])
        return group.id

    # -- rules ---------------------------------------------------------------------------------------
    async def _create_rule(self, data: dict[str, Any], topic: str, project_given: bool) -> str:
        group_id = data["security_group_id"]
        if data.get("remote_ip_prefix") is not None and data.get("remote_group_id") is not None:
            raise ApiError(400, "SecurityGroupRemoteGroupAndRemoteIpPrefix",
                           "Only remote_ip_prefix or remote_group_id may be provided.")
        group = await self.nb.get(SecurityGroup.table, group_id)
        if group is None:
            raise not_found(SecurityGroup.table, group_id)
        if project_given and topic != group.topic:
            raise bad_request("project_id", f"the rule's project {topic} is not its group's {group.topic}")
        rule = SecurityGroupRule(id=new_id(), topic=group.topic, secgroup=group_id,
                                 direction=data["direction"], ethertype=_ethertype(data.get("ethertype", "IPv4")),
                                 protocol=data.get("protocol"), port_range_min=_port(data, "port_range_min"),
                                 port_range_max=_port(data, "port_range_max"),
                                 remote_ip_prefix=data.get("remote_ip_prefix"),
                                 remote_group=data.get("remote_group_id"),
                                 description=data.get("description", ""))
        with nb_errors(SecurityGroupRule.table, rule):
            rule.check()
            return (await self.nb.create(rule)).id
