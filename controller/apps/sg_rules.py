"""A port's security-group rules as the compiled core's input rows (for controller.apps.secgroups).

The NB's rules are variable-length facts: each becomes one row of `RULE_DTYPE` (direction,
protocol, port range or ICMP type/code, and its remote end: a prefix, or a slice of `MEMBER_DTYPE`
rows holding its remote group's member addresses). `dfflow._core.compile_secgroups` turns the rows
into the port's flows: port ranges into value/mask prefixes, remotes times protocols into flows (or
into a conjunctive match when the product outgrows the sum), the conntrack flows of the port's zone.
What OpenFlow cannot express, or the data plane does not carry (IPv6, a DCCP port range), gets no
row: such a rule allows nothing rather than more than it says.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

import numpy as np

from dfflow import core
from dfflow.models import LogicalPort, SecurityGroupRule, protocol_number

RULE_DTYPE = np.dtype([(name, "<u8") for name in core.SG_RULE_FIELDS])
MEMBER_DTYPE = np.dtype([(name, "<u8") for name in core.SG_MEMBER_FIELDS])
PORT_PROTOCOLS = frozenset({6, 17, 132})  # TCP, UDP, SCTP: the port ranges OpenFlow can match
IPPROTO_ICMP = 1
DIRECTION = {"egress": core.SG_EGRESS, "ingress": core.SG_INGRESS}


def prefix(text: str) -> tuple[int, int]:
    """An IPv4 address or prefix as (network, netmask); 0.0.0.0/0 is (0, 0): any address."""
    net = ipaddress.ip_interface(text).network
    return int(net.network_address), int(net.netmask)


def member_addresses(members: Iterable[LogicalPort]) -> list[tuple[int, int]]:
    """The IPv4 addresses (and allowed address pairs) of a remote group's members, as Neutron counts them."""
    found: set[str] = set()
    for port in members:
        found.update(ip for ip in port.ips if ":" not in ip)
        found.update(pair.ip_address for pair in port.allowed_address_pairs if ":" not in pair.ip_address)
    return sorted(prefix(text) for text in found)


def _protocol(rule: SecurityGroupRule) -> tuple[int, int, int, int] | None:
    """(ip_proto, flags, low, high) of the rule, None when OpenFlow cannot express it."""
    number = protocol_number(rule.protocol) or 0
    low, high = rule.port_range_min, rule.port_range_max
    flags = (core.SG_FLAG_LOW if low is not None else 0) | (core.SG_FLAG_HIGH if high is not None else 0)
    if number == 0 or not flags:
        return number, 0, 0, 0
    if number == IPPROTO_ICMP:
        return number, flags, low or 0, high or 0
    if number not in PORT_PROTOCOLS:
        return None
    if (low, high) == (1, 65535):
        return number, 0, 0, 0
    return number, flags, low or 0, high or 0


def rule_rows(rules: Iterable[SecurityGroupRule],
              members: Mapping[str, Iterable[LogicalPort]]) -> tuple[np.ndarray, np.ndarray]:
    """(rules, members): the rows of `rules` in their order, and the member addresses their
    remote groups' slices point into (`members`: group id -> its ports)."""
    rows: list[tuple[int, ...]] = []
    addresses: list[tuple[int, int]] = []
    slices: dict[str, tuple[int, int]] = {}
    for rule in rules:
        protocol = _protocol(rule) if rule.ethertype == "IPv4" else None
        if protocol is None:
            continue
        number, flags, low, high = protocol
        remote_ip = remote_mask = start = count = 0
        if rule.remote_group is not None:
            if rule.remote_group not in slices:
                found = member_addresses(members.get(rule.remote_group, ()))
                slices[rule.remote_group] = (len(addresses), len(found))
                addresses += found
            start, count = slices[rule.remote_group]
            flags |= core.SG_FLAG_GROUP
        elif rule.remote_ip_prefix:
            remote_ip, remote_mask = prefix(rule.remote_ip_prefix)
        rows.append((DIRECTION[rule.direction], number, flags, low, high, remote_ip, remote_mask, start, count))
    return np.array(rows, RULE_DTYPE), np.array(addresses, MEMBER_DTYPE)
