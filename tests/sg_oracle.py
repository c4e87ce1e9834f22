"""The Python reference of a port's security-group flows: the oracle the compiled core is held to.

`dfflow._core.compile_secgroups` makes the agent's flows (controller.apps.secgroups); this module
makes the same flows from the NB's rule objects, one Python object at a time, so that the tests
can compare the two flow for flow (tests/test_secgroups_compiled.py).

A rule becomes the product of its remote addresses (a prefix, or each address of its remote group's
members) and its protocol matches (a port range as the fewest value/mask prefixes that cover it exactly,
or an ICMP type and code). Only IPv4 rules match anything: the data plane carries IPv4 only. A rule
naming a remote group whose product is larger than its sum becomes a conjunctive match instead:
one flow per member address (clause 1), one per protocol match (clause 2), and one on conj_id.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Iterable

from controller.apps.secgroups import (CONJUNCTION, DIRECTIONS, EGRESS_CT, EGRESS_SG, INGRESS_CT, INGRESS_SG,
                                       IPPROTO_TCP, MAX_CONJUNCTIONS, MID_STREAM, RULE, TRACKED_NEW, arriving,
                                       conjunction_id, filtered, group_members, rules_of)
from controller.view import mac_int
from dfflow.flows import ETH_TYPE_IP, ETH_TYPE_IPV6, TCP_SYN, Conjunction, Ct, Flow, SetField, match
from dfflow.models import LogicalPort, SecurityGroupRule, protocol_number

if TYPE_CHECKING:
    from controller.view import View

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


def remotes_and_protocols(rule: SecurityGroupRule, members: Iterable[LogicalPort]) -> tuple[list, list[Match]]:
    """The rule's remote addresses (None: any) and protocol matches; nothing for what OpenFlow cannot
    express or the data plane does not carry."""
    protocols = protocol_matches(rule) if rule.ethertype == "IPv4" else None
    if protocols is None:
        return [], []
    if rule.remote_group is not None:
        return [prefix_match(p) for p in member_prefixes(members)], protocols
    return [prefix_match(rule.remote_ip_prefix) if rule.remote_ip_prefix else None], protocols


def port_flows(port: LogicalPort, view: "View", zone: int, cookie: int) -> list[Flow]:
    """Every security-group flow of a local port in conntrack zone `zone` (its ofport)."""
    if not filtered(port):
        return []
    vni, mac = view.vni(port.lswitch), mac_int(port.mac)
    whose = {"egress": {"reg6": zone}, "ingress": {"reg7": zone}}
    flows: dict[tuple, Flow] = {}

    def put(flow: Flow) -> None:
        old = flows.get(flow.key)
        if old is not None and flow.actions and isinstance(flow.actions[0], Conjunction):
            flow = Flow(flow.table, flow.priority, flow.match, old.actions + flow.actions, cookie=cookie)
        flows[flow.key] = flow  # two rules may allow the same thing

    put(Flow(EGRESS_CT, 100, match(reg6=zone, eth_type=ETH_TYPE_IP), (Ct(zone, table=EGRESS_SG),), cookie=cookie))
    for dst in sorted({mac} | {mac_int(p.mac_address.lower()) for p in port.allowed_address_pairs}):
        put(Flow(INGRESS_CT, 100, match(metadata=vni, eth_dst=dst, eth_type=ETH_TYPE_IP),
                 (SetField("reg7", zone), Ct(zone, table=INGRESS_SG)), cookie=cookie))
        # the groups filter IPv4 only: IPv6 for the port is dropped, not let past them (nor flooded, l2)
        put(Flow(INGRESS_CT, 100, match(metadata=vni, eth_dst=dst, eth_type=ETH_TYPE_IPV6), cookie=cookie))
    rules = rules_of(view, port.security_groups)
    members = group_members(view) if any(r.remote_group for r in rules) else {}
    conjunctions = {"egress": 0, "ingress": 0}
    n_conjunctions = 0
    for rule in rules:
        sg_table, allowed_to, remote_field = DIRECTIONS[rule.direction]
        remotes, protocols = remotes_and_protocols(rule, members.get(rule.remote_group or "", []))
        new = dict(**whose[rule.direction], ct_state=TRACKED_NEW, eth_type=ETH_TYPE_IP)
        conjoined = (rule.remote_group is not None and conjunctions[rule.direction] < MAX_CONJUNCTIONS
                     and len(remotes) * len(protocols) > len(remotes) + len(protocols) + 1)
        if conjoined:
            conjunctions[rule.direction] += 1
            n_conjunctions += 1
            conj = conjunction_id(zone, n_conjunctions)
            for remote in remotes:
                where = {} if remote is None else {remote_field: remote}
                put(Flow(sg_table, CONJUNCTION, match(**new, **where), (Conjunction(conj, 1, 2),), cookie=cookie))
            for protocol in protocols:
                put(Flow(sg_table, CONJUNCTION, match(**new, **protocol), (Conjunction(conj, 2, 2),), cookie=cookie))
            put(Flow(sg_table, CONJUNCTION, match(**whose[rule.direction], eth_type=ETH_TYPE_IP, conj_id=conj),
                     (Ct(zone, commit=True),), goto=allowed_to, cookie=cookie))
            continue
        for remote in remotes:
            for protocol in protocols:
                fields = dict(new, **protocol)
                if remote is not None:
                    fields[remote_field] = remote
                put(Flow(sg_table, RULE, match(**fields), (Ct(zone, commit=True),), goto=allowed_to, cookie=cookie))
    if arriving(port, view):
        for direction, (sg_table, allowed_to, _) in DIRECTIONS.items():
            put(Flow(sg_table, MID_STREAM, match(**whose[direction], ct_state=TRACKED_NEW, eth_type=ETH_TYPE_IP,
                                                 ip_proto=IPPROTO_TCP, tcp_flags=(0, TCP_SYN)),
                     (Ct(zone, commit=True),), goto=allowed_to, cookie=cookie))
    return list(flows.values())
