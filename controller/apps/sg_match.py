"""What one security-group rule matches, as OpenFlow match fields (for controller.apps.secgroups).

A rule becomes the product of its remote addresses (a prefix, or each address of its remote group's
members) and its protocol matches (a port range as the fewest value/mask prefixes that cover it exactly,
or an ICMP type and code). Only IPv4 rules match anything: the data plane carries IPv4 only.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Iterator

from dfflow.models import LogicalPort, SecurityGroupRule, protocol_number

Match = dict[str, "int | tuple[int, int]"]
PORT_FIELDS = {6: "tcp_dst", 17: "udp_dst", 132: "sctp_dst"}  # the port ranges OpenFlow can match
IPPROTO_ICMP = 1


def range_prefixes(low: int, high: int, bits: int = 16) -> list[int | tuple[int, int]]:
    """[low, high] as exact values and (value, mask) prefixes that cover it and nothing else."""
    found: list[int | tuple[int, int]] = []
    full = (1 << bits) - 1
    while low <= high:
        size = low & -low if low else 1 << bits  # the largest aligned block starting at low ...
        while low + size - 1 > high:  # ... that does not pass high
            size >>= 1
        mask = full & ~(size - 1)
        found.append(low if size == 1 else (low, mask))
        low += size
    return found


def protocol_matches(rule: SecurityGroupRule) -> list[Match] | None:
    """The protocol part of the rule's matches; None when OpenFlow cannot express it (a port range of
    DCCP or UDP-Lite): such a rule allows nothing rather than more than it says."""
    number = protocol_number(rule.protocol)
    if number is None or number == 0:  # any IP protocol
        return [{}]
    base: Match = {"ip_proto": number}
    low, high = rule.port_range_min, rule.port_range_max
    if number == IPPROTO_ICMP:
        if low is not None:
            base["icmpv4_type"] = low
        if high is not None:
            base["icmpv4_code"] = high
        return [base]
    if low is None and high is None:
        return [base]
    field = PORT_FIELDS.get(number)
    if field is None:
        return None
    if (low, high) == (1, 65535):
        return [base]
    return [base | {field: value} for value in range_prefixes(low, high)]


def prefix_match(prefix: str) -> int | tuple[int, int] | None:
    """An IPv4 prefix as a match value (None: any address)."""
    net = ipaddress.ip_interface(prefix).network
    if net.prefixlen == 0:
        return None
    if net.prefixlen == 32:
        return int(net.network_address)
    return int(net.network_address), int(net.netmask)


def member_prefixes(members: Iterable[LogicalPort]) -> list[str]:
    """The IPv4 addresses (and allowed address pairs) of a remote group's members, as Neutron counts them."""
    found: set[str] = set()
    for port in members:
        found.update(ip for ip in port.ips if ":" not in ip)
        found.update(pair.ip_address for pair in port.allowed_address_pairs if ":" not in pair.ip_address)
    return sorted(found)


def rule_matches(rule: SecurityGroupRule, members: Iterable[LogicalPort]) -> Iterator[Match]:
    """Every match of an IPv4 rule, with the remote address under `remote` (None: any); `members`
    are the ports of its remote group, if it has one."""
    if rule.ethertype != "IPv4":
        return
    protocols = protocol_matches(rule)
    if protocols is None:
        return
    if rule.remote_group is not None:
        remotes = [prefix_match(p) for p in member_prefixes(members)]
    else:
        remotes = [prefix_match(rule.remote_ip_prefix) if rule.remote_ip_prefix else None]
    for remote in remotes:
        for protocol in protocols:
            yield protocol | {"remote": remote}
