"""L3 app: distributed routing between the subnets of a router, on the chassis where packets enter.

Routing flows belong to the router; the next-hop resolution of each port's
addresses belongs to the port and does not depend on where the port lives, so
a migration moves nothing here: the L2 lookup after resolution finds the port.
"""
from __future__ import annotations

from controller.apps.base import App
from controller.apps.builders import ALL_ONES_64, RESOLVE, arp_reply_flow, icmp_echo_reply_flow
from controller.pipeline import table
from controller.templates import Each, Fact, PortProgram, bound
from controller.view import View, ip_int, mac_int
from dfflow.flows import ETH_TYPE_IP, DecTtl, Flow, SetField, match
from dfflow.models import LogicalRouter

L3_ENTRY, L3_LOOKUP, L3_RESOLVE = table("l3_entry"), table("l3_lookup"), table("l3_resolve")

# Wherever the port is, a packet routed to one of its addresses is for its MAC.
L3_PORT_FLOWS = PortProgram(2, [bound(RESOLVE, Fact.ROUTED, Each.PER_IP)])


class L3App(App):
    name = "l3"
    app_id = L3_PORT_FLOWS.app_id
    port_program = L3_PORT_FLOWS

    def router_flows(self, router: LogicalRouter, view: View) -> list[Flow]:
        needed = view.needed_switches()
        cookie = self.cookie(router.id)
        interfaces = [(rport, subnet, switch) for rport, subnet, switch in view.router_interfaces(router)
                      if subnet.network.version == 4 and switch.id in needed]
        flows: list[Flow] = []
        for rport, subnet, switch in interfaces:
            vni, mac, ip = switch.segmentation_id, mac_int(rport.mac), ip_int(rport.ip)
            flows += [arp_reply_flow(vni, ip, mac, cookie),
                      icmp_echo_reply_flow(vni, ip, mac, cookie),
                      Flow(L3_ENTRY, 100, match(metadata=vni, eth_dst=mac), goto=L3_LOOKUP, cookie=cookie)]
            for other_port, other_subnet, other_switch in interfaces:
                if other_port is rport:
                    continue
                net = other_subnet.network
                flows.append(Flow(
                    L3_LOOKUP, 200,
                    match(metadata=vni, eth_type=ETH_TYPE_IP,
                          ipv4_dst=(int(net.network_address), int(net.netmask))),
                    (DecTtl(), SetField("eth_src", mac_int(other_port.mac))),
                    goto=L3_RESOLVE, write_metadata=(other_switch.segmentation_id, ALL_ONES_64),
                    cookie=cookie))
        gw = router.external_gateway
        if gw is not None and gw.lswitch in needed and view.switch(gw.lswitch) is not None:
            vni, mac, ip = view.vni(gw.lswitch), mac_int(gw.mac), ip_int(gw.ip)
            flows += [arp_reply_flow(vni, ip, mac, cookie), icmp_echo_reply_flow(vni, ip, mac, cookie),
                      Flow(L3_ENTRY, 100, match(metadata=vni, eth_dst=mac), goto=L3_LOOKUP, cookie=cookie)]
        return flows
