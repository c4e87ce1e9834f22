"""Reconciliation: what OVS has against what the controller wants, fixing only the difference.

Flows dumped from OVS (os-ken OFPFlowStats) are read back into `Flow` values by the os-ken
codec (`dfflow.openflow.osken.flow_from_stats`), so the comparison is exact: same key (table,
priority, match) and same cookie and instructions, or it is replaced. Flows whose cookie names none of our apps are
someone else's and are left alone.
"""
from __future__ import annotations

from typing import Any, Iterable

from controller.apps.base import app_of_cookie
from controller.flowstate import Plan
from dfflow.flows import Command, Flow
from dfflow.openflow.osken import flow_from_stats


def holds_none_of_ours(dumped: Iterable[Any], app_ids: set[int]) -> bool:
    """The switch has no flow of our apps (a fresh or restarted one): everything wanted is added, and
    there is nothing to read back and compare."""
    return all(app_of_cookie(stats.cookie) not in app_ids for stats in dumped)


def reconcile(dumped: Iterable[Any], desired: dict[tuple, Flow], app_ids: set[int]) -> tuple[Plan, int]:
    """The plan that turns `dumped` into `desired`, and how many of our flows were already right.

    A flow with our cookie that cannot be read back (someone else wrote it with fields we never
    use) is removed with every flow of its cookie in its table; those we want are re-added.
    """
    plan = Plan()
    have: dict[tuple, Flow] = {}
    wiped: set[tuple[int, int]] = set()
    for stats in dumped:
        if app_of_cookie(stats.cookie) not in app_ids:
            continue
        try:
            flow = flow_from_stats(stats)
        except ValueError:
            wiped.add((stats.table_id, stats.cookie))
            continue
        if flow.key in desired:
            have[flow.key] = flow
        else:
            plan.deletes.append(flow)
    for table_id, cookie in sorted(wiped):
        plan.deletes.append(Flow(table_id, 0, cookie=cookie, command=Command.DELETE))
    ok = 0
    for key, flow in desired.items():
        if have.get(key) == flow and (flow.table, flow.cookie) not in wiped:
            ok += 1
        else:
            plan.adds.append(flow)
    return plan, ok
