"""L2 app: classification, port security, ARP responder, destination lookup and flooding."""
from __future__ import annotations

from typing import Any, Iterable

from controller.apps.base import App
from controller.apps.builders import ALL_ONES_64, ARP_REPLY
from controller.apps.secgroups import filtered
from controller.pipeline import table
from controller.templates import Each, Fact, Param, PortProgram, bound, template, with_match
from controller.view import View
from dfflow.flows import (ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_RARP, MULTICAST_BIT, OFPP_IN_PORT, Ct,
                          Flow, Learn, Output, Resubmit, SetField, controller_output, match)
from dfflow.models import LogicalSwitch

CLASSIFY, PORT_SECURITY, ARP_RESPONDER = table("classify"), table("port_security"), table("arp_responder")
ACTIVATION_GATE, DELIVERY_GATE = table("activation_gate"), table("delivery_gate")
L3_ENTRY, L2_LOOKUP, FLOOD = table("l3_entry"), table("l2_lookup"), table("flood")
# What port security lets through goes on to the security groups' egress check; what goes to the
# L2 lookup passes their ingress check on the way.
EGRESS_CONNTRACK, INGRESS_CONNTRACK = table("egress_conntrack"), table("ingress_conntrack")
INGRESS_SECURITY_GROUPS = table("ingress_security_groups")
CHECKED_COPY = 200  # l2_lookup: a flood's copy its port's ingress filter let through, above every lookup
VNI, MAC, OFPORT, IP = Param.VNI, Param.MAC, Param.OFPORT, Param.IP
TUNNEL, COPY_TUNNEL = Param.TUNNEL, Param.COPY_TUNNEL
LOCAL, REMOTE, GATED, OPEN = Fact.LOCAL, Fact.REMOTE, Fact.GATED, Fact.OPEN

# -- a local port: classification, then what the VM may send (port security) -----------------
# Every local port's VIF looks its activation gate up (reg5) before port security, whether the port is
# a pre-programmed `announce` destination (closed: reg5 stays 0) or runs here (open: reg5=1, the very
# action the VM's announcement learns). A port's activation thus rewrites its gate and nothing its
# packets take: their datapath flows translate as before (reg5=1 frozen at `ct` both ways).
CLASSIFY_PORT = template("classify_port", CLASSIFY, 100, dict(in_port=OFPORT),
                         (SetField("reg6", OFPORT), Resubmit(ACTIVATION_GATE)),
                         goto=PORT_SECURITY, write_metadata=(VNI, ALL_ONES_64))
OPEN_GATE = 1  # reg5: the gate lets the VIF's packets on to port security
PS_ANY = template("ps_any", PORT_SECURITY, 100, dict(reg6=OFPORT, reg5=OPEN_GATE), goto=EGRESS_CONNTRACK)
PS_MAC = template("ps_mac", PORT_SECURITY, 100, dict(eth_src=MAC, reg6=OFPORT, reg5=OPEN_GATE),
                  goto=EGRESS_CONNTRACK)
# QEMU announces a migrated guest with RARP from its MAC: always let that through.
PS_RARP = template("ps_rarp", PORT_SECURITY, 100,
                   dict(eth_src=MAC, eth_type=ETH_TYPE_RARP, reg6=OFPORT, reg5=OPEN_GATE), goto=EGRESS_CONNTRACK)
PS_IP = template("ps_ip", PORT_SECURITY, 100,
                 dict(eth_src=MAC, eth_type=ETH_TYPE_IP, ipv4_src=IP, reg6=OFPORT, reg5=OPEN_GATE), goto=EGRESS_CONNTRACK)
PS_ARP = template("ps_arp", PORT_SECURITY, 100,
                  dict(eth_src=MAC, eth_type=ETH_TYPE_ARP, arp_spa=IP, arp_sha=MAC, reg6=OFPORT, reg5=OPEN_GATE),
                  goto=EGRESS_CONNTRACK)
# Allowed address pairs: the port may also send from each pair's MAC and address or prefix (a
# port has pairs only with port security on).
PAIR_MAC, PAIR_IP, PAIR_MASK = Param.PAIR_MAC, Param.PAIR_IP, Param.PAIR_MASK
PS_PAIR_IP = template("ps_pair_ip", PORT_SECURITY, 100,
                      dict(eth_src=PAIR_MAC, eth_type=ETH_TYPE_IP, ipv4_src=PAIR_IP, reg6=OFPORT, reg5=OPEN_GATE),
                      goto=EGRESS_CONNTRACK)
PS_PAIR_NET = with_match(PS_PAIR_IP, "ps_pair_net", ipv4_src=(PAIR_IP, PAIR_MASK))
PS_PAIR_ARP = template("ps_pair_arp", PORT_SECURITY, 100,
                       dict(eth_src=PAIR_MAC, eth_type=ETH_TYPE_ARP, arp_spa=PAIR_IP, arp_sha=PAIR_MAC, reg6=OFPORT,
                            reg5=OPEN_GATE),
                       goto=EGRESS_CONNTRACK)
PS_PAIR_ARP_NET = with_match(PS_PAIR_ARP, "ps_pair_arp_net", arp_spa=(PAIR_IP, PAIR_MASK))
PORT_SECURITY_ENTRIES = ((PS_ANY, Fact.PS_OFF, Each.ONCE), (PS_MAC, Fact.PS_MAC, Each.ONCE),
                         (PS_RARP, Fact.PS_IPS, Each.ONCE), (PS_IP, Fact.PS_IPS, Each.PER_IP),
                         (PS_ARP, Fact.PS_IPS, Each.PER_IP),
                         (PS_PAIR_IP, Fact(0), Each.PER_PAIR_HOST), (PS_PAIR_NET, Fact(0), Each.PER_PAIR_NET),
                         (PS_PAIR_ARP, Fact(0), Each.PER_PAIR_HOST), (PS_PAIR_ARP_NET, Fact(0), Each.PER_PAIR_NET))

# The activation gate. A pre-programmed destination's VM's first RARP or GARP opens its egress and
# its ingress in the datapath, in the same action list, and tells the controller, which activates
# the port and publishes. Until then port security drops what the VM sends (reg5=0), and what is
# sent to it goes on to the source, where the VM runs (see "one copy" below).
# Egress: the closed gate is a flow of the controller's (reg5 stays 0), which the announcement
# re-learns under the same key (table, priority, match) to set reg5=1 for this VIF. No timeout:
# the VM's egress stays open for as long as the migration is unresolved, however long the
# controller is away. The activation replaces the learned flow with the controller's open gate,
# the same flow: every local port has it, so nothing the datapath cached for the VM changes.
GATE_CLOSED = template("gate_closed", ACTIVATION_GATE, 100, dict(reg6=OFPORT))
GATE_OPEN = template("gate_open", ACTIVATION_GATE, 100, dict(reg6=OFPORT), (SetField("reg5", OPEN_GATE),))
OPENS_GATE = Learn(ACTIVATION_GATE, GATE_CLOSED.priority, 0, 0, Param.COOKIE, (("reg6", OFPORT),),
                   (("reg5", OPEN_GATE),))

# -- one copy: where a packet for a migrating port goes, decided in ingress_conntrack ---------------
# While an `announce` migration is in flight every chassis sends the port's packets to its
# destination alone (COPY_TUNNEL), the source's own VIFs too, and the destination's datapath
# decides, before any ingress filter: until the VM announces itself there, back out to the source
# (COPY_TUNNEL on the gated destination), which delivers what a tunnel brings to its VIF and never
# forwards it again; from the announcement on, to its own VIF. A packet thus exists in one copy,
# and is filtered once, by the chassis that delivers it. reg9 carries the decision: 0 undecided,
# 1 deliver here (on to the port's ingress filter and l2_lookup), 2 the destination's VM has not
# announced itself: to the source. Every local port's packets take the same decision (their
# delivery gate open), so they reach the connection tracker with reg9=1 whether the port is a
# migration's destination, its source, or neither: a port's migration changes no datapath flow of
# its packets but where the migration sends them.
DELIVER_HERE, NOT_ANNOUNCED = 1, 2
# The source: a tunnel's packet is delivered here (decided, it takes the usual way: the port's
# ingress filter, then l2_lookup); what its own VIFs send the port goes to the destination, unfiltered.
SOURCE_DELIVERS_FROM_TUNNEL = template("source_delivers_from_tunnel", INGRESS_CONNTRACK, 120,
                                       dict(metadata=VNI, eth_dst=MAC, reg6=0, reg9=0),
                                       (SetField("reg9", DELIVER_HERE), Resubmit(INGRESS_CONNTRACK)))
SOURCE_SENDS_TO_DESTINATION = template("source_sends_to_destination", INGRESS_CONNTRACK, 110,
                                       dict(metadata=VNI, eth_dst=MAC, reg9=0),
                                       (SetField("tunnel_id", VNI), Output(COPY_TUNNEL)))
# A local port (the destination too): whatever way it came (a tunnel, its own VIFs; switched,
# routed, DNATed) the packet looks its port up in delivery_gate, where a pending destination's flow
# (no action) leaves reg9=NOT_ANNOUNCED and the one the announcement learns over it (same key, no
# timeout) sets reg9=DELIVER_HERE, as the controller's own open gate does for every other local port.
LOOKS_UP_DELIVERY_GATE = template("looks_up_delivery_gate", INGRESS_CONNTRACK, 110,
                                  dict(metadata=VNI, eth_dst=MAC, reg9=0),
                                  (SetField("reg9", NOT_ANNOUNCED), Resubmit(DELIVERY_GATE),
                                   Resubmit(INGRESS_CONNTRACK)))
DELIVERY_CLOSED = template("delivery_closed", DELIVERY_GATE, 100, dict(metadata=VNI, eth_dst=MAC))
DELIVERY_OPEN = template("delivery_open", DELIVERY_GATE, 100, dict(metadata=VNI, eth_dst=MAC),
                         (SetField("reg9", DELIVER_HERE),))
OPENS_DELIVERY = Learn(DELIVERY_GATE, DELIVERY_CLOSED.priority, 0, 0, Param.COOKIE,
                       (("metadata", VNI), ("eth_dst", MAC)), (("reg9", DELIVER_HERE),))
# Not announced: to the source (out of the tunnel it came in by, if it came from the source
# itself: Open vSwitch sends nothing back out of its input port unless told OFPP_IN_PORT) ...
DESTINATION_TO_SOURCE = template("destination_to_source", INGRESS_CONNTRACK, 110,
                                 dict(metadata=VNI, eth_dst=MAC, reg9=NOT_ANNOUNCED),
                                 (SetField("tunnel_id", VNI), Output(COPY_TUNNEL)))
DESTINATION_BACK_TO_SOURCE = template("destination_back_to_source", INGRESS_CONNTRACK, 120,
                                      dict(metadata=VNI, eth_dst=MAC, reg9=NOT_ANNOUNCED, in_port=COPY_TUNNEL),
                                      (SetField("tunnel_id", VNI), Output(OFPP_IN_PORT)))
# ... or, with no tunnel to the source, dropped: never handed to a VM that does not run here yet.
DESTINATION_HOLDS = template("destination_holds", INGRESS_CONNTRACK, 110,
                             dict(metadata=VNI, eth_dst=MAC, reg9=NOT_ANNOUNCED))
ANNOUNCE_RARP = template("announce_rarp", CLASSIFY, 110, dict(in_port=OFPORT, eth_type=ETH_TYPE_RARP, eth_src=MAC),
                         (OPENS_GATE, OPENS_DELIVERY, controller_output()))
ANNOUNCE_GARP = template("announce_garp", CLASSIFY, 110,
                         dict(in_port=OFPORT, eth_type=ETH_TYPE_ARP, eth_src=MAC, arp_spa=IP, arp_tpa=IP),
                         (OPENS_GATE, OPENS_DELIVERY, controller_output()))

# -- where packets for the port go ----------------------------------------------------------------
# A local port (a migrating one's too: what reaches l2_lookup for it was decided for delivery here).
LOOKUP_LOCAL = template("lookup_local", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC), (Output(OFPORT),))
LOOKUP_REMOTE = template("lookup_remote", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC),
                         (SetField("tunnel_id", VNI), Output(TUNNEL)))
# While an `announce` migration is in flight: to its destination alone (which decides, see above).
LOOKUP_REMOTE_VIA_DESTINATION = template("lookup_remote_via_destination", L2_LOOKUP, 100,
                                         dict(metadata=VNI, eth_dst=MAC),
                                         (SetField("tunnel_id", VNI), Output(COPY_TUNNEL)))
# The source, once the VM has left it (activated on its destination, or the source unplugged before
# any activation), until the migration ends: a tunnel's packet for the port still arriving here is
# one the destination sent back before the announcement, in flight across the switchover; the VM
# is no longer here to take it, and forwarded again it could loop. Dropped.
LOOKUP_LEFT_FROM_TUNNEL = template("lookup_left_from_tunnel", L2_LOOKUP, 110, dict(metadata=VNI, eth_dst=MAC, reg6=0))

L2_PORT_FLOWS = PortProgram(1, [
    bound(CLASSIFY_PORT, LOCAL),
    bound(GATE_CLOSED, LOCAL | GATED),
    bound(GATE_OPEN, LOCAL | OPEN),
    *(bound(t, LOCAL | facts, each) for t, facts, each in PORT_SECURITY_ENTRIES),
    bound(ANNOUNCE_RARP, LOCAL | GATED),
    bound(ANNOUNCE_GARP, LOCAL | GATED, Each.PER_IP),
    bound(SOURCE_DELIVERS_FROM_TUNNEL, LOCAL | OPEN | Fact.COPY),
    bound(SOURCE_SENDS_TO_DESTINATION, LOCAL | OPEN | Fact.COPY),
    bound(LOOKS_UP_DELIVERY_GATE, LOCAL | GATED),
    bound(LOOKS_UP_DELIVERY_GATE, LOCAL | OPEN | Fact.NO_COPY),
    bound(DELIVERY_CLOSED, LOCAL | GATED),
    bound(DELIVERY_OPEN, LOCAL | OPEN),
    bound(DESTINATION_TO_SOURCE, LOCAL | GATED | Fact.COPY),
    bound(DESTINATION_BACK_TO_SOURCE, LOCAL | GATED | Fact.COPY),
    bound(DESTINATION_HOLDS, LOCAL | GATED | Fact.NO_COPY),
    bound(LOOKUP_LOCAL, LOCAL),
    bound(LOOKUP_REMOTE, REMOTE | Fact.NO_COPY),
    bound(LOOKUP_REMOTE_VIA_DESTINATION, REMOTE | Fact.COPY),
    bound(LOOKUP_LEFT_FROM_TUNNEL, REMOTE | GATED),
    bound(ARP_REPLY, Fact(0), Each.PER_IP),
])


class L2App(App):
    name = "l2"
    app_id = L2_PORT_FLOWS.app_id
    port_program = L2_PORT_FLOWS

    def switch_flows(self, switch: LogicalSwitch, view: View) -> list[Flow]:
        """Tunnel classification wherever the network is needed; flooding where it is present."""
        if switch.id not in view.needed_switches():
            return []
        vni, cookie = switch.segmentation_id, self.cookie(switch.id)
        flows = [Flow(CLASSIFY, 50, match(tunnel_id=vni), (SetField("reg6", 0),), goto=ARP_RESPONDER,
                      write_metadata=(vni, ALL_ONES_64), cookie=cookie)]
        if not view.switch_is_present(switch.id):
            return flows
        # A pending destination's VIF is not flooded to either: its VM does not run here yet.
        local = [Output(view.ofport(p)) for p in view.local_ports(switch.id) if not view.is_pending(p)]
        remote = [Output(view.tunnels[c]) for c in view.remote_chassis_of(switch.id)]
        to_tunnels = [SetField("tunnel_id", vni)] + remote if remote else []
        flows += [
            Flow(L2_LOOKUP, 50, match(metadata=vni, eth_dst=(MULTICAST_BIT, MULTICAST_BIT)),
                 goto=FLOOD, cookie=cookie),
            Flow(FLOOD, 100, match(metadata=vni, reg6=0), tuple(local), cookie=cookie),
            Flow(FLOOD, 50, match(metadata=vni), tuple(local + to_tunnels), cookie=cookie),
        ]
        filtered_ofports = {view.ofport(p) for p in view.local_ports(switch.id) if filtered(p)}
        filtered_here = [o for o in local if o.port in filtered_ofports]
        if filtered_here:
            unfiltered = [o for o in local if o not in filtered_here]
            # IPv6 is not flooded to a port with security groups: they filter IPv4 only.
            flows += [Flow(FLOOD, 110, match(metadata=vni, reg6=0, eth_type=ETH_TYPE_IPV6), tuple(unfiltered),
                           cookie=cookie),
                      Flow(FLOOD, 60, match(metadata=vni, eth_type=ETH_TYPE_IPV6), tuple(unfiltered + to_tunnels),
                           cookie=cookie)]
            # IPv4 reaches such a port through its ingress filter: a copy per port, in the port's zone,
            # naming the port (reg8) so that l2_lookup outputs what the filter admits to it alone. The
            # copies come last: each ct forks, the packet going on untracked to the next.
            checked = [a for o in filtered_here
                       for a in (SetField("reg7", o.port), SetField("reg8", o.port),
                                 Ct(o.port, table=INGRESS_SECURITY_GROUPS))]
            flows += [Flow(FLOOD, 105, match(metadata=vni, reg6=0, eth_type=ETH_TYPE_IP),
                           tuple(unfiltered + checked), cookie=cookie),
                      Flow(FLOOD, 55, match(metadata=vni, eth_type=ETH_TYPE_IP),
                           tuple(unfiltered + to_tunnels + checked), cookie=cookie)]
            flows += [Flow(L2_LOOKUP, CHECKED_COPY, match(metadata=vni, reg8=o.port), (o,), cookie=cookie)
                      for o in filtered_here]
        return flows

    def static_flows(self) -> list[Flow]:
        cookie = self.cookie("pipeline")
        return [
            Flow(ARP_RESPONDER, 0, (), goto=L3_ENTRY, cookie=cookie),
            Flow(L3_ENTRY, 0, (), goto=INGRESS_CONNTRACK, cookie=cookie),
            # what no security group filters passes the conntrack tables (controller.apps.secgroups)
            Flow(EGRESS_CONNTRACK, 0, (), goto=ARP_RESPONDER, cookie=cookie),
            Flow(INGRESS_CONNTRACK, 0, (), goto=L2_LOOKUP, cookie=cookie),
            Flow(L2_LOOKUP, 0, (), goto=FLOOD, cookie=cookie),
        ]


def opened_gates(dumped: Iterable[Any], pending: Iterable[int]) -> list[int]:
    """Of the `pending` VIF ofports (pre-programmed destinations, their gates closed by the
    controller), those whose gate the datapath holds open (flows dumped from OVS: the closed gate has
    no action, a learned one loads reg5): their VM announced itself. A restarted controller finds here
    the announcements it missed while it was away. (Every other local port's gate is open: the
    controller's own flow.)"""
    waiting = set(pending)
    found = []
    for stats in dumped:
        ofport = dict(stats.match.items()).get("reg6") if stats.table_id == ACTIVATION_GATE else None
        if ofport in waiting and any(getattr(inst, "actions", None) for inst in stats.instructions):
            found.append(ofport)
    return found
