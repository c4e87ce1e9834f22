"""L2 app: classification, port security, ARP responder, destination lookup and flooding."""
from __future__ import annotations

from controller.apps.base import App
from controller.apps.builders import ALL_ONES_64, arp_reply_flow
from controller.pipeline import table
from controller.view import View, ip_int, mac_int
from dfflow.flows import (ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_RARP, MULTICAST_BIT, Flow, Learn, Output,
                          Resubmit, SetField, controller_output, match)
from dfflow.models import LogicalPort, LogicalSwitch

CLASSIFY, PORT_SECURITY, ARP_RESPONDER = table("classify"), table("port_security"), table("arp_responder")
ACTIVATION_GATE = table("activation_gate")
# A learned gate flow serves only until the controller's activation (classify then stops looking it
# up): unused for GATE_IDLE seconds it goes by itself, and never outlives GATE_MAX.
GATE_IDLE, GATE_MAX = 5, 60
L3_ENTRY, L2_LOOKUP, FLOOD = table("l3_entry"), table("l2_lookup"), table("flood")


class L2App(App):
    name = "l2"
    app_id = 1

    def _ipv4s(self, port: LogicalPort) -> list[int]:
        return [ip_int(ip) for ip in port.ips if ":" not in ip]

    def _arp_flows(self, port: LogicalPort, vni: int, cookie: int) -> list[Flow]:
        mac = mac_int(port.mac)
        return [arp_reply_flow(vni, ip, mac, cookie) for ip in self._ipv4s(port)]

    def add_local_port(self, port: LogicalPort, view: View) -> list[Flow]:
        vni, ofport, mac = view.vni(port.lswitch), view.ofport(port), mac_int(port.mac)
        cookie = self.cookie(port.id)
        pending = view.is_pending(port)
        classify = (SetField("reg6", ofport),) + ((Resubmit(ACTIVATION_GATE),) if pending else ())
        flows = [Flow(CLASSIFY, 100, match(in_port=ofport), classify, goto=PORT_SECURITY,
                      write_metadata=(vni, ALL_ONES_64), cookie=cookie)]
        flows += self._port_security_flows(port, ofport, mac, cookie, gated=pending)
        if pending:
            flows += self._announcement_flows(port, ofport, mac, cookie)
        to_port = [Output(ofport)] + self._copy_to_destination(port, view, vni)
        flows.append(Flow(L2_LOOKUP, 100, match(metadata=vni, eth_dst=mac), tuple(to_port), cookie=cookie))
        return flows + self._arp_flows(port, vni, cookie)

    def _announcement_flows(self, port: LogicalPort, ofport: int, mac: int, cookie: int) -> list[Flow]:
        """A pre-programmed destination: the VM's first RARP or GARP opens its egress in the datapath
        (a learned activation_gate flow sets reg5=1 for this VIF) and tells the controller, which
        activates the port and publishes. Until then the gated port-security flows drop its packets."""
        opens_gate = Learn(ACTIVATION_GATE, 100, GATE_IDLE, GATE_MAX, cookie, (("reg6", ofport),), (("reg5", 1),))
        announcements = [match(in_port=ofport, eth_type=ETH_TYPE_RARP, eth_src=mac)]
        announcements += [match(in_port=ofport, eth_type=ETH_TYPE_ARP, eth_src=mac, arp_spa=ip, arp_tpa=ip)
                          for ip in self._ipv4s(port)]
        return [Flow(CLASSIFY, 110, m, (opens_gate, controller_output()), cookie=cookie) for m in announcements]

    def _copy_to_destination(self, port: LogicalPort, view: View, vni: int) -> list:
        """While an `announce` migration is in flight, the destination gets a copy too."""
        dest = view.also_send_to(port)
        return [SetField("tunnel_id", vni), Output(view.tunnels[dest])] if dest is not None else []

    def _port_security_flows(self, port: LogicalPort, ofport: int, mac: int, cookie: int,
                             gated: bool = False) -> list[Flow]:
        """What the VM may send. `gated`: only once its announcement opened the activation gate."""
        gate = {"reg5": 1} if gated else {}
        if not port.port_security:
            return [Flow(PORT_SECURITY, 100, match(reg6=ofport, **gate), goto=ARP_RESPONDER, cookie=cookie)]
        ips = self._ipv4s(port)
        if not ips:
            return [Flow(PORT_SECURITY, 100, match(eth_src=mac, reg6=ofport, **gate), goto=ARP_RESPONDER,
                         cookie=cookie)]
        # QEMU announces a migrated guest with RARP from its MAC: always let that through.
        flows = [Flow(PORT_SECURITY, 100, match(eth_src=mac, eth_type=ETH_TYPE_RARP, reg6=ofport, **gate),
                      goto=ARP_RESPONDER, cookie=cookie)]
        for ip in ips:
            flows.append(Flow(PORT_SECURITY, 100, match(eth_src=mac, eth_type=ETH_TYPE_IP, ipv4_src=ip,
                                                        reg6=ofport, **gate), goto=ARP_RESPONDER, cookie=cookie))
            flows.append(Flow(PORT_SECURITY, 100, match(eth_src=mac, eth_type=ETH_TYPE_ARP, arp_spa=ip,
                                                        arp_sha=mac, reg6=ofport, **gate), goto=ARP_RESPONDER,
                              cookie=cookie))
        return flows

    def add_remote_port(self, port: LogicalPort, view: View) -> list[Flow]:
        vni, mac, cookie = view.vni(port.lswitch), mac_int(port.mac), self.cookie(port.id)
        outputs = [Output(view.tunnel_ofport(port))] + self._copy_to_destination(port, view, vni)[1:]
        return [Flow(L2_LOOKUP, 100, match(metadata=vni, eth_dst=mac),
                     (SetField("tunnel_id", vni), *outputs), cookie=cookie)
                ] + self._arp_flows(port, vni, cookie)

    def switch_flows(self, switch: LogicalSwitch, view: View) -> list[Flow]:
        """Tunnel classification wherever the network is needed; flooding where it is present."""
        if switch.id not in view.needed_switches():
            return []
        vni, cookie = switch.segmentation_id, self.cookie(switch.id)
        flows = [Flow(CLASSIFY, 50, match(tunnel_id=vni), (SetField("reg6", 0),), goto=ARP_RESPONDER,
                      write_metadata=(vni, ALL_ONES_64), cookie=cookie)]
        if not view.switch_is_present(switch.id):
            return flows
        local = [Output(view.ofport(p)) for p in view.local_ports(switch.id)]
        remote = [Output(view.tunnels[c]) for c in view.remote_chassis_of(switch.id)]
        to_tunnels = [SetField("tunnel_id", vni)] + remote if remote else []
        return flows + [
            Flow(L2_LOOKUP, 50, match(metadata=vni, eth_dst=(MULTICAST_BIT, MULTICAST_BIT)),
                 goto=FLOOD, cookie=cookie),
            Flow(FLOOD, 100, match(metadata=vni, reg6=0), tuple(local), cookie=cookie),
            Flow(FLOOD, 50, match(metadata=vni), tuple(local + to_tunnels), cookie=cookie),
        ]

    def static_flows(self) -> list[Flow]:
        cookie = self.cookie("pipeline")
        return [
            Flow(ARP_RESPONDER, 0, (), goto=L3_ENTRY, cookie=cookie),
            Flow(L3_ENTRY, 0, (), goto=L2_LOOKUP, cookie=cookie),
            Flow(L2_LOOKUP, 0, (), goto=FLOOD, cookie=cookie),
        ]

