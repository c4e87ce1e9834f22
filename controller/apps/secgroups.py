"""Security groups app: stateful filtering of a port's IPv4 traffic with Open vSwitch's connection tracker.

On the chassis hosting the port (its local role: pre-programmed at step 1, moved at steps 2 and 3 like
every other port flow), what the port sends goes through the connection tracker in the port's zone (its
VIF's ofport, unique on the chassis) after port security, and what is sent to it, before the L2 lookup.
Packets of a connection the zone knows pass; a new connection passes, and is committed, only when a rule
of the port's groups allows it in that direction; the rest is dropped. Rules naming a remote group are
expanded into its members' addresses, so a member's addresses changing recomputes the ports whose rules
name its groups (controller.engine). Only ports with port security and at least one group are filtered:
a port without groups keeps port security alone.

Connections survive a live migration: the destination's zone has never seen the port's connections, so
while the port migrates here and for ARRIVAL_WINDOW seconds after its migration ended (View.arrivals,
kept by the engine, closed by the daemon's timer) TCP packets without SYN, in either direction, are
committed as they come: an established stream resumes whichever end speaks first, and no new connection
can open through it (that needs a SYN).
"""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from controller.apps.base import App
from controller.apps.sg_match import rule_matches
from controller.pipeline import table
from controller.view import mac_int
from dfflow.flows import (CT_EST, CT_INV, CT_NEW, CT_REL, CT_TRK, ETH_TYPE_IP, ETH_TYPE_IPV6, TCP_SYN, Ct, Flow,
                          SetField, match)
from dfflow.models import LogicalPort, SecurityGroupRule

if TYPE_CHECKING:
    from controller.view import View

EGRESS_CT, EGRESS_SG = table("egress_conntrack"), table("egress_security_groups")
INGRESS_CT, INGRESS_SG = table("ingress_conntrack"), table("ingress_security_groups")
ARP_RESPONDER, L2_LOOKUP = table("arp_responder"), table("l2_lookup")
# (table checked, where allowed packets go, the match field naming the remote end)
DIRECTIONS = {"egress": (EGRESS_SG, ARP_RESPONDER, "ipv4_dst"), "ingress": (INGRESS_SG, L2_LOOKUP, "ipv4_src")}
TRACKED_NEW = (CT_TRK | CT_NEW, CT_TRK | CT_NEW)
IPPROTO_TCP = 6
MID_STREAM = 90  # below the rules: what they allow is committed by them


ARRIVAL_WINDOW = 10.0  # s after a migration to this chassis ended that its connections are still admitted


def arriving(port: LogicalPort, view: "View") -> bool:
    return port.id in view.arrivals


def filtered(port: LogicalPort) -> bool:
    return port.port_security and bool(port.security_groups)


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


class SecurityGroupsApp(App):
    name = "secgroups"
    app_id = 4

    def add_local_port(self, port: LogicalPort, view: "View") -> list[Flow]:
        role = view.port_role(port)
        if role is None or not role.local or not filtered(port):
            return []
        zone, cookie = role.ofport, self.cookie(port.id)
        vni, mac = view.vni(port.lswitch), mac_int(port.mac)
        destinations = sorted({mac} | {mac_int(p.mac_address.lower()) for p in port.allowed_address_pairs})
        # The port's packets are known by the VIF they came from (reg6), packets for it by their
        # destination MAC, its own or an allowed address pair's, which marks them with reg7.
        whose = {"egress": {"reg6": zone}, "ingress": {"reg7": zone}}
        flows = {f.key: f for f in [
            Flow(EGRESS_CT, 100, match(reg6=zone, eth_type=ETH_TYPE_IP), (Ct(zone, table=EGRESS_SG),), cookie=cookie),
            *(Flow(INGRESS_CT, 100, match(metadata=vni, eth_dst=dst, eth_type=ETH_TYPE_IP),
                   (SetField("reg7", zone), Ct(zone, table=INGRESS_SG)), cookie=cookie)
              for dst in destinations),
            # the groups filter IPv4 only: IPv6 for the port is dropped, not let past them (nor flooded, l2)
            *(Flow(INGRESS_CT, 100, match(metadata=vni, eth_dst=dst, eth_type=ETH_TYPE_IPV6), cookie=cookie)
              for dst in destinations)]}
        members = group_members(view) if any(r.remote_group for r in rules_of(view, port.security_groups)) else {}
        for rule in rules_of(view, port.security_groups):
            sg_table, allowed_to, remote_field = DIRECTIONS[rule.direction]
            for found in rule_matches(rule, members.get(rule.remote_group or "", [])):
                fields = dict(found)
                remote = fields.pop("remote")
                if remote is not None:
                    fields[remote_field] = remote
                flow = Flow(sg_table, 100, match(**whose[rule.direction], ct_state=TRACKED_NEW, eth_type=ETH_TYPE_IP,
                                                 **fields),
                            (Ct(zone, commit=True),), goto=allowed_to, cookie=cookie)
                flows[flow.key] = flow  # two rules may allow the same thing
        if arriving(port, view):
            for direction, (sg_table, allowed_to, _) in DIRECTIONS.items():
                flow = Flow(sg_table, MID_STREAM, match(**whose[direction], ct_state=TRACKED_NEW, eth_type=ETH_TYPE_IP,
                                                        ip_proto=IPPROTO_TCP, tcp_flags=(0, TCP_SYN)),
                            (Ct(zone, commit=True),), goto=allowed_to, cookie=cookie)
                flows[flow.key] = flow
        return list(flows.values())

    def add_remote_port(self, port: LogicalPort, view: "View") -> list[Flow]:
        return []  # a port's groups are enforced where it runs

    def static_flows(self) -> list[Flow]:
        cookie = self.cookie("pipeline")
        flows = []  # the conntrack tables' misses (pass) are the pipeline's own, in controller.apps.l2
        for sg_table, allowed_to, _ in DIRECTIONS.values():
            flows += [Flow(sg_table, 300, match(ct_state=(CT_TRK | CT_INV, CT_TRK | CT_INV)), cookie=cookie),
                      Flow(sg_table, 200, match(ct_state=(CT_TRK | CT_EST, CT_TRK | CT_EST)), goto=allowed_to,
                           cookie=cookie),
                      Flow(sg_table, 200, match(ct_state=(CT_TRK | CT_REL, CT_TRK | CT_REL)), goto=allowed_to,
                           cookie=cookie)]
        return flows
