"""Ports: their bindings (active and inactive), allowed address pairs, and what the chassis report
of their VIFs (`PortStatus`)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Collection

from dfflow.errors import ValidationError
from dfflow.models.base import Model, Record
from dfflow.models.fields import (check_address_or_cidr, check_bool, check_choice, check_id, check_int, check_ip,
                                  check_mac, check_number, check_optional_id, check_profile, check_str)
from dfflow.models.migration import ACTIVATION_STRATEGIES, MigrationRecord
from dfflow.models.network import LogicalSwitch
from dfflow.models.secgroup import SecurityGroup

VNIC_TYPES = ("normal",)  # the vnic types a dfflow chassis binds (OVS ports); Neutron has more

MAX_ADDRESS_PAIRS = 10  # Neutron's default max_allowed_address_pair


@dataclass(frozen=True)
class InactiveBinding(Record):
    """A port binding Neutron holds INACTIVE for another host (the `binding-extended` extension):
    Nova creates one for a live migration's destination and activates it at the end."""

    host: str
    vnic_type: str = "normal"
    profile: dict[str, Any] = field(default_factory=dict)

    def check(self, where: str, table: str) -> None:
        check_id(f"{where}.host", self.host, table)
        check_choice(f"{where}.vnic_type", self.vnic_type, VNIC_TYPES, table)
        check_profile(f"{where}.profile", self.profile, table)


@dataclass(frozen=True)
class AddressPair(Record):
    """An allowed address pair: the port may also send from `ip_address` (an address or a CIDR) with
    `mac_address` (the port's own MAC when Neutron was given none)."""

    ip_address: str
    mac_address: str


def check_address_pairs(pairs: Any, table: str, field_name: str = "allowed_address_pairs") -> None:
    if not isinstance(pairs, list):
        raise ValidationError(field_name, "must be a list", table)
    if len(pairs) > MAX_ADDRESS_PAIRS:
        raise ValidationError(field_name, f"at most {MAX_ADDRESS_PAIRS} pairs allowed, got {len(pairs)}", table)
    seen: set[tuple[str, str]] = set()
    for i, pair in enumerate(pairs):
        where = f"{field_name}[{i}]"
        check_mac(f"{where}.mac_address", pair.mac_address, table)
        check_address_or_cidr(f"{where}.ip_address", pair.ip_address, table)
        key = (pair.ip_address, pair.mac_address.lower())
        if key in seen:
            raise ValidationError(where, f"duplicate pair ip_address {pair.ip_address} mac_address "
                                         f"{pair.mac_address}", table)
        seen.add(key)


@dataclass
class LogicalPort(Model):
    """A Neutron port. `binding_chassis` is Neutron's binding:host_id: the host of its ACTIVE binding,
    whose vnic type and profile are `vnic_type` and `binding_profile`; `inactive_bindings` are the
    others (at most one per host). `binding_profile["migrating_to"]` is Nova's legacy announcement
    of a live migration's destination."""

    table: ClassVar[str] = "lport"
    records = {"migration": (MigrationRecord, False), "inactive_bindings": (InactiveBinding, True),
               "allowed_address_pairs": (AddressPair, True)}
    checks_by_field = True
    text_fields = frozenset({"id", "topic", "lswitch", "mac", "ips", "binding_chassis", "activation_strategy",
                             "device_owner", "device_id", "name", "vnic_type", "security_groups"})
    lswitch: str = ""
    mac: str = ""
    ips: list[str] = field(default_factory=list)
    binding_chassis: str | None = None
    migration: MigrationRecord | None = None
    activation_strategy: str | None = None  # per-port override of the deployment's strategy
    device_owner: str = ""
    device_id: str = ""
    name: str = ""
    enabled: bool = True
    port_security: bool = True  # Neutron's port_security_enabled
    vnic_type: str = "normal"
    binding_profile: dict[str, Any] = field(default_factory=dict)
    inactive_bindings: list[InactiveBinding] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)  # secgroup ids
    allowed_address_pairs: list[AddressPair] = field(default_factory=list)

    @property
    def migrating_to(self) -> str | None:
        dest = self.binding_profile.get("migrating_to")
        return dest if isinstance(dest, str) and dest else None

    def inactive_binding(self, host: str) -> InactiveBinding | None:
        return next((b for b in self.inactive_bindings if b.host == host), None)

    def check(self) -> None:
        self.check_changed(_PORT_FIELDS)

    def check_changed(self, changed: Collection[str]) -> None:
        """Check the fields in `changed` (the others hold values already checked), in the order of the
        model's fields, then the rules across fields."""
        for name in changed:
            _PORT_CHECKS[name](self)
        if self.binding_chassis is not None:
            for i, binding in enumerate(self.inactive_bindings):
                if binding.host == self.binding_chassis:
                    raise ValidationError(f"inactive_bindings[{i}].host", f"{binding.host!r} holds the port's "
                                                                          "active binding", self.table)
        if not self.port_security and self.security_groups:
            raise ValidationError("security_groups", "need port_security: a port without port security "
                                                     "has no security groups", self.table)
        if not self.port_security and self.allowed_address_pairs:
            raise ValidationError("allowed_address_pairs", "need port_security", self.table)

    def _check_mac(self) -> None:
        self.mac = check_mac("mac", self.mac, self.table)

    def _check_ips(self) -> None:
        if not isinstance(self.ips, list):
            raise ValidationError("ips", "must be a list of IP addresses", self.table)
        self.ips = [check_ip(f"ips[{i}]", ip, self.table) for i, ip in enumerate(self.ips)]
        if len(set(self.ips)) != len(self.ips):
            raise ValidationError("ips", "lists an address twice", self.table)

    def _check_migration(self) -> None:
        if self.migration is not None:
            self.migration.check(self.table)

    def _check_activation_strategy(self) -> None:
        if self.activation_strategy is not None:
            check_choice("activation_strategy", self.activation_strategy, ACTIVATION_STRATEGIES, self.table)

    def _check_inactive_bindings(self) -> None:
        if not isinstance(self.inactive_bindings, list):
            raise ValidationError("inactive_bindings", "must be a list", self.table)
        hosts: set[str] = set()
        for i, binding in enumerate(self.inactive_bindings):
            binding.check(f"inactive_bindings[{i}]", self.table)
            if binding.host in hosts:
                raise ValidationError(f"inactive_bindings[{i}].host", f"a second binding for host "
                                                                      f"{binding.host!r}", self.table)
            hosts.add(binding.host)

    def _check_security_groups(self) -> None:
        if not isinstance(self.security_groups, list):
            raise ValidationError("security_groups", "must be a list of security group ids", self.table)
        for i, group in enumerate(self.security_groups):
            check_id(f"security_groups[{i}]", group, self.table)
        if len(set(self.security_groups)) != len(self.security_groups):
            raise ValidationError("security_groups", "lists a group twice", self.table)

    def references(self) -> list[tuple[str, str, str]]:
        return [("lswitch", LogicalSwitch.table, self.lswitch)] + [
            (f"security_groups[{i}]", SecurityGroup.table, g) for i, g in enumerate(self.security_groups)]

    def unique_keys(self) -> list[tuple[str, str]]:
        keys = [("mac", f"mac:{self.lswitch}:{self.mac}")]
        keys += [(f"ips[{i}]", f"ip:{self.lswitch}:{ip}") for i, ip in enumerate(self.ips)]
        return keys


# Each field's own check, in the order of the fields; the rules across fields are in `check_changed`.
_PORT_CHECKS: dict[str, Callable[[LogicalPort], None]] = {
    "id": lambda p: check_id("id", p.id, p.table),
    "topic": lambda p: check_id("topic", p.topic, p.table),
    "version": lambda p: check_int("version", p.version, 0, 2**63 - 1, p.table),
    "lswitch": lambda p: check_id("lswitch", p.lswitch, p.table),
    "mac": LogicalPort._check_mac,
    "ips": LogicalPort._check_ips,
    "binding_chassis": lambda p: check_optional_id("binding_chassis", p.binding_chassis, p.table),
    "migration": LogicalPort._check_migration,
    "activation_strategy": LogicalPort._check_activation_strategy,
    "device_owner": lambda p: check_str("device_owner", p.device_owner, table=p.table),
    "device_id": lambda p: check_str("device_id", p.device_id, table=p.table),
    "name": lambda p: check_str("name", p.name, table=p.table),
    "enabled": lambda p: check_bool("enabled", p.enabled, p.table),
    "port_security": lambda p: check_bool("port_security", p.port_security, p.table),
    "vnic_type": lambda p: check_choice("vnic_type", p.vnic_type, VNIC_TYPES, p.table),
    "binding_profile": lambda p: check_profile("binding_profile", p.binding_profile, p.table),
    "inactive_bindings": LogicalPort._check_inactive_bindings,
    "security_groups": LogicalPort._check_security_groups,
    "allowed_address_pairs": lambda p: check_address_pairs(p.allowed_address_pairs, p.table),
}
_PORT_FIELDS = tuple(_PORT_CHECKS)
assert _PORT_FIELDS == tuple(f.name for f in fields(LogicalPort)), "a port field without its check"


@dataclass
class PortStatus(Model):
    """Where a port's VIF is plugged and up, as the chassis report it (Neutron's port status comes
    from it). `id` is the port's id, `topic` its topic; `up` maps each chassis that has the VIF
    online to when it came up there. Kept apart from the port so that a report never races a
    migration's compare-and-set on the port, and publishes nothing the flows depend on."""

    table: ClassVar[str] = "lport_status"
    up: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        super().check()
        if not isinstance(self.up, dict):
            raise ValidationError("up", "must be an object of chassis -> time", self.table)
        for chassis, since in self.up.items():
            check_id("up", chassis, self.table)
            check_number(f"up.{chassis}", since, self.table)
