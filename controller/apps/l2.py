"""L2 app: classification, port security, ARP responder, destination lookup and flooding."""
from __future__ import annotations

from typing import Any, Iterable

from controller.apps.base import App
from controller.apps.builders import ALL_ONES_64, ARP_REPLY
from controller.apps.secgroups import filtered
from controller.pipeline import table
from controller.templates import Each, Fact, Param, PortProgram, bound, template, with_match
from controller.view import View
from dfflow.flows import (ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_RARP, MULTICAST_BIT, Ct, Flow, Learn,
                          Output, Resubmit, SetField, controller_output, match)
from dfflow.models import LogicalSwitch

CLASSIFY, PORT_SECURITY, ARP_RESPONDER = table("classify"), table("port_security"), table("arp_responder")
ACTIVATION_GATE = table("activation_gate")
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
CLASSIFY_PORT = template("classify_port", CLASSIFY, 100, dict(in_port=OFPORT), (SetField("reg6", OFPORT),),
                         goto=PORT_SECURITY, write_metadata=(VNI, ALL_ONES_64))
# A pre-programmed `announce` destination: classify looks the activation gate up (reg5) first.
CLASSIFY_GATED = template("classify_gated", CLASSIFY, 100, dict(in_port=OFPORT),
                          (SetField("reg6", OFPORT), Resubmit(ACTIVATION_GATE)),
                          goto=PORT_SECURITY, write_metadata=(VNI, ALL_ONES_64))
PS_ANY = template("ps_any", PORT_SECURITY, 100, dict(reg6=OFPORT), goto=EGRESS_CONNTRACK)
PS_MAC = template("ps_mac", PORT_SECURITY, 100, dict(eth_src=MAC, reg6=OFPORT), goto=EGRESS_CONNTRACK)
# QEMU announces a migrated guest with RARP from its MAC: always let that through.
PS_RARP = template("ps_rarp", PORT_SECURITY, 100, dict(eth_src=MAC, eth_type=ETH_TYPE_RARP, reg6=OFPORT),
                   goto=EGRESS_CONNTRACK)
PS_IP = template("ps_ip", PORT_SECURITY, 100, dict(eth_src=MAC, eth_type=ETH_TYPE_IP, ipv4_src=IP, reg6=OFPORT),
                 goto=EGRESS_CONNTRACK)
PS_ARP = template("ps_arp", PORT_SECURITY, 100,
                  dict(eth_src=MAC, eth_type=ETH_TYPE_ARP, arp_spa=IP, arp_sha=MAC, reg6=OFPORT), goto=EGRESS_CONNTRACK)
# Allowed address pairs: the port may also send from each pair's MAC and address or prefix (a
# port has pairs only with port security on).
PAIR_MAC, PAIR_IP, PAIR_MASK = Param.PAIR_MAC, Param.PAIR_IP, Param.PAIR_MASK
PS_PAIR_IP = template("ps_pair_ip", PORT_SECURITY, 100,
                      dict(eth_src=PAIR_MAC, eth_type=ETH_TYPE_IP, ipv4_src=PAIR_IP, reg6=OFPORT),
                      goto=EGRESS_CONNTRACK)
PS_PAIR_NET = with_match(PS_PAIR_IP, "ps_pair_net", ipv4_src=(PAIR_IP, PAIR_MASK))
PS_PAIR_ARP = template("ps_pair_arp", PORT_SECURITY, 100,
                       dict(eth_src=PAIR_MAC, eth_type=ETH_TYPE_ARP, arp_spa=PAIR_IP, arp_sha=PAIR_MAC, reg6=OFPORT),
                       goto=EGRESS_CONNTRACK)
PS_PAIR_ARP_NET = with_match(PS_PAIR_ARP, "ps_pair_arp_net", arp_spa=(PAIR_IP, PAIR_MASK))
PORT_SECURITY_ENTRIES = ((PS_ANY, Fact.PS_OFF, Each.ONCE), (PS_MAC, Fact.PS_MAC, Each.ONCE),
                         (PS_RARP, Fact.PS_IPS, Each.ONCE), (PS_IP, Fact.PS_IPS, Each.PER_IP),
                         (PS_ARP, Fact.PS_IPS, Each.PER_IP),
                         (PS_PAIR_IP, Fact(0), Each.PER_PAIR_HOST), (PS_PAIR_NET, Fact(0), Each.PER_PAIR_NET),
                         (PS_PAIR_ARP, Fact(0), Each.PER_PAIR_HOST), (PS_PAIR_ARP_NET, Fact(0), Each.PER_PAIR_NET))

# A pre-programmed destination: the VM's first RARP or GARP opens its egress and its ingress in
# the datapath, in the same action list, and tells the controller, which activates the port and
# publishes. Until then the gated port-security flows drop what the VM sends, and the gated lookup
# drops what is sent to it (an `announce` migration copies the port's traffic here: delivered to
# a VM that is not running here yet, it would be a duplicate, or queued in a paused guest's tap).
# Egress: the gate is a flow of the controller's (reg5 stays 0), which the announcement re-learns
# under the same key (table, priority, match) to set reg5=1 for this VIF. No timeout: the VM's
# egress stays open for as long as the migration is unresolved, however long the controller is
# away; the controller's next write of the port (activation, step 2 or 3, an abort) deletes the key.
GATE_CLOSED = template("gate_closed", ACTIVATION_GATE, 100, dict(reg6=OFPORT))
OPENS_GATE = Learn(ACTIVATION_GATE, GATE_CLOSED.priority, 0, 0, Param.COOKIE, (("reg6", OFPORT),), (("reg5", 1),))

# Ingress, until the announcement: what a tunnel brings is a copy (the original went to the
# source, where the VM runs): dropped. What this chassis' own VIFs send goes to the source
# (COPY_TUNNEL: the tunnel there, for a gated port), or is dropped if there is no tunnel to it.
LOOKUP_GATED_FROM_TUNNEL = template("lookup_gated_from_tunnel", L2_LOOKUP, 110,
                                   dict(metadata=VNI, eth_dst=MAC, reg6=0))
LOOKUP_GATED_VIA_SOURCE = template("lookup_gated_via_source", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC),
                                   (SetField("tunnel_id", VNI), Output(COPY_TUNNEL)))
LOOKUP_GATED = template("lookup_gated", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC))
# The announcement learns, over both of those flows (their own keys: table, priority, match), the
# delivery to the VIF it came in on. No timeout: each key is the controller's, whose next write of
# it (activation, step 2 or 3, an abort) replaces or deletes the learned flow.
OPENS_INGRESS = tuple(Learn(L2_LOOKUP, t.priority, 0, 0, Param.COOKIE, tuple((f, v) for f, v, _ in t.match), (),
                            output_in_port=True) for t in (LOOKUP_GATED_FROM_TUNNEL, LOOKUP_GATED))
ANNOUNCE_RARP = template("announce_rarp", CLASSIFY, 110, dict(in_port=OFPORT, eth_type=ETH_TYPE_RARP, eth_src=MAC),
                         (OPENS_GATE, *OPENS_INGRESS, controller_output()))
ANNOUNCE_GARP = template("announce_garp", CLASSIFY, 110,
                         dict(in_port=OFPORT, eth_type=ETH_TYPE_ARP, eth_src=MAC, arp_spa=IP, arp_tpa=IP),
                         (OPENS_GATE, *OPENS_INGRESS, controller_output()))

# -- where packets for the port go ----------------------------------------------------------------
LOOKUP_LOCAL = template("lookup_local", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC), (Output(OFPORT),))
LOOKUP_REMOTE = template("lookup_remote", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC),
                         (SetField("tunnel_id", VNI), Output(TUNNEL)))
# While an `announce` migration is in flight, its destination gets a copy too: from the chassis
# where the packet entered the overlay, and only from there (the source does not copy again what
# a tunnel brought it: the chassis that sent it copied it already).
LOOKUP_LOCAL_COPY = template("lookup_local_copy", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC),
                             (Output(OFPORT), SetField("tunnel_id", VNI), Output(COPY_TUNNEL)))
LOOKUP_LOCAL_FROM_TUNNEL = template("lookup_local_from_tunnel", L2_LOOKUP, 110,
                                    dict(metadata=VNI, eth_dst=MAC, reg6=0), (Output(OFPORT),))
LOOKUP_REMOTE_COPY = template("lookup_remote_copy", L2_LOOKUP, 100, dict(metadata=VNI, eth_dst=MAC),
                              (SetField("tunnel_id", VNI), Output(TUNNEL), Output(COPY_TUNNEL)))
# The source, once the VM has left it (activated on its destination, or the source unplugged before
# any activation), until the migration ends: a tunnel's packet for the port still arriving here was
# sent while its sender copied the port's traffic, so the destination has it already; forwarded
# there, it would arrive twice. Dropped.
LOOKUP_LEFT_FROM_TUNNEL = template("lookup_left_from_tunnel", L2_LOOKUP, 110, dict(metadata=VNI, eth_dst=MAC, reg6=0))

L2_PORT_FLOWS = PortProgram(1, [
    bound(CLASSIFY_PORT, LOCAL | OPEN),
    bound(CLASSIFY_GATED, LOCAL | GATED),
    bound(GATE_CLOSED, LOCAL | GATED),
    *(bound(t, LOCAL | OPEN | facts, each) for t, facts, each in PORT_SECURITY_ENTRIES),
    *(bound(with_match(t, t.name + "_gated", reg5=1), LOCAL | GATED | facts, each)
      for t, facts, each in PORT_SECURITY_ENTRIES),
    bound(ANNOUNCE_RARP, LOCAL | GATED),
    bound(ANNOUNCE_GARP, LOCAL | GATED, Each.PER_IP),
    bound(LOOKUP_GATED_FROM_TUNNEL, LOCAL | GATED),
    bound(LOOKUP_GATED_VIA_SOURCE, LOCAL | GATED | Fact.COPY),
    bound(LOOKUP_GATED, LOCAL | GATED | Fact.NO_COPY),
    bound(LOOKUP_LOCAL, LOCAL | OPEN | Fact.NO_COPY),
    bound(LOOKUP_LOCAL_COPY, LOCAL | OPEN | Fact.COPY),
    bound(LOOKUP_LOCAL_FROM_TUNNEL, LOCAL | OPEN | Fact.COPY),
    bound(LOOKUP_REMOTE, REMOTE | Fact.NO_COPY),
    bound(LOOKUP_REMOTE_COPY, REMOTE | Fact.COPY),
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


def opened_gates(dumped: Iterable[Any]) -> list[int]:
    """The VIF ofports whose gate the datapath holds open (flows dumped from OVS: the controller's
    gate has no action, a learned one loads reg5): their VM announced itself. A restarted
    controller finds here the announcements it missed while it was away."""
    found = []
    for stats in dumped:
        ofport = dict(stats.match.items()).get("reg6") if stats.table_id == ACTIVATION_GATE else None
        if ofport is not None and any(getattr(inst, "actions", None) for inst in stats.instructions):
            found.append(ofport)
    return found
