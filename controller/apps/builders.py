"""Flow templates shared by the apps: answers generated in the datapath, and next-hop resolution."""
from __future__ import annotations

from controller.pipeline import table
from controller.templates import Param, template
from dfflow.flows import ETH_TYPE_ARP, ETH_TYPE_IP, OFPP_IN_PORT, Flow, Move, Output, SetField

IPPROTO_ICMP = 1
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ALL_ONES_64 = 2**64 - 1
VNI, IP, MAC = Param.VNI, Param.IP, Param.MAC

# Answer 'who has IP' on network VNI with MAC, by turning the request around in place.
ARP_REPLY = template(
    "arp_reply", table("arp_responder"), 100,
    dict(metadata=VNI, eth_type=ETH_TYPE_ARP, arp_op=1, arp_tpa=IP),
    (Move("eth_src", "eth_dst", 48), SetField("eth_src", MAC), SetField("arp_op", 2),
     Move("arp_sha", "arp_tha", 48), Move("arp_spa", "arp_tpa", 32),
     SetField("arp_sha", MAC), SetField("arp_spa", IP), Output(OFPP_IN_PORT)))

# Answer ICMP echo to IP (a router port) in place: swap addresses, type 8 -> 0.
# Open vSwitch fixes the IP and ICMP checksums when set_field rewrites them.
ICMP_ECHO_REPLY_FLOW = template(
    "icmp_echo_reply", table("l3_lookup"), 300,
    dict(metadata=VNI, eth_type=ETH_TYPE_IP, ip_proto=IPPROTO_ICMP, ipv4_dst=IP, icmpv4_type=ICMP_ECHO_REQUEST),
    (Move("eth_src", "eth_dst", 48), SetField("eth_src", MAC),
     Move("ipv4_src", "ipv4_dst", 32), SetField("ipv4_src", IP),
     SetField("icmpv4_type", ICMP_ECHO_REPLY), Output(OFPP_IN_PORT)))

# A routed packet for IP on network VNI is for MAC.
RESOLVE = template("resolve", table("l3_resolve"), 100, dict(metadata=VNI, eth_type=ETH_TYPE_IP, ipv4_dst=IP),
                   (SetField("eth_dst", MAC),), goto=table("ingress_conntrack"))


def arp_reply_flow(vni: int, ip: int, mac: int, cookie: int) -> Flow:
    return ARP_REPLY.flow({VNI: vni, IP: ip, MAC: mac}, cookie)


def icmp_echo_reply_flow(vni: int, ip: int, mac: int, cookie: int) -> Flow:
    return ICMP_ECHO_REPLY_FLOW.flow({VNI: vni, IP: ip, MAC: mac}, cookie)
