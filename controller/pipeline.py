"""The OpenFlow pipeline of br-int, declared as data.

Tables are referred to by name everywhere (`TABLES["l2_lookup"].id`); `docs/pipeline.md`
is generated from this declaration (`python -m controller.pipeline > docs/pipeline.md`),
and `check_flow` refuses a flow that sits in, or jumps to, a table not declared here.

Registers and metadata:
  reg5      1 when a VIF's activation gate is open (every local port's, but a pending destination's
            until its first RARP/GARP learns it open); port security requires it
  metadata  the logical network of the packet: the switch's VNI (its segmentation id),
            written at classification and rewritten by the router when it routes
  reg6      the VIF ofport the packet came from on this chassis; 0 when it came from a tunnel
            (flood flows use it to never send a tunnel's packet back into the overlay)
  reg7      ingress_conntrack: the ofport (conntrack zone) of the local port a packet is for
  reg8      a flooded IPv4 packet's copy for one local port with port security, sent through that
            port's ingress filter: the port's ofport, which l2_lookup outputs it to (0 otherwise)
  reg9      ingress_conntrack: where a packet for a local port (or a migrating one) goes (0
            undecided, 1 delivered on this chassis: its delivery gate open, 2 on a pending
            destination: the VM has not announced itself here yet, so it goes back to the source)
  ct_state  what Open vSwitch's connection tracker says of the packet, in the conntrack zone of the
            port whose security groups are checked (its VIF ofport on this chassis)
  conj_id   the conjunctive match (a rule with a large remote group) the packet completed, in the
            security-group tables
"""
from __future__ import annotations

from dataclasses import dataclass

from dfflow.flows import Ct, Flow, Learn, Resubmit


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    purpose: str
    matches: str
    miss: str
    next_tables: tuple[str, ...] = ()
    resubmits: tuple[str, ...] = ()  # tables its flows may look up inline (Nicira resubmit)
    conntrack: tuple[str, ...] = ()  # tables its flows continue in after the connection tracker (ct)


PIPELINE: tuple[Table, ...] = (
    Table(0, "classify",
          "Gives every packet its logical network. A VIF's packets get metadata=VNI and reg6=ofport; "
          "a tunnel's packets get metadata=tun_id (the VNI) and reg6=0; a VIF's packets look its "
          "activation gate up. A port awaiting activation (announce strategy) sends its RARP/GARP to "
          "the controller (priority 110).",
          "in_port (VIF) | tunnel_id (tunnel) | in_port+eth_type (pending VIF announcements)",
          "drop", ("port_security", "arp_responder"), resubmits=("activation_gate",)),
    Table(5, "activation_gate",
          "Every local VIF is looked up here (resubmit from classify): its gate sets reg5=1, which "
          "port security requires. A pre-programmed announce destination's gate is closed (no action: "
          "reg5 stays 0, its VM's packets are dropped). Its first RARP/GARP re-learns that flow (same "
          "key, no timeout), in the datapath, to set reg5=1 for that VIF, so the VM's egress opens at "
          "once, before the controller hears of it, and stays open however long the controller is "
          "away; the same announcement opens its ingress in delivery_gate. The activation writes the "
          "controller's open gate over the learned one: the same flow, so nothing the datapath "
          "cached for the VM changes.",
          "reg6",
          "nothing (reg5 stays 0)"),
    Table(10, "port_security",
          "Egress port security: a VM may only send from its own MAC and, for IPv4 and ARP, from "
          "its own addresses. Ports with port security off pass unchecked.",
          "reg6, eth_src, eth_type, ipv4_src (an allowed address pair's may be a prefix) | arp_spa/arp_sha",
          "drop", ("egress_conntrack",)),
    Table(12, "egress_conntrack",
          "Security groups, egress: the IPv4 packets of a local port with port security (with or without "
          "groups: none means no rule) go through the connection tracker in the port's zone (its ofport) "
          "and on to egress_security_groups. Other packets (ARP, ports without port security or of the "
          "network, device_owner network:*) pass.",
          "reg6, eth_type=IP",
          "goto arp_responder", ("arp_responder",), conntrack=("egress_security_groups",)),
    Table(14, "egress_security_groups",
          "Packets of connections the port's zone knows (established or related) pass, invalid ones are "
          "dropped; a new connection passes, and is committed in the port's zone, only if an egress rule "
          "of the port's groups allows it: one flow per (rule, remote address or prefix, port-range "
          "prefix) at priority 100, a remote group's members' addresses expanded -- or, when members "
          "times protocol matches outgrows their sum, a conjunctive match at priority 95: one flow per "
          "member address (conjunction clause 1/2), one per protocol match (2/2), and one on conj_id "
          "(zone << 16 | n, the port's n-th) that commits. A TCP packet without SYN new to the zone opens "
          "nothing, whatever the rules (dropped at priority 150: a connection cut because what allowed it "
          "went, see controller.conntrack_sweep, is not committed again by its next packet) -- except "
          "while the port migrates to this chassis and a while after: then it is committed (priority "
          "160), its established connections resume here, no new one opens. Everything else is dropped. A DHCP server's reply (UDP 67 -> 68) from "
          "a filtered port is dropped first (priority 250), whatever its rules: as in Neutron, a VM with "
          "port security cannot answer DHCP.",
          "ct_state | udp_src=67, udp_dst=68 | reg6, ct_state=+new, ip_proto, ipv4_dst, tcp_dst/udp_dst/sctp_dst "
          "| icmpv4_type/code | reg6, conj_id",
          "drop", ("arp_responder",)),
    Table(20, "arp_responder",
          "Answers ARP requests for every known address of the network (ports, router ports, "
          "floating IPs) in place, so ARP never floods the overlay for known addresses.",
          "metadata, eth_type=ARP, arp_op=1, arp_tpa",
          "goto l3_entry", ("l3_entry",)),
    Table(30, "l3_entry",
          "Splits routed from switched traffic: packets to a router port's MAC go to l3_lookup, "
          "packets to the MAC of a floating IP whose port is on this chassis go to dnat.",
          "metadata, eth_dst (router port MACs, floating IP MACs)",
          "goto ingress_conntrack", ("dnat", "l3_lookup", "ingress_conntrack")),
    Table(35, "dnat",
          "Floating IP inbound, on the chassis hosting the port: destination floating IP -> fixed "
          "IP, TTL decremented, source MAC -> the router port's, destination MAC -> the port's, "
          "metadata -> the port's network; then the L2 lookup delivers it.",
          "metadata (external network), eth_type=IP, ipv4_dst (floating IP)",
          "drop", ("ingress_conntrack",)),
    Table(40, "l3_lookup",
          "Distributed routing, on the chassis where the packet enters. Router port IPs answer "
          "ICMP echo in place (priority 300). A destination inside another subnet of the same "
          "router (priority 200): TTL decremented, source MAC -> that router port's MAC, metadata "
          "-> that network, then l3_resolve. A port with a floating IP sending elsewhere "
          "(priority 100): source IP -> floating IP, source MAC -> the floating IP's MAC, metadata "
          "-> the external network, then l3_resolve. An expired TTL (dec_ttl at 1 or 0) is dropped: "
          "the controller does not ask OVS for invalid-TTL packets, so no ICMP time exceeded.",
          "metadata, eth_type=IP, ipv4_dst (subnets, router IPs), ipv4_src (fixed IPs with a floating IP)",
          "drop", ("l3_resolve",)),
    Table(45, "l3_resolve",
          "Next hop MAC of a routed packet: (network, destination IP) -> destination MAC of the "
          "port (or floating IP) that owns the address; then the L2 lookup finds where it lives.",
          "metadata, eth_type=IP, ipv4_dst",
          "drop", ("ingress_conntrack",)),
    Table(46, "delivery_gate",
          "Every packet for a local port looks the port up here (resubmit from ingress_conntrack): "
          "its open gate sets reg9=1, delivered here. A pending announce destination's gate is "
          "closed: reg9 stays 2 (the VM has not announced itself here: the packet goes back to the "
          "source). Its first RARP/GARP re-learns that flow (same key, no timeout), in the datapath, "
          "to set reg9=1: from that packet on the destination delivers to its own VIF. The activation "
          "writes the controller's open gate, the same flow, over the learned one.",
          "metadata, eth_dst",
          "nothing (reg9 stays 2)"),
    Table(47, "ingress_conntrack",
          "One decision per packet for a local port, before any ingress filter (priorities 110-120, "
          "reg9): its delivery_gate says deliver here, unless an announce migration moves it: "
          "every chassis sends such a packet to the destination alone "
          "(the source's own VIFs too: priority 110), and the destination looks the port up in "
          "delivery_gate: until the VM announces itself there, the packet goes back to the source "
          "(tun_id=VNI, out of the tunnel it came in by if it came from the source: OFPP_IN_PORT; "
          "dropped if there is no tunnel to the source), from then on it is delivered here. The "
          "source delivers what a tunnel brings for the port (reg6=0, priority 120) and never "
          "forwards it again. A packet decided for delivery here (reg9=1) is looked up in this "
          "table again and takes the usual way. "
          "Security groups, ingress, on the chassis hosting the port (every path to a port passes here "
          "before the L2 lookup: switched, routed, DNATed, from a tunnel): an IPv4 packet for a local "
          "port with port security (its MAC or an allowed address pair's) gets reg7=the port's zone and "
          "goes through the connection tracker in that zone on to ingress_security_groups. IPv6 for a local "
          "port with port security is dropped (the groups filter IPv4 only: IPv6 rules are stored, not "
          "enforced). Others pass.",
          "metadata, eth_dst, eth_type=IP|IPv6 | metadata, eth_dst, reg9 (+ reg6=0 on the source, "
          "in_port on the destination: a migrating port's packet)",
          "goto l2_lookup", ("l2_lookup",), resubmits=("delivery_gate", "ingress_conntrack"),
          conntrack=("ingress_security_groups",)),
    Table(48, "ingress_security_groups",
          "As egress_security_groups, for what arrives: established and related packets pass, invalid "
          "ones are dropped, a new connection passes (committed in the port's zone) only if an ingress "
          "rule allows it, by source address or prefix, remote group members (a conjunctive match when "
          "that pays, as in egress_security_groups), protocol and port range; TCP without SYN new to the "
          "zone is dropped, but committed while the port migrates here. DHCP replies (UDP 67 -> 68) pass whatever the rules "
          "(priority 250), as Neutron lets them; no filtered port can send one (egress_security_groups). "
          "A flood's copy (reg8 set, see flood) is checked here like a packet sent to the port.",
          "ct_state | udp_src=67, udp_dst=68 | reg7, ct_state=+new, ip_proto, ipv4_src, tcp_dst/udp_dst/sctp_dst | icmpv4_type/code "
          "| reg7, conj_id",
          "drop", ("l2_lookup",)),
    Table(50, "l2_lookup",
          "Destination lookup by (network, MAC): a local port is output to its ofport; a remote "
          "port gets tun_id=VNI and is output to the tunnel of the chassis hosting it. Broadcast, "
          "multicast and unknown unicast go to flood. While an announce migration is in flight, a "
          "remote port is output to the tunnel of its destination alone, which decides where each "
          "packet goes (ingress_conntrack): what reaches l2_lookup for a local port, a migrating one "
          "too, is delivered to it. Once the VM has left the source (activated on the destination, "
          "or the source unplugged first), the source drops what tunnels still bring it for the port "
          "(priority 110, reg6=0: sent back by the destination before the announcement, in flight "
          "across the switchover) until the migration ends. So a packet for a migrating port "
          "exists in one copy, and reaches the VM once or not at all. A flood's copy for "
          "a port with port security that its ingress filter let through (reg8=the port's ofport) is "
          "output to that port only (priority 200), never flooded again.",
          "metadata, eth_dst (+ reg6=0 on the source an announce migration's VM left: a tunnel's "
          "packet) | metadata, reg8 (a flood's checked copy)",
          "goto flood", ("flood",)),
    Table(60, "flood",
          "Floods a network: to its local ports (not a pending announce destination's VIF: its VM "
          "does not run here yet) and, for packets from local ports only (reg6!=0), to every "
          "chassis hosting a port of the network. IPv6 is not flooded to local ports with security "
          "groups (priorities 110 and 60). IPv4 reaches a local port with port security only through "
          "its ingress filter (priorities 105 and 55): its copy gets reg7=reg8=the port's ofport and "
          "goes through the connection tracker in the port's zone on to ingress_security_groups, which "
          "admits it as it would a packet sent to the port (a broadcast or multicast from a member of an "
          "allowed group, or a rule's source; a DHCP reply) and hands it to l2_lookup, which outputs it "
          "to that port alone. ARP and other non-IP frames reach every local port directly: port security "
          "always admits ARP.",
          "metadata, reg6=0 (from a tunnel), eth_type=IP|IPv6",
          "drop", conntrack=("ingress_security_groups",)),
)

TABLES: dict[str, Table] = {t.name: t for t in PIPELINE}
TABLE_IDS: dict[int, Table] = {t.id: t for t in PIPELINE}


def table(name: str) -> int:
    return TABLES[name].id


class PipelineError(ValueError):
    pass


def check_flow(flow: Flow) -> Flow:
    """Refuse a flow in an undeclared table or jumping to one it may not reach."""
    current = TABLE_IDS.get(flow.table)
    if current is None:
        raise PipelineError(f"flow in undeclared table {flow.table}: {flow}")
    if flow.goto is not None:
        target = TABLE_IDS.get(flow.goto)
        if target is None or target.name not in current.next_tables:
            raise PipelineError(f"table {current.name} may not jump to table {flow.goto}: {flow}")
    for action in flow.actions:
        if isinstance(action, Ct) and action.table is not None:
            target = TABLE_IDS.get(action.table)
            if target is None or target.name not in current.conntrack:
                raise PipelineError(f"table {current.name} may not continue in table {action.table} after "
                                    f"conntrack: {flow}")
        if isinstance(action, Resubmit):
            target = TABLE_IDS.get(action.table)
            if target is None or target.name not in current.resubmits:
                raise PipelineError(f"table {current.name} may not resubmit to table {action.table}: {flow}")
        if isinstance(action, Learn) and action.table not in TABLE_IDS:
            raise PipelineError(f"flow learns into undeclared table {action.table}: {flow}")
    return flow


def render_markdown() -> str:
    lines = ["# br-int pipeline", "",
             "Generated from `controller/pipeline.py` (`python -m controller.pipeline > docs/pipeline.md`).",
             "", "## Registers", "", "| register | holds |", "| --- | --- |",
             "| metadata | the packet's logical network: its switch's VNI (segmentation id) |",
             "| reg5 | 1 when a VIF's activation gate is open: every local port's, a pending (announce) "
             "destination's once its first RARP/GARP learned it open; port security requires it |",
             "| reg6 | the VIF ofport the packet entered from on this chassis; 0 if it came from a tunnel |",
             "| reg7 | ingress_conntrack on: the ofport (conntrack zone) of the local port the packet is for |",
             "| reg8 | a flood's IPv4 copy for one local port with port security, checked by its ingress filter: "
             "that port's ofport, which l2_lookup outputs it to; 0 otherwise |",
             "| reg9 | in ingress_conntrack, for a local or migrating port: 0 undecided, 1 delivered on "
             "this chassis (its delivery gate open), 2 on a pending destination before the VM announced "
             "itself there: back to the source |",
             "| ct_state | the connection tracker's verdict, in the zone of the port whose security groups "
             "are checked: its VIF's ofport on this chassis |",
             "| conj_id | in the security-group tables: the conjunctive match (a rule with a large remote "
             "group) the packet completed, `zone << 16 | n` |",
             "", "## Cookies", "",
             "Every flow's cookie is `app id << 56 | 56-bit hash of the object it serves` "
             "(see `controller/apps/base.py`), so the controller can find, diff and remove exactly "
             "one app's flows for one object, and a restarted controller reconciles by cookie.",
             "", "## Tables", "", "| id | name | purpose | matches | on miss | next |",
             "| --- | --- | --- | --- | --- | --- |"]
    for t in PIPELINE:
        nexts = (list(t.next_tables) + [f"{r} (resubmit)" for r in t.resubmits]
                 + [f"{c} (after conntrack)" for c in t.conntrack])
        lines.append(f"| {t.id} | `{t.name}` | {t.purpose} | {t.matches} | {t.miss} | "
                     f"{', '.join(nexts) or '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render_markdown(), end="")
