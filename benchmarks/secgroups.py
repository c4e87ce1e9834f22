"""Security-group flows of one port: how many the compiled core makes, and how fast, by remote-group size.

The port (conntrack zone 7) has the rules a web server's group might: TCP 1000-1999 and UDP 5000-5100
from the members of group `clients`, ICMP from them, and egress anywhere. `clients` has M members with
one address each. Reported per M: the flows made (a rule whose members times protocol matches outgrows
their sum is a conjunctive match), the flows the same rules would take as a plain product, and the time
(best of several runs) to make the port's flows as rows (what is packed), and to take in one member's
address change in the engine (chassis A hosting the port, the members on B): the plan that recomputes the
port's flows and diffs them against those installed, end to end.
"""
from __future__ import annotations

import platform
import timeit
from collections import Counter
from typing import Any

from controller.apps.l2 import L2App
from controller.apps.secgroups import EGRESS_SG, INGRESS_SG, RULE, SecurityGroupsApp
from controller.engine import Engine
from controller.view import View, Vif
from dfflow.flowbatch import FlowBatch
from dfflow.flows import Conjunction
from dfflow.models import LogicalPort, LogicalSwitch, SecurityGroup, SecurityGroupRule, Subnet

APP = SecurityGroupsApp()


def _objects(members: int) -> tuple[list[Any], LogicalPort]:
    rules = [SecurityGroupRule(id="r1", topic="t", secgroup="web", protocol="tcp", port_range_min=1000,
                               port_range_max=1999, remote_group="clients"),
             SecurityGroupRule(id="r2", topic="t", secgroup="web", protocol="udp", port_range_min=5000,
                               port_range_max=5100, remote_group="clients"),
             SecurityGroupRule(id="r3", topic="t", secgroup="web", protocol="icmp", remote_group="clients"),
             SecurityGroupRule(id="r4", topic="t", secgroup="web", direction="egress")]
    server = LogicalPort(id="server", topic="t", lswitch="net", mac="fa:16:3e:00:00:01", ips=["10.0.0.1"],
                         binding_chassis="A", security_groups=["web"])
    return [LogicalSwitch(id="net", topic="t", segmentation_id=101),
            Subnet(id="sub", topic="t", lswitch="net", cidr="10.0.0.0/8"),
            SecurityGroup(id="web", topic="t"), SecurityGroup(id="clients", topic="t"), *rules, server,
            *(LogicalPort(id=f"m{i}", topic="t", lswitch="net", mac=f"fa:16:3e:01:{i >> 8 & 255:02x}:{i & 255:02x}",
                          ips=[f"10.1.{i >> 8 & 255}.{i & 255}"], binding_chassis="B",
                          security_groups=["clients"]) for i in range(members))], server


SERVER_VIF = Vif("server", "tap-server", 7)


def _view(members: int) -> tuple[View, LogicalPort]:
    view = View("A")
    objects, server = _objects(members)
    for obj in objects:
        view.put(obj)
    view.set_vif(SERVER_VIF)
    return view, server


def _engine(members: int) -> tuple[Engine, Any]:
    """Chassis A's engine hosting the port, and a function that changes member m0's address (back and
    forth) and commits the plan: how many flow mods it made."""
    engine = Engine("A", [L2App(), SecurityGroupsApp()])
    engine.commit(engine.tunnels_changed({"B": 10}))
    objects, _ = _objects(members)
    for obj in objects:
        engine.commit(engine.object_written(obj))
    engine.commit(engine.vif_online(SERVER_VIF))
    member = engine.view.port("m0")
    moved = [member.replace(ips=["10.2.0.1"]), member]
    turn = [0]

    def change() -> int:
        turn[0] ^= 1
        plan = engine.object_written(moved[turn[0] ^ 1])
        engine.commit(plan)
        return plan.n_flow_mods
    return engine, change


def _as_product(flows: list[Any]) -> int:
    """The rule flows the same rules take as a plain product: each conjunctive match's clause-1 flows
    times its clause-2 flows, and the plain rule flows (priority RULE)."""
    clauses: Counter[tuple[int, int]] = Counter()
    for flow in flows:
        for action in flow.actions:
            if isinstance(action, Conjunction):
                clauses[action.id, action.clause] += 1
    plain = sum(f.priority == RULE and f.table in (EGRESS_SG, INGRESS_SG) for f in flows)
    return plain + sum(n * clauses[conj, 2] for (conj, clause), n in clauses.items() if clause == 1)


def run(sizes: tuple[int, ...] = (10, 100, 1000), min_time: float = 0.5) -> dict[str, Any]:
    results = []
    for members in sizes:
        view, port = _view(members)
        rows = APP.port_rows(port, view)
        flows = FlowBatch.of_rows(rows).flows()
        _, member_changes = _engine(members)
        conjunctive = sum(any(isinstance(a, Conjunction) for a in f.actions) for f in flows)

        def best(fn: Any) -> float:
            number = max(1, int(min_time / max(timeit.timeit(fn, number=1), 1e-6) / 5))
            return min(timeit.repeat(fn, number=number, repeat=5)) / number

        results.append({"members": members, "flows": len(rows), "conjunction_clauses": conjunctive,
                        "rule_flows_as_product": _as_product(flows),
                        "rows_us": best(lambda: APP.port_rows(port, view)) * 1e6,
                        "member_change_flow_mods": member_changes(),
                        "member_change_us": best(member_changes) * 1e6})
    return {"machine": platform.processor() or platform.machine(), "results": results}


def format_report(report: dict[str, Any]) -> str:
    lines = ["members  flows  (conjunction clauses)  rule flows as a product  rows (us)  "
             "a member's address change in the engine (us, flow mods)"]
    for r in report["results"]:
        lines.append(f"{r['members']:>7}  {r['flows']:>5}  {r['conjunction_clauses']:>22}  "
                     f"{r['rule_flows_as_product']:>23}  {r['rows_us']:>9.0f}  "
                     f"{r['member_change_us']:>10.0f} ({r['member_change_flow_mods']})")
    return "\n".join(lines)
