"""Northbound data model: what Neutron knows, as dfflow stores it.

Each object has an `id`, a `topic` (the tenant/project; chassis live on the
CHASSIS_TOPIC) and a `version`, the NB revision of its last write (set by the
store; compare-and-set updates quote it back). `check()` validates the object's
own fields; rules that need other objects (a fixed IP inside the switch's
subnets, duplicates on a switch, references) live in `dfflow.nb.rules`.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dfflow import core
from dfflow.errors import ValidationError

LOG = logging.getLogger(__name__)
CHASSIS_TOPIC = "chassis"
VNI_MIN, VNI_MAX = 1, 2**24 - 1
TUNNEL_TYPES = ("geneve", "vxlan")
CHASSIS_STATES = ("up", "down")
DATAPATH_TYPES = ("system", "netdev")  # Open vSwitch's Bridge.datapath_type: kernel, or userspace
VNIC_TYPES = ("normal",)  # the vnic types a dfflow chassis binds (OVS ports); Neutron has more
PROFILE_MAX_BYTES = 4096  # binding:profile, serialized
ACTIVATION_STRATEGIES = ("unplug", "announce")
# The life of a port-migration record (the blueprint's `port-migration` field);
# controller/migration.py owns the transitions between them.
MIGRATION_STATES = ("requested", "activated", "switched", "done", "aborted")

# Security groups, with the values Neutron accepts.
SG_DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")
# IP protocol names Neutron's security-group rules accept, with their IANA numbers.
IP_PROTOCOLS = {"ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2,
                "ip": 0, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58,
                "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46,
                "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112}
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # the protocols whose rules take a port range
ICMP_PROTOCOLS = frozenset({1, 58})  # whose rules' port range is an ICMP type and code
MAX_ADDRESS_PAIRS = 10  # Neutron's default max_allowed_address_pair

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")


# -- field checkers: each raises ValidationError naming the field -------------

def check_id(name: str, value: Any, table: str | None = None) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValidationError(name, f"not a valid id: {value!r} (letters, digits, '.', '_', '-'; "
                                    "1-255 characters)", table)
    return value


def check_optional_id(name: str, value: Any, table: str | None = None) -> str | None:
    return None if value is None else check_id(name, value, table)


def check_mac(name: str, value: Any, table: str | None = None) -> str:
    if not isinstance(value, str):
        raise ValidationError(name, f"not a MAC address: {value!r}", table)
    try:
        packed = core.mac_to_int(value)
    except ValueError:
        raise ValidationError(name, f"not a MAC address: {value!r}", table) from None
    if packed >> 40 & 1:
        raise ValidationError(name, f"multicast MAC not allowed: {value!r}", table)
    return value.lower()


def check_ip(name: str, value: Any, table: str | None = None, version: int | None = None) -> str:
    try:
        addr = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        addr = None
    if addr is None or (version and addr.version != version):
        kind = {4: "IPv4", 6: "IPv6"}.get(version, "IP")
        raise ValidationError(name, f"not an {kind} address: {value!r}", table)
    return str(addr)


def check_cidr(name: str, value: Any, table: str | None = None) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True) if isinstance(value, str) else None
    except ValueError as exc:
        raise ValidationError(name, f"not a CIDR: {value!r} ({exc})", table) from None
    if net is None or "/" not in value:
        raise ValidationError(name, f"not a CIDR: {value!r}", table)
    return str(net)


def check_int(name: str, value: Any, lo: int, hi: int, table: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(name, f"must be an integer in {lo}..{hi}, got {value!r}", table)
    return value


def check_bool(name: str, value: Any, table: str | None = None) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(name, f"must be true or false, got {value!r}", table)
    return value


def check_choice(name: str, value: Any, choices: tuple, table: str | None = None) -> Any:
    if value not in choices:
        raise ValidationError(name, f"must be one of {', '.join(map(str, choices))}; got {value!r}", table)
    return value


def check_str(name: str, value: Any, max_len: int = 255, table: str | None = None) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(name, f"must be a string of at most {max_len} characters", table)
    return value


def check_profile(name: str, value: Any, table: str | None = None) -> dict[str, Any]:
    """Neutron's binding:profile: a JSON object with string keys, at most PROFILE_MAX_BYTES serialized."""
    if not isinstance(value, dict):
        raise ValidationError(name, f"must be a JSON object, got {type(value).__name__}", table)
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError(name, f"is not JSON-serializable: {exc}", table) from None
    if size > PROFILE_MAX_BYTES:
        raise ValidationError(name, f"is {size} bytes serialized; at most {PROFILE_MAX_BYTES}", table)
    return value


def check_number(name: str, value: Any, table: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(name, f"must be a number, got {value!r}", table)
    return float(value)


# -- models --------------------------------------------------------------------

_unknown_seen: set[tuple[str, str]] = set()


def known_fields(cls: type, data: dict[str, Any], where: str, table: str) -> dict[str, Any]:
    """`data` without the fields `cls` does not have: a newer dfflow may have written them (a rolling
    upgrade), so they are ignored, with a warning the first time each is met."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [name for name in data if name not in names]
    if not unknown:
        return data
    for name in unknown:
        if (table, where + name) not in _unknown_seen:
            _unknown_seen.add((table, where + name))
            LOG.warning("%s objects carry a field this dfflow does not know, ignored: %s%s", table, where, name)
    return {k: v for k, v in data.items() if k in names}


@dataclass
class Model:
    table: ClassVar[str] = ""
    # Nested record fields: name -> (record class, is_list)
    records: ClassVar[dict[str, tuple[type, bool]]] = {}

    id: str
    topic: str
    version: int = 0

    def check(self) -> None:
        check_id("id", self.id, self.table)
        check_id("topic", self.topic, self.table)
        check_int("version", self.version, 0, 2**63 - 1, self.table)

    def references(self) -> list[tuple[str, str, str]]:
        """(field, table, id) of every object this one needs to exist."""
        return []

    def unique_keys(self) -> list[tuple[str, str]]:
        """(field, key) claims that no other object may hold at the same time."""
        return []

    def owner(self) -> tuple[str, str] | None:
        """(table, id) of the object this one belongs to: deleting that deletes this one with it."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Model":
        if not isinstance(data, dict):
            raise ValidationError("object", f"expected a JSON object, got {type(data).__name__}", cls.table)
        data = known_fields(cls, data, "", cls.table)
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValidationError(missing[0], "required field missing", cls.table)
        values = dict(data)
        for name, (record_cls, is_list) in cls.records.items():
            raw = values.get(name)
            if raw is None:
                continue
            if is_list:
                if not isinstance(raw, list):
                    raise ValidationError(name, "must be a list", cls.table)
                values[name] = [record_cls.from_dict(item, f"{name}[{i}]", cls.table)
                                for i, item in enumerate(raw)]
            else:
                values[name] = record_cls.from_dict(raw, name, cls.table)
        return cls(**values)

    def replace(self, **changes: Any) -> "Model":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Record:
    """A small value nested in a model (router port, gateway, migration record)."""

    @classmethod
    def from_dict(cls, data: Any, where: str, table: str) -> "Record":
        if not isinstance(data, dict):
            raise ValidationError(where, "must be a JSON object", table)
        data = known_fields(cls, data, f"{where}.", table)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValidationError(where, f"incomplete: {exc}", table) from None


@dataclass
class Chassis(Model):
    table: ClassVar[str] = "chassis"
    tunnel_ip: str = ""
    tunnel_type: str = "geneve"
    status: str = "up"
    last_seen: float = 0.0
    # What a VIF plugged here needs (Neutron's binding:vif_details for os-vif): the integration
    # bridge's name and datapath type (os-vif creates the bridge with it if it is missing).
    datapath_type: str = "system"
    bridge_name: str = "br-int"

    def check(self) -> None:
        super().check()
        if self.topic != CHASSIS_TOPIC:
            raise ValidationError("topic", f"chassis live on topic {CHASSIS_TOPIC!r}", self.table)
        self.tunnel_ip = check_ip("tunnel_ip", self.tunnel_ip, self.table, version=4)
        check_choice("tunnel_type", self.tunnel_type, TUNNEL_TYPES, self.table)
        check_choice("status", self.status, CHASSIS_STATES, self.table)
        self.last_seen = check_number("last_seen", self.last_seen, self.table)
        check_choice("datapath_type", self.datapath_type, DATAPATH_TYPES, self.table)
        check_id("bridge_name", self.bridge_name, self.table)


@dataclass
class LogicalSwitch(Model):
    """A Neutron network; its segmentation id is the tunnel VNI."""

    table: ClassVar[str] = "lswitch"
    name: str = ""
    segmentation_id: int = 0
    mtu: int = 1400
    router_external: bool = False

    def check(self) -> None:
        super().check()
        check_str("name", self.name, table=self.table)
        check_int("segmentation_id", self.segmentation_id, VNI_MIN, VNI_MAX, self.table)
        check_int("mtu", self.mtu, 68, 9000, self.table)
        check_bool("router_external", self.router_external, self.table)

    def unique_keys(self) -> list[tuple[str, str]]:
        return [("segmentation_id", f"vni:{self.segmentation_id}")]


@dataclass
class Subnet(Model):
    table: ClassVar[str] = "subnet"
    lswitch: str = ""
    cidr: str = ""
    gateway_ip: str | None = None
    name: str = ""

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr)

    def check(self) -> None:
        super().check()
        check_id("lswitch", self.lswitch, self.table)
        check_str("name", self.name, table=self.table)
        self.cidr = check_cidr("cidr", self.cidr, self.table)
        if self.gateway_ip is not None:
            net = self.network
            self.gateway_ip = check_ip("gateway_ip", self.gateway_ip, self.table, version=net.version)
            gw = ipaddress.ip_address(self.gateway_ip)
            if gw not in net:
                raise ValidationError("gateway_ip", f"{gw} is outside {self.cidr}", self.table)
            if net.num_addresses > 2 and gw in (net.network_address, net.broadcast_address):
                raise ValidationError("gateway_ip", f"{gw} is the network or broadcast address "
                                                    f"of {self.cidr}", self.table)

    def references(self) -> list[tuple[str, str, str]]:
        return [("lswitch", LogicalSwitch.table, self.lswitch)]


@dataclass(frozen=True)
class MigrationRecord(Record):
    """The blueprint's port-migration field: where the port is moving, and how far it got.

    `id` names this migration (its timeline lives under that id); `timestamps` maps each
    state to the wall-clock time it was entered."""

    chassis: str  # destination
    source: str | None = None
    state: str = "requested"
    strategy: str = "unplug"
    id: str = ""
    bound: str | None = None  # the port's binding when the migration started
    timestamps: dict[str, float] = field(default_factory=dict)
    # Nova prepared the destination (an inactive binding, or binding:profile.migrating_to, for it)
    # while the migration was requested: withdrawing that before the port is bound there is Nova's
    # rollback, which aborts the migration.
    prepared: bool = False

    def check(self, table: str) -> None:
        check_id("migration.chassis", self.chassis, table)
        check_optional_id("migration.source", self.source, table)
        check_optional_id("migration.bound", self.bound, table)
        check_choice("migration.state", self.state, MIGRATION_STATES, table)
        check_choice("migration.strategy", self.strategy, ACTIVATION_STRATEGIES, table)
        check_str("migration.id", self.id, table=table)
        check_bool("migration.prepared", self.prepared, table)
        if not isinstance(self.timestamps, dict):
            raise ValidationError("migration.timestamps", "must be an object", table)
        for key, value in self.timestamps.items():
            check_choice("migration.timestamps", key, MIGRATION_STATES, table)
            check_number(f"migration.timestamps.{key}", value, table)


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


def check_address_or_cidr(name: str, value: Any, table: str | None = None) -> str:
    """An IP address or a CIDR (host bits allowed, as Neutron allows them in address pairs)."""
    try:
        ipaddress.ip_interface(value) if isinstance(value, str) else None
    except ValueError:
        raise ValidationError(name, f"not an IP address or CIDR: {value!r}", table) from None
    if not isinstance(value, str):
        raise ValidationError(name, f"not an IP address or CIDR: {value!r}", table)
    return value


@dataclass
class LogicalPort(Model):
    """A Neutron port. `binding_chassis` is Neutron's binding:host_id: the host of its ACTIVE binding,
    whose vnic type and profile are `vnic_type` and `binding_profile`; `inactive_bindings` are the
    others (at most one per host). `binding_profile["migrating_to"]` is Nova's legacy announcement
    of a live migration's destination."""

    table: ClassVar[str] = "lport"
    records = {"migration": (MigrationRecord, False), "inactive_bindings": (InactiveBinding, True),
               "allowed_address_pairs": (AddressPair, True)}
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
        super().check()
        check_id("lswitch", self.lswitch, self.table)
        self.mac = check_mac("mac", self.mac, self.table)
        if not isinstance(self.ips, list):
            raise ValidationError("ips", "must be a list of IP addresses", self.table)
        self.ips = [check_ip(f"ips[{i}]", ip, self.table) for i, ip in enumerate(self.ips)]
        if len(set(self.ips)) != len(self.ips):
            raise ValidationError("ips", "lists an address twice", self.table)
        check_optional_id("binding_chassis", self.binding_chassis, self.table)
        if self.migration is not None:
            self.migration.check(self.table)
        if self.activation_strategy is not None:
            check_choice("activation_strategy", self.activation_strategy, ACTIVATION_STRATEGIES, self.table)
        check_str("device_owner", self.device_owner, table=self.table)
        check_str("device_id", self.device_id, table=self.table)
        check_str("name", self.name, table=self.table)
        check_bool("enabled", self.enabled, self.table)
        check_bool("port_security", self.port_security, self.table)
        check_choice("vnic_type", self.vnic_type, VNIC_TYPES, self.table)
        check_profile("binding_profile", self.binding_profile, self.table)
        if not isinstance(self.inactive_bindings, list):
            raise ValidationError("inactive_bindings", "must be a list", self.table)
        hosts: set[str] = set()
        for i, binding in enumerate(self.inactive_bindings):
            binding.check(f"inactive_bindings[{i}]", self.table)
            if binding.host == self.binding_chassis:
                raise ValidationError(f"inactive_bindings[{i}].host", f"{binding.host!r} holds the port's "
                                                                      "active binding", self.table)
            if binding.host in hosts:
                raise ValidationError(f"inactive_bindings[{i}].host", f"a second binding for host "
                                                                      f"{binding.host!r}", self.table)
            hosts.add(binding.host)
        if not isinstance(self.security_groups, list):
            raise ValidationError("security_groups", "must be a list of security group ids", self.table)
        for i, group in enumerate(self.security_groups):
            check_id(f"security_groups[{i}]", group, self.table)
        if len(set(self.security_groups)) != len(self.security_groups):
            raise ValidationError("security_groups", "lists a group twice", self.table)
        check_address_pairs(self.allowed_address_pairs, self.table)
        if not self.port_security and self.security_groups:
            raise ValidationError("security_groups", "need port_security: a port without port security "
                                                     "has no security groups", self.table)
        if not self.port_security and self.allowed_address_pairs:
            raise ValidationError("allowed_address_pairs", "need port_security", self.table)

    def references(self) -> list[tuple[str, str, str]]:
        return [("lswitch", LogicalSwitch.table, self.lswitch)] + [
            (f"security_groups[{i}]", SecurityGroup.table, g) for i, g in enumerate(self.security_groups)]

    def unique_keys(self) -> list[tuple[str, str]]:
        keys = [("mac", f"mac:{self.lswitch}:{self.mac}")]
        keys += [(f"ips[{i}]", f"ip:{self.lswitch}:{ip}") for i, ip in enumerate(self.ips)]
        return keys


@dataclass(frozen=True)
class RouterPort(Record):
    """A router interface on one subnet; its IP is the subnet's gateway."""

    subnet: str
    mac: str
    ip: str


@dataclass(frozen=True)
class ExternalGateway(Record):
    lswitch: str
    ip: str
    mac: str


@dataclass
class LogicalRouter(Model):
    table: ClassVar[str] = "lrouter"
    records = {"ports": (RouterPort, True), "external_gateway": (ExternalGateway, False)}
    name: str = ""
    ports: list[RouterPort] = field(default_factory=list)
    external_gateway: ExternalGateway | None = None

    def check(self) -> None:
        super().check()
        check_str("name", self.name, table=self.table)
        if not isinstance(self.ports, list):
            raise ValidationError("ports", "must be a list", self.table)
        seen: set[str] = set()
        for i, port in enumerate(self.ports):
            check_id(f"ports[{i}].subnet", port.subnet, self.table)
            check_mac(f"ports[{i}].mac", port.mac, self.table)
            check_ip(f"ports[{i}].ip", port.ip, self.table)
            if port.subnet in seen:
                raise ValidationError(f"ports[{i}].subnet", f"subnet {port.subnet!r} is attached twice",
                                      self.table)
            seen.add(port.subnet)
        gw = self.external_gateway
        if gw is not None:
            check_id("external_gateway.lswitch", gw.lswitch, self.table)
            check_ip("external_gateway.ip", gw.ip, self.table, version=4)
            check_mac("external_gateway.mac", gw.mac, self.table)

    def references(self) -> list[tuple[str, str, str]]:
        refs = [(f"ports[{i}].subnet", Subnet.table, p.subnet) for i, p in enumerate(self.ports)]
        if self.external_gateway is not None:
            refs.append(("external_gateway.lswitch", LogicalSwitch.table, self.external_gateway.lswitch))
        return refs

    def unique_keys(self) -> list[tuple[str, str]]:
        # A subnet has one gateway: it attaches to one router, once.
        keys = [(f"ports[{i}].subnet", f"router-if:{p.subnet}") for i, p in enumerate(self.ports)]
        gw = self.external_gateway
        if gw is not None:
            keys += [("external_gateway.ip", f"ip:{gw.lswitch}:{gw.ip}"),
                     ("external_gateway.mac", f"mac:{gw.lswitch}:{gw.mac.lower()}")]
        return keys


@dataclass
class FloatingIP(Model):
    """A public IP on an external switch, mapped to a port's fixed IP by its router."""

    table: ClassVar[str] = "floatingip"
    floating_ip: str = ""
    lswitch: str = ""  # the external network
    mac: str = ""  # answers ARP for the floating IP wherever its port lives
    port: str | None = None
    fixed_ip: str | None = None
    router: str | None = None

    def check(self) -> None:
        super().check()
        self.floating_ip = check_ip("floating_ip", self.floating_ip, self.table, version=4)
        check_id("lswitch", self.lswitch, self.table)
        self.mac = check_mac("mac", self.mac, self.table)
        check_optional_id("port", self.port, self.table)
        check_optional_id("router", self.router, self.table)
        if self.port is None:
            if self.fixed_ip is not None:
                raise ValidationError("fixed_ip", "set without a port", self.table)
        else:
            if self.fixed_ip is None:
                raise ValidationError("fixed_ip", "required when a port is associated", self.table)
            self.fixed_ip = check_ip("fixed_ip", self.fixed_ip, self.table, version=4)
            if self.router is None:
                raise ValidationError("router", "required when a port is associated", self.table)

    def references(self) -> list[tuple[str, str, str]]:
        refs = [("lswitch", LogicalSwitch.table, self.lswitch)]
        if self.port is not None:
            refs.append(("port", LogicalPort.table, self.port))
        if self.router is not None:
            refs.append(("router", LogicalRouter.table, self.router))
        return refs

    def unique_keys(self) -> list[tuple[str, str]]:
        keys = [("floating_ip", f"ip:{self.lswitch}:{self.floating_ip}"),
                ("mac", f"mac:{self.lswitch}:{self.mac}")]
        if self.port is not None:
            keys.append(("fixed_ip", f"fip-fixed:{self.port}:{self.fixed_ip}"))
        return keys


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
    """Neutron's protocol value: None, a known name (any case, given back lower-case) or a number
    0-255 (int or string, given back as a string)."""
    if value is None:
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
                raise ValidationError("remote_ip_prefix", f"not an IP address or CIDR: {self.remote_ip_prefix!r}",
                                      self.table)
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

    def owner(self) -> tuple[str, str]:
        return (SecurityGroup.table, self.secgroup)

    def references(self) -> list[tuple[str, str, str]]:
        refs = [("secgroup", SecurityGroup.table, self.secgroup)]
        if self.remote_group is not None:
            refs.append(("remote_group", SecurityGroup.table, self.remote_group))
        return refs

    def match_key(self) -> str:
        """What the rule matches, canonical: two rules of a group with the same key are duplicates
        (a protocol's name and number, `icmp` and `ipv6-icmp` for IPv6, 0.0.0.0/0 and no prefix
        are the same)."""
        number = protocol_number(self.protocol)
        if self.ethertype == "IPv6" and number == 1:
            number = 58
        prefix = str(ipaddress.ip_interface(self.remote_ip_prefix).network) if self.remote_ip_prefix else None
        if prefix in ("0.0.0.0/0", "::/0"):
            prefix = None
        return "|".join(str(v) for v in (self.direction, self.ethertype, number, self.port_range_min,
                                         self.port_range_max, prefix, self.remote_group))

    def unique_keys(self) -> list[tuple[str, str]]:
        return [("rule", f"sgrule:{self.secgroup}:{self.match_key()}")]


MODELS: dict[str, type[Model]] = {
    m.table: m for m in (Chassis, LogicalSwitch, Subnet, LogicalPort, LogicalRouter, FloatingIP, PortStatus,
                         SecurityGroup, SecurityGroupRule)
}


def model_for(table: str) -> type[Model]:
    try:
        return MODELS[table]
    except KeyError:
        raise ValidationError("table", f"unknown table {table!r}; one of {', '.join(MODELS)}") from None
