"""Security groups and their rules, with the values Neutron accepts and the errors it names."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar

from dfflow.errors import ValidationError
from dfflow.models.base import Model
from dfflow.models.fields import check_bool, check_id, check_optional_id, check_str

SG_DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")
# IP protocol names Neutron's security-group rules accept, with their IANA numbers.
IP_PROTOCOLS = {"ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2,
                "ip": 0, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58,
                "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46,
                "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112}
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # the protocols whose rules take a port range
ANY_PROTOCOL = "any"  # Neutron's word for no protocol
EVERY_PORT = (1, 65535)  # a port range Neutron stores as none
IPV6_ICMP_ALIASES = {"icmp": "ipv6-icmp", "icmpv6": "ipv6-icmp", "1": "58"}  # for IPv6, as Neutron stores them
ICMP_PROTOCOLS = frozenset({1, 58})  # whose rules' port range is an ICMP type and code


@dataclass
class SecurityGroup(Model):
    """A Neutron security group; its rules are `secgroup_rule` objects that name it. `is_default`
    marks the project's `default` group, one per project (a unique claim)."""

    table: ClassVar[str] = "secgroup"
    name: str = ""
    description: str = ""
    is_default: bool = False

    def check(self) -> None:
        super().check()
        check_str("name", self.name, table=self.table)
        check_str("description", self.description, table=self.table)
        check_bool("is_default", self.is_default, self.table)

    def unique_keys(self) -> list[tuple[str, str]]:
        return [("is_default", f"default-secgroup:{self.topic}")] if self.is_default else []


class RuleError(ValidationError):
    """A malformed security-group rule; `kind` is the name Neutron gives the error."""

    def __init__(self, field: str, message: str, kind: str):
        super().__init__(field, message, "secgroup_rule")
        self.kind = kind


def protocol_number(protocol: str | None) -> int | None:
    """A rule's protocol (a name Neutron knows, or a number 0-255 as a string) -> its number."""
    if protocol is None:
        return None
    if protocol in IP_PROTOCOLS:
        return IP_PROTOCOLS[protocol]
    return int(protocol)


def normalize_protocol(value: Any) -> str | None:
    """Neutron's protocol value: None (or "any"), a known name (any case, given back lower-case) or a
    number 0-255 (int or string, given back as a string)."""
    if value is None or value == ANY_PROTOCOL:
        return None
    if isinstance(value, str) and value.lower() in IP_PROTOCOLS:
        return value.lower()
    if not isinstance(value, bool) and isinstance(value, (int, str)):
        try:
            number = int(value)
        except ValueError:
            number = -1
        if 0 <= number <= 255 and str(value).strip().isdigit():
            return str(number)
    raise RuleError("protocol", f"Security group rule protocol {value} not supported. Only protocol values "
                                f"{sorted(set(IP_PROTOCOLS))} and integer representations [0 to 255] are "
                                f"supported.", "SecurityGroupRuleInvalidProtocol")


@dataclass
class SecurityGroupRule(Model):
    """A rule of security group `secgroup`: traffic in `direction` matching it is allowed (stateful).
    For ICMP, `port_range_min`/`port_range_max` are the ICMP type and code. At most one of
    `remote_ip_prefix` (a CIDR) and `remote_group` (members of that group)."""

    table: ClassVar[str] = "secgroup_rule"
    secgroup: str = ""
    direction: str = "ingress"
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group: str | None = None
    description: str = ""

    def check(self) -> None:
        super().check()
        check_id("secgroup", self.secgroup, self.table)
        check_str("description", self.description, table=self.table)
        if self.direction not in SG_DIRECTIONS:
            raise RuleError("direction", f"{self.direction!r} is not one of ingress, egress",
                            "SecurityGroupRuleInvalidDirection")
        if self.ethertype not in ETHERTYPES:
            raise RuleError("ethertype", f"Security group rule for ethertype {self.ethertype!r} not supported. "
                                         f"Allowed values are IPv4, IPv6.", "SecurityGroupRuleInvalidEtherType")
        self.protocol = normalize_protocol(self.protocol)
        if self.ethertype == "IPv6" and self.protocol in IPV6_ICMP_ALIASES:
            self.protocol = IPV6_ICMP_ALIASES[self.protocol]
        if (self.port_range_min, self.port_range_max) == EVERY_PORT:
            self.port_range_min = self.port_range_max = None
        number = protocol_number(self.protocol)
        if number == 58 and self.ethertype == "IPv4":
            raise RuleError("protocol", f"Invalid ethertype IPv4 for protocol {self.protocol}.",
                            "SecurityGroupEthertypeConflictWithProtocol")
        self._check_port_range(number)
        check_optional_id("remote_group", self.remote_group, self.table)
        if self.remote_ip_prefix is not None:
            if self.remote_group is not None:
                raise RuleError("remote_ip_prefix", "Only remote_ip_prefix or remote_group_id may be provided.",
                                "SecurityGroupRemoteGroupAndRemoteIpPrefix")
            try:
                prefix = ipaddress.ip_interface(self.remote_ip_prefix) \
                    if isinstance(self.remote_ip_prefix, str) else None
            except ValueError:
                prefix = None
            if prefix is None:
                raise RuleError("remote_ip_prefix", f"Invalid CIDR {self.remote_ip_prefix} given as IP prefix.",
                                "InvalidCIDR")
            if f"IPv{prefix.version}" != self.ethertype:
                raise RuleError("remote_ip_prefix", f"Conflicting value ethertype {self.ethertype} for CIDR "
                                                    f"{self.remote_ip_prefix}", "SecurityGroupRuleParameterConflict")
            self.remote_ip_prefix = str(prefix)  # host bits kept, as Neutron keeps them (normalized_cidr drops them)

    def _check_port_range(self, number: int | None) -> None:
        low, high = self.port_range_min, self.port_range_max
        for name, value in (("port_range_min", low), ("port_range_max", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= 65535):
                raise RuleError(name, f"Invalid value for port {value}", "SecurityGroupInvalidPortValue")
        if low is None and high is None:
            return
        if number is None:
            raise RuleError("protocol", "Must also specify protocol if port range is given.",
                            "SecurityGroupProtocolRequiredWithPorts")
        if number in PORT_PROTOCOLS:
            if low == 0 or high == 0:
                raise RuleError("port_range_min" if low == 0 else "port_range_max", "Invalid value for port 0",
                                "SecurityGroupInvalidPortValue")
            if low is None or high is None or low > high:
                raise RuleError("port_range_min", "For TCP/UDP protocols, port_range_min must be <= "
                                                  "port_range_max", "SecurityGroupInvalidPortRange")
        elif number in ICMP_PROTOCOLS:
            for name, what, value in (("port_range_min", "type", low), ("port_range_max", "code", high)):
                if value is not None and not 0 <= value <= 255:
                    raise RuleError(name, f"Invalid value for ICMP {what} ({name.replace('_', '-')}): {value}. "
                                          f"It must be 0 to 255.", "SecurityGroupInvalidIcmpValue")
            if low is None:
                raise RuleError("port_range_max", f"ICMP code (port-range-max) {high} is provided but ICMP type "
                                                  f"(port-range-min) is missing.", "SecurityGroupMissingIcmpType")
        else:
            raise RuleError("protocol", f"Invalid protocol {self.protocol} for port range, only supported for "
                                        f"TCP, UDP, UDPLITE, SCTP and DCCP.", "SecurityGroupInvalidProtocolForPort")

    def deleted_with(self) -> list[tuple[str, str]]:
        """Its group, and as in Neutron (a foreign-key cascade) its remote group: deleting a group
        deletes the rules of other groups that name it."""
        found = [(SecurityGroup.table, self.secgroup)]
        if self.remote_group is not None:
            found.append((SecurityGroup.table, self.remote_group))
        return found

    def references(self) -> list[tuple[str, str, str]]:
        refs = [("secgroup", SecurityGroup.table, self.secgroup)]
        if self.remote_group is not None:
            refs.append(("remote_group", SecurityGroup.table, self.remote_group))
        return refs

    def match_key(self) -> str:
        """What the rule matches, as Neutron compares rules: two rules of a group with the same key are
        duplicates (a protocol's name and number, `icmp` and `ipv6-icmp` for IPv6, 0.0.0.0/0 and no
        prefix are the same; prefixes are compared as written, host bits included: 10.1.2.3/16 and
        10.1.0.0/16 are two rules to Neutron)."""
        number = protocol_number(self.protocol)
        if self.ethertype == "IPv6" and number == 1:
            number = 58
        prefix = str(ipaddress.ip_interface(self.remote_ip_prefix)) if self.remote_ip_prefix else None
        if prefix in ("0.0.0.0/0", "::/0"):
            prefix = None
        return "|".join(str(v) for v in (self.direction, self.ethertype, number, self.port_range_min,
                                         self.port_range_max, prefix, self.remote_group))

    def unique_keys(self) -> list[tuple[str, str]]:
        return [("rule", f"sgrule:{self.secgroup}:{self.match_key()}")]
