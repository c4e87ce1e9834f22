"""Security groups app: stateful filtering of a port's IPv4 traffic with Open vSwitch's connection tracker.

On the chassis hosting the port (its local role: pre-programmed at step 1, moved at steps 2 and 3 like
every other port flow), what the port sends goes through the connection tracker in the port's zone (its
VIF's ofport, unique on the chassis) after port security, and what is sent to it, before the L2 lookup.
Packets of a connection the zone knows pass; a new connection passes, and is committed, only when a rule
of the port's groups allows it in that direction; the rest is dropped. As in Neutron, every port with port
security is filtered: one without groups has no rule, so nothing opens a connection to or from it (ARP
passes, and port security still applies). A port without port security, or one of the network's own
(device_owner network:*), is not filtered.

The flows are made by the compiled core (`dfflow._core.compile_secgroups`) from the port's rules as rows
(controller.apps.sg_rules); tests/sg_oracle.py is the Python reference they are held to. A rule naming a
remote group covers its members' addresses, so a member's addresses changing recomputes the ports whose
rules name its groups (controller.engine); when members times protocol matches outgrows their sum, the
rule is a conjunctive match (OpenFlow `conjunction`, ids `zone << 16 | n`), so the flows grow as the sum.

Connections survive a live migration: the destination's zone has never seen the port's connections, so
while the port migrates here and for ARRIVAL_WINDOW seconds after its migration ended (View.arrivals,
kept by the engine, closed by the daemon's timer) TCP packets without SYN, in either direction, are
committed as they come: an established stream resumes whichever end speaks first, and no new connection
can open through it (that needs a SYN). Elsewhere a TCP packet without SYN opens nothing, whatever the rules;
a switch that lost its zones (ovs-vswitchd restarted) gives every local port such a window (Engine.zones_lost).

A connection the rules no longer allow (a rule, a remote group's member or a group of the port gone) is cut:
the engine marks the plans that narrow a port's rules and controller.conntrack_sweep deletes the zone's
entries the remaining rules do not allow.
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from controller.apps.base import App
from controller.apps.sg_rules import rule_rows
from controller.pipeline import table
from controller.view import LOCAL, mac_int
from dfflow import core
from dfflow.flowbatch import LAYOUT, MAX_ACTIONS
from dfflow.flows import CT_EST, CT_INV, CT_NEW, CT_REL, CT_TRK, ETH_TYPE_IP, TCP_SYN, Flow, match
from dfflow.models import LogicalPort, SecurityGroupRule

if TYPE_CHECKING:
    from controller.view import View

EGRESS_CT, EGRESS_SG = table("egress_conntrack"), table("egress_security_groups")
INGRESS_CT, INGRESS_SG = table("ingress_conntrack"), table("ingress_security_groups")
ARP_RESPONDER, L2_LOOKUP = table("arp_responder"), table("l2_lookup")
# (table checked, where allowed packets go, the match field naming the remote end)
DIRECTIONS = {"egress": (EGRESS_SG, ARP_RESPONDER, "ipv4_dst"), "ingress": (INGRESS_SG, L2_LOOKUP, "ipv4_src")}
TRACKED_NEW = (CT_TRK | CT_NEW, CT_TRK | CT_NEW)
IPPROTO_TCP, IPPROTO_UDP = 6, 17
DHCP_SERVER, DHCP_CLIENT = 67, 68
DHCP_REPLY = match(eth_type=ETH_TYPE_IP, ip_proto=IPPROTO_UDP, udp_src=DHCP_SERVER, udp_dst=DHCP_CLIENT)
DHCP = 250  # above the conntrack verdicts: a reply is neither tracked as one connection nor a rule's
CONNTRACK, RULE = 100, 100  # the conntrack tables' port flows; a rule's flows
CONJUNCTION = 95  # a conjunctive rule's flows: apart from the plain rules' (a clause may share their match)
# A TCP packet without SYN new to the zone opens nothing (priority 150): not even where a rule would allow it
# read as a new connection (userspace and kernel conntrack both take it as +new), else a connection cut
# because its rule went (controller.conntrack_sweep) would be committed again by its other end's next packet.
NOT_OPENING = 150
MID_STREAM = 160  # an arriving port's TCP without SYN: above NOT_OPENING, which drops it for the others
MAX_CONJUNCTIONS = MAX_ACTIONS  # per port and direction: a clause's flow holds one action per conjunction


ARRIVAL_WINDOW = 10.0  # s after a migration to this chassis ended that its connections are still admitted


def arriving(port: LogicalPort, view: "View") -> bool:
    return port.id in view.arrivals


NO_ROWS = np.zeros(0, LAYOUT.dtype)  # shared by every port without rows here: read-only
NO_ROWS.flags.writeable = False


def filtered(port: LogicalPort) -> bool:
    """Neutron's rule: port security means security groups, none of them meaning nothing allowed; the
    network's own ports (router interfaces, DHCP) are trusted."""
    return port.port_security and not port.device_owner.startswith("network:")


def conjunction_id(zone: int, n: int) -> int:
    """The id of the port's n-th conjunctive match (n from 1): unique on the chassis, as zones are."""
    return zone << 16 | n


def group_members(view: "View") -> dict[str, list[LogicalPort]]:
    members: dict[str, list[LogicalPort]] = defaultdict(list)
    for port in view.ports():
        for group in port.security_groups:
            members[group].append(port)
    return members


def rules_of(view: "View", groups: list[str]) -> list[SecurityGroupRule]:
    wanted = set(groups)
    return sorted((r for r in view.objects[SecurityGroupRule.table].values() if r.secgroup in wanted),
                  key=lambda r: r.id)


PROGRAM = core.SecGroupProgram(LAYOUT, dict(
    egress_conntrack=EGRESS_CT, egress_security_groups=EGRESS_SG, egress_next=ARP_RESPONDER,
    ingress_conntrack=INGRESS_CT, ingress_security_groups=INGRESS_SG, ingress_next=L2_LOOKUP,
    conntrack_priority=CONNTRACK, rule_priority=RULE, conjunction_priority=CONJUNCTION,
    mid_stream_priority=MID_STREAM, max_conjunctions=MAX_CONJUNCTIONS))


class SecurityGroupsApp(App):
    name = "secgroups"
    app_id = 4
    makes_port_rows = True

    def port_rows(self, port: LogicalPort, view: "View") -> np.ndarray:
        """The port's flows on this chassis as rows of the flow record, made by the compiled core: none
        but where the port runs (its groups are enforced there)."""
        if not filtered(port) or view.placed_role(port) != LOCAL:  # (most ports: no role record made)
            return NO_ROWS
        role = view.port_role(port)
        rules = rules_of(view, port.security_groups)
        members = group_members(view) if any(r.remote_group for r in rules) else {}
        rows, addresses = rule_rows(rules, members)
        macs = np.array(sorted({mac_int(port.mac)} | {mac_int(p.mac_address.lower())
                                                      for p in port.allowed_address_pairs}), np.uint64)
        return core.compile_secgroups(PROGRAM, role.ofport, view.vni(port.lswitch), self.cookie(port.id), macs,
                                      rows, addresses, arriving(port, view))

    def narrows(self, deleted: np.ndarray) -> bool:
        """A rule's flow (or a conjunctive match's) deleted: a rule, a remote member or a group went."""
        sg_tables = np.isin(deleted["table"], [EGRESS_SG, INGRESS_SG])
        return bool(np.any(sg_tables & np.isin(deleted["priority"], [RULE, CONJUNCTION])))

    def static_flows(self) -> list[Flow]:
        cookie = self.cookie("pipeline")
        flows = []  # the conntrack tables' misses (pass) are the pipeline's own, in controller.apps.l2
        for sg_table, allowed_to, _ in DIRECTIONS.values():
            flows += [Flow(sg_table, 300, match(ct_state=(CT_TRK | CT_INV, CT_TRK | CT_INV)), cookie=cookie),
                      Flow(sg_table, 200, match(ct_state=(CT_TRK | CT_EST, CT_TRK | CT_EST)), goto=allowed_to,
                           cookie=cookie),
                      Flow(sg_table, 200, match(ct_state=(CT_TRK | CT_REL, CT_TRK | CT_REL)), goto=allowed_to,
                           cookie=cookie)]
            flows.append(Flow(sg_table, NOT_OPENING, match(ct_state=TRACKED_NEW, eth_type=ETH_TYPE_IP,
                                                           ip_proto=IPPROTO_TCP, tcp_flags=(0, TCP_SYN)),
                              cookie=cookie))
        # As Neutron: a filtered port may not answer DHCP, and receives DHCP replies whatever its groups
        # (its request went out to the broadcast address, so the reply is a new connection to conntrack).
        flows += [Flow(EGRESS_SG, DHCP, DHCP_REPLY, cookie=cookie),
                  Flow(INGRESS_SG, DHCP, DHCP_REPLY, goto=L2_LOOKUP, cookie=cookie)]
        return flows
