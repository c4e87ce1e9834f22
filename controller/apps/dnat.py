"""DNAT app: floating IPs, translated on the chassis that hosts the port.

On every chassis that needs the external network, the floating IP answers ARP
with its own MAC and resolves to that MAC; the MAC's L2 location is the port's
chassis. There, inbound packets are DNATed to the fixed IP and routed to the
port, and the port's packets leaving through the router are SNATed to the
floating IP. All of it hangs off the port's add/remove local/remote events, so
when the port moves, its floating IP moves with it.
"""
from __future__ import annotations

from controller.apps.base import App
from controller.apps.builders import ALL_ONES_64, arp_reply_flow, resolve_flow
from controller.pipeline import table
from controller.view import View, ip_int, mac_int
from dfflow.flows import ETH_TYPE_IP, DecTtl, Flow, Output, SetField, match
from dfflow.models import FloatingIP, LogicalPort, Subnet

L3_ENTRY, DNAT, L3_LOOKUP = table("l3_entry"), table("dnat"), table("l3_lookup")
L3_RESOLVE, L2_LOOKUP = table("l3_resolve"), table("l2_lookup")


class DnatApp(App):
    name = "dnat"
    app_id = 3

    def _floating_ips(self, port: LogicalPort, view: View) -> list[tuple[FloatingIP, int, int]]:
        """(floating IP, external VNI, MAC of the router port on the port's subnet) for each usable one."""
        found = []
        for fip in view.floating_ips_of(port.id):
            ext = view.switch(fip.lswitch)
            router = view.get("lrouter", fip.router) if fip.router else None
            if ext is None or router is None or fip.lswitch not in view.needed_switches():
                continue
            for rport, subnet, switch in view.router_interfaces(router):
                if switch.id == port.lswitch and _contains(subnet, fip.fixed_ip):
                    found.append((fip, ext.segmentation_id, mac_int(rport.mac)))
                    break
        return found

    def _everywhere(self, fip: FloatingIP, ext_vni: int, cookie: int) -> list[Flow]:
        fmac, fip_ip = mac_int(fip.mac), ip_int(fip.floating_ip)
        return [arp_reply_flow(ext_vni, fip_ip, fmac, cookie), resolve_flow(ext_vni, fip_ip, fmac, cookie)]

    def add_local_port(self, port: LogicalPort, view: View) -> list[Flow]:
        flows: list[Flow] = []
        vni, pmac, cookie = view.vni(port.lswitch), mac_int(port.mac), self.cookie(port.id)
        for fip, ext_vni, router_mac in self._floating_ips(port, view):
            fmac, fip_ip, fixed = mac_int(fip.mac), ip_int(fip.floating_ip), ip_int(fip.fixed_ip)
            flows += self._everywhere(fip, ext_vni, cookie)
            flows += [
                Flow(L3_ENTRY, 100, match(metadata=ext_vni, eth_dst=fmac), goto=DNAT, cookie=cookie),
                Flow(DNAT, 100, match(metadata=ext_vni, eth_type=ETH_TYPE_IP, ipv4_dst=fip_ip),
                     (SetField("ipv4_dst", fixed), DecTtl(), SetField("eth_src", router_mac),
                      SetField("eth_dst", pmac)),
                     goto=L2_LOOKUP, write_metadata=(vni, ALL_ONES_64), cookie=cookie),
                Flow(L3_LOOKUP, 100, match(metadata=vni, eth_type=ETH_TYPE_IP, ipv4_src=fixed),
                     (SetField("ipv4_src", fip_ip), SetField("eth_src", fmac), DecTtl()),
                     goto=L3_RESOLVE, write_metadata=(ext_vni, ALL_ONES_64), cookie=cookie),
            ]
        return flows

    def add_remote_port(self, port: LogicalPort, view: View) -> list[Flow]:
        flows: list[Flow] = []
        cookie = self.cookie(port.id)
        for fip, ext_vni, _ in self._floating_ips(port, view):
            flows += self._everywhere(fip, ext_vni, cookie)
            outputs = [Output(view.tunnel_ofport(port))]
            dest = view.also_send_to(port)  # an `announce` migration in flight: its destination too
            if dest is not None:
                outputs.append(Output(view.tunnels[dest]))
            flows.append(Flow(L2_LOOKUP, 100, match(metadata=ext_vni, eth_dst=mac_int(fip.mac)),
                              (SetField("tunnel_id", ext_vni), *outputs), cookie=cookie))
        return flows


def _contains(subnet: Subnet, ip: str | None) -> bool:
    import ipaddress
    return ip is not None and ipaddress.ip_address(ip) in subnet.network
