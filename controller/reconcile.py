"""Reconciliation: what OVS has against what the controller wants, fixing only the difference.

Flows dumped from OVS (os-ken OFPFlowStats) are read back into `Flow` values, so
the comparison is exact: same key (table, priority, match) and same cookie and
instructions, or it is replaced. Flows whose cookie names none of our apps are
someone else's and are left alone.
"""
from __future__ import annotations

from typing import Any, Iterable

from controller.apps.base import app_of_cookie
from controller.flowstate import Plan
from dfflow import core
from dfflow.flows import (CT_NO_TABLE, FIELDS, IPV4_FIELDS, MAC_FIELDS, Command, Conjunction, Ct, DecTtl, Flow, Learn, Move,
                          Output, Resubmit, SetField, match)



def _int_value(name: str, value: Any) -> int:
    if name in MAC_FIELDS and isinstance(value, str):
        return core.mac_to_int(value.lower())
    if name in IPV4_FIELDS and isinstance(value, str):
        return core.ipv4_to_int(value)
    return int(value)


def flow_from_stats(stats: Any) -> Flow:
    """An os-ken OFPFlowStats (or OFPFlowMod) read back as a Flow."""
    fields: dict[str, Any] = {}
    for osken_name, value in stats.match.items():
        name = _field_name(osken_name)
        if name not in FIELDS:
            raise ValueError(f"flow matches a field dfflow does not use: {name}")
        if isinstance(value, tuple):
            val, mask = _int_value(name, value[0]), _int_value(name, value[1])
            fields[name] = val if mask == (1 << FIELDS[name].bits) - 1 else (val, mask)
        else:
            fields[name] = _int_value(name, value)
    actions: list = []
    goto = write_metadata = None
    for inst in stats.instructions:
        kind = type(inst).__name__
        if kind == "OFPInstructionActions":
            actions.extend(_action(a) for a in inst.actions)
        elif kind == "OFPInstructionGotoTable":
            goto = inst.table_id
        elif kind == "OFPInstructionWriteMetadata":
            write_metadata = (inst.metadata, inst.metadata_mask)
        else:
            raise ValueError(f"instruction dfflow does not use: {kind}")
    return Flow(stats.table_id, stats.priority, match(**fields), tuple(actions), goto, write_metadata,
                stats.cookie)


def _field_name(name: str) -> str:
    """os-ken reads NXM fields back as e.g. 'eth_src_nxm'; ours is the OXM name."""
    base = name[:-4] if name.endswith("_nxm") else name
    return base if base in FIELDS else name


def _action(action: Any) -> Any:
    kind = type(action).__name__
    if kind == "OFPActionOutput":
        return Output(action.port, action.max_len)
    if kind == "OFPActionSetField":
        return SetField(action.key, _int_value(action.key, action.value))
    if kind == "OFPActionDecNwTtl":
        return DecTtl()
    if kind == "NXActionRegMove":
        return Move(_field_name(action.src_field), _field_name(action.dst_field), action.n_bits)
    if kind == "NXActionResubmitTable":
        return Resubmit(action.table_id)
    if kind == "NXActionLearn":
        specs = [(type(spec).__name__, spec.dst, spec.src) for spec in action.specs]
        outputs = [_field_name(src[0]) for kind_, _, src in specs if kind_ == "NXFlowSpecOutput"]
        if outputs not in ([], ["in_port"]):
            raise ValueError(f"learned output dfflow does not use: {outputs}")
        return Learn(action.table_id, action.priority, action.idle_timeout, action.hard_timeout, action.cookie,
                     tuple((_field_name(dst[0]), src) for kind_, dst, src in specs if kind_ == "NXFlowSpecMatch"),
                     tuple((_field_name(dst[0]), src) for kind_, dst, src in specs if kind_ == "NXFlowSpecLoad"),
                     output_in_port=bool(outputs))
    if kind == "NXActionCT":
        if action.zone_src or action.alg or action.actions or action.flags & ~1:
            raise ValueError(f"conntrack action dfflow does not use: {action}")
        return Ct(action.zone_ofs_nbits, bool(action.flags & 1),
                  None if action.recirc_table == CT_NO_TABLE else action.recirc_table)
    if kind == "NXActionConjunction":
        return Conjunction(action.id, action.clause + 1, action.n_clauses)
    raise ValueError(f"action dfflow does not use: {kind}")


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
