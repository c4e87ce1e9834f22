"""DNAT app: floating IPs, translated on the chassis that hosts the port.

On every chassis that needs the external network, the floating IP answers ARP
with its own MAC and resolves to that MAC; the MAC's L2 location is the port's
chassis. There, inbound packets are DNATed to the fixed IP and routed to the
port, and the port's packets leaving through the router are SNATed to the
floating IP. All of it hangs off the port's add/remove local/remote events, so
when the port moves, its floating IP moves with it. Which floating IPs of a
port are usable here (external network needed, router interface on the port's
subnet) is `View.port_facts`' to say.
"""
from __future__ import annotations

from controller.apps.base import App
from controller.apps.builders import ALL_ONES_64, ARP_REPLY, RESOLVE
from controller.apps.l2 import LOOKUP_LEFT_FROM_TUNNEL, LOOKUP_REMOTE, LOOKUP_REMOTE_VIA_DESTINATION
from controller.pipeline import table
from controller.templates import Each, Fact, Param, PortProgram, bound, template
from dfflow.flows import ETH_TYPE_IP, DecTtl, SetField

L3_ENTRY, DNAT, L3_LOOKUP = table("l3_entry"), table("dnat"), table("l3_lookup")
L3_RESOLVE, INGRESS_CONNTRACK = table("l3_resolve"), table("ingress_conntrack")
VNI, MAC, FIP, FIP_MAC = Param.VNI, Param.MAC, Param.FIP, Param.FIP_MAC
EXT_VNI, FIXED_IP, ROUTER_MAC = Param.EXT_VNI, Param.FIXED_IP, Param.ROUTER_MAC

# On the port's chassis: the floating IP's MAC enters routing through the DNAT table ...
DNAT_ENTRY = template("dnat_entry", L3_ENTRY, 100, dict(metadata=EXT_VNI, eth_dst=FIP_MAC), goto=DNAT)
# ... which rewrites it to the fixed IP and routes it onto the port's network ...
DNAT_IN = template("dnat_in", DNAT, 100, dict(metadata=EXT_VNI, eth_type=ETH_TYPE_IP, ipv4_dst=FIP),
                   (SetField("ipv4_dst", FIXED_IP), DecTtl(), SetField("eth_src", ROUTER_MAC), SetField("eth_dst", MAC)),
                   goto=INGRESS_CONNTRACK, write_metadata=(VNI, ALL_ONES_64))
# ... and the port's own packets leave through the router as the floating IP.
SNAT_OUT = template("snat_out", L3_LOOKUP, 100, dict(metadata=VNI, eth_type=ETH_TYPE_IP, ipv4_src=FIXED_IP),
                    (SetField("ipv4_src", FIP), SetField("eth_src", FIP_MAC), DecTtl()),
                    goto=L3_RESOLVE, write_metadata=(EXT_VNI, ALL_ONES_64))
ON_EXTERNAL_NET = dict(vni=EXT_VNI, ip=FIP, mac=FIP_MAC)  # the shared templates, for the floating IP

DNAT_PORT_FLOWS = PortProgram(3, [
    bound(ARP_REPLY, Fact(0), Each.PER_FIP, **ON_EXTERNAL_NET),
    bound(RESOLVE, Fact(0), Each.PER_FIP, **ON_EXTERNAL_NET),
    bound(DNAT_ENTRY, Fact.LOCAL, Each.PER_FIP),
    bound(DNAT_IN, Fact.LOCAL, Each.PER_FIP),
    bound(SNAT_OUT, Fact.LOCAL, Each.PER_FIP),
    bound(LOOKUP_REMOTE, Fact.REMOTE | Fact.NO_COPY, Each.PER_FIP, vni=EXT_VNI, mac=FIP_MAC),
    bound(LOOKUP_REMOTE_VIA_DESTINATION, Fact.REMOTE | Fact.COPY, Each.PER_FIP, vni=EXT_VNI, mac=FIP_MAC),
    bound(LOOKUP_LEFT_FROM_TUNNEL, Fact.REMOTE | Fact.GATED, Each.PER_FIP, vni=EXT_VNI, mac=FIP_MAC),
])


class DnatApp(App):
    name = "dnat"
    app_id = DNAT_PORT_FLOWS.app_id
    port_program = DNAT_PORT_FLOWS
