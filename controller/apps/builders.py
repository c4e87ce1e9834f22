"""Small flow builders shared by the apps: answers generated in the datapath."""
from __future__ import annotations

from controller.pipeline import table
from dfflow.flows import ETH_TYPE_ARP, ETH_TYPE_IP, OFPP_IN_PORT, Flow, Move, Output, SetField, match

IPPROTO_ICMP = 1
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ALL_ONES_64 = 2**64 - 1


def arp_reply_flow(vni: int, ip: int, mac: int, cookie: int, priority: int = 100) -> Flow:
    """Answer 'who has ip' on network vni with mac, by turning the request around in place."""
    return Flow(table("arp_responder"), priority,
                match(metadata=vni, eth_type=ETH_TYPE_ARP, arp_op=1, arp_tpa=ip),
                (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac), SetField("arp_op", 2),
                 Move("arp_sha", "arp_tha", 48), Move("arp_spa", "arp_tpa", 32),
                 SetField("arp_sha", mac), SetField("arp_spa", ip), Output(OFPP_IN_PORT)),
                cookie=cookie)


def icmp_echo_reply_flow(vni: int, ip: int, mac: int, cookie: int, priority: int = 300) -> Flow:
    """Answer ICMP echo to ip (a router port) in place: swap addresses, type 8 -> 0.

    Open vSwitch fixes the IP and ICMP checksums when set_field rewrites them."""
    return Flow(table("l3_lookup"), priority,
                match(metadata=vni, eth_type=ETH_TYPE_IP, ip_proto=IPPROTO_ICMP, ipv4_dst=ip,
                      icmpv4_type=ICMP_ECHO_REQUEST),
                (Move("eth_src", "eth_dst", 48), SetField("eth_src", mac),
                 Move("ipv4_src", "ipv4_dst", 32), SetField("ipv4_src", ip),
                 SetField("icmpv4_type", ICMP_ECHO_REPLY), Output(OFPP_IN_PORT)),
                cookie=cookie)


def resolve_flow(vni: int, ip: int, mac: int, cookie: int, priority: int = 100) -> Flow:
    """A routed packet for ip on network vni is for mac."""
    return Flow(table("l3_resolve"), priority, match(metadata=vni, eth_type=ETH_TYPE_IP, ipv4_dst=ip),
                (SetField("eth_dst", mac),), goto=table("l2_lookup"), cookie=cookie)
