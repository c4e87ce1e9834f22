"""Northbound data model: what Neutron knows, as dfflow stores it.

Each object has an `id`, a `topic` (the tenant/project; chassis live on the
CHASSIS_TOPIC) and a `version`, the NB revision of its last write (set by the
store; compare-and-set updates quote it back). `check()` validates the object's
own fields; rules that need other objects (a fixed IP inside the switch's
subnets, duplicates on a switch, references) live in `dfflow.nb.rules`.

The model is split by concern: `fields` (the field checkers), `base` (`Model`, `Record`),
`network` (chassis, switches, subnets), `port`, `migration`, `router` (routers, floating IPs) and
`secgroup`; everything is importable from `dfflow.models` as before.
"""
from __future__ import annotations

from dfflow.errors import ValidationError
from dfflow.models.base import Model, Record, known_fields
from dfflow.models.fields import (PROFILE_MAX_BYTES, check_address_or_cidr, check_bool, check_choice, check_cidr,
                                  check_id, check_int, check_ip, check_mac, check_number, check_optional_id,
                                  check_profile, check_str)
from dfflow.models.migration import ACTIVATION_STRATEGIES, MIGRATION_STATES, MigrationRecord
from dfflow.models.network import (CHASSIS_STATES, CHASSIS_TOPIC, DATAPATH_TYPES, TUNNEL_TYPES, VNI_MAX, VNI_MIN,
                                   Chassis, LogicalSwitch, Subnet)
from dfflow.models.port import (MAX_ADDRESS_PAIRS, VNIC_TYPES, AddressPair, InactiveBinding, LogicalPort,
                                PortStatus, check_address_pairs)
from dfflow.models.router import ExternalGateway, FloatingIP, LogicalRouter, RouterPort
from dfflow.models.secgroup import (ETHERTYPES, ICMP_PROTOCOLS, IP_PROTOCOLS, PORT_PROTOCOLS, SG_DIRECTIONS,
                                    RuleError, SecurityGroup, SecurityGroupRule, normalize_protocol,
                                    protocol_number)

MODELS: dict[str, type[Model]] = {
    m.table: m for m in (Chassis, LogicalSwitch, Subnet, LogicalPort, LogicalRouter, FloatingIP, PortStatus,
                         SecurityGroup, SecurityGroupRule)
}


def model_for(table: str) -> type[Model]:
    try:
        return MODELS[table]
    except KeyError:
        raise ValidationError("table", f"unknown table {table!r}; one of {', '.join(MODELS)}") from None


__all__ = [
    "ACTIVATION_STRATEGIES", "CHASSIS_STATES", "CHASSIS_TOPIC", "DATAPATH_TYPES", "ETHERTYPES", "ICMP_PROTOCOLS",
    "IP_PROTOCOLS", "MAX_ADDRESS_PAIRS", "MIGRATION_STATES", "MODELS", "PORT_PROTOCOLS", "PROFILE_MAX_BYTES",
    "SG_DIRECTIONS", "TUNNEL_TYPES", "VNIC_TYPES", "VNI_MAX", "VNI_MIN",
    "AddressPair", "Chassis", "ExternalGateway", "FloatingIP", "InactiveBinding", "LogicalPort", "LogicalRouter",
    "LogicalSwitch", "MigrationRecord", "Model", "PortStatus", "Record", "RouterPort", "RuleError",
    "SecurityGroup", "SecurityGroupRule", "Subnet", "ValidationError",
    "check_address_or_cidr", "check_address_pairs", "check_bool", "check_choice", "check_cidr", "check_id",
    "check_int", "check_ip", "check_mac", "check_number", "check_optional_id", "check_profile", "check_str",
    "known_fields", "model_for", "normalize_protocol", "protocol_number",
]
