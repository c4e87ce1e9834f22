"""What flows this chassis has, per owner, and the difference to what it wants.

An owner is (app, kind, object id): the flows one app installs for one object.
`plan()` turns new per-owner flow lists into the minimal change (deletes and
adds), which the controller sends as one atomic bundle and then `commit()`s.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dfflow.flows import Command, Flow

LOG = logging.getLogger(__name__)
Owner = tuple[str, str, str]
FlowKey = tuple


@dataclass
class Plan:
    deletes: list[Flow] = field(default_factory=list)
    adds: list[Flow] = field(default_factory=list)
    # The port flow mods the compiled core made: its role and facts changes (`changes`: ChangeRows, each
    # packed where it was compiled), and rows made otherwise (`rows`: deletes, adds as FlowBatches), sent
    # between the deletes and adds of the flows planned here (`owners`: their owners' new flows).
    changes: list[Any] = field(default_factory=list)
    rows: list[tuple[Any, Any]] = field(default_factory=list)
    owners: dict[Owner, dict[FlowKey, Flow]] = field(default_factory=dict)
    moved: set[str] = field(default_factory=set)  # ports whose role or location here changed
    # Local ports whose security groups allow less once it is applied, and those whose arrival window it
    # closes: their conntrack zones are swept and recorded (controller.conntrack_sweep).
    narrowed: set[str] = field(default_factory=set)
    arrived: set[str] = field(default_factory=set)
    stamps: list[tuple[str, str]] = field(default_factory=list)  # (migration id, state) to stamp once applied
    timing: dict[str, float] = field(default_factory=dict)  # what it took: event to plan, queue, bundle
    cause: str = ""  # "table:id" of the NB event that made it (empty for local events)
    # The other NB events of a burst planned at once: (cause, timing) of each, in order.
    batched: list[tuple[str, dict[str, float]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.deletes or self.adds or self.changes or self.rows)

    @property
    def n_row_flow_mods(self) -> int:
        """The flow mods of its changes and rows."""
        return sum(c.n for c in self.changes) + sum(len(d) + len(a) for d, a in self.rows)

    @property
    def n_flow_mods(self) -> int:
        return len(self.deletes) + len(self.adds) + self.n_row_flow_mods

    def messages(self) -> list[Any]:
        """Deletes then adds, as flow-mod commands (an add replaces a flow with the same key); the
        compiled rows in between, every delete before every add (controller.compiler's PlanBundle packs
        and frames them). A plan of one change of the core sends it whole: its deletes, then its adds,
        packed where it was compiled. (Loops, not comprehensions: every plan of every chassis comes here,
        most with one change only.)"""
        out = [f if f.command == Command.DELETE else
               Flow(f.table, f.priority, f.match, cookie=f.cookie, command=Command.DELETE_STRICT)
               for f in self.deletes] if self.deletes else []
        if len(self.changes) == 1 and not self.rows:
            out.append(self.changes[0])
        else:
            for side in (0, 1):  # every change's and batch's deletes, then their adds
                for change in self.changes:
                    if change.nadd if side else change.ndel:
                        out.append(change.adds if side else change.deletes)
                for pair in self.rows:
                    if len(pair[side]):
                        out.append(pair[side])
        if self.adds:
            out += [f.as_command(Command.ADD) for f in self.adds]
        return out


class FlowState:
    def __init__(self) -> None:
        self.installed: dict[Owner, dict[FlowKey, Flow]] = {}
        self.duplicate_keys = 0

    def flows_of(self, owner: Owner) -> list[Flow]:
        return list(self.installed.get(owner, {}).values())

    def all_flows(self) -> dict[FlowKey, Flow]:
        merged: dict[FlowKey, Flow] = {}
        for flows in self.installed.values():
            merged.update(flows)
        return merged

    def plan(self, wanted: dict[Owner, list[Flow]]) -> Plan:
        """The change that makes each owner in `wanted` have exactly its listed flows."""
        plan = Plan()
        new_keys: dict[FlowKey, Flow] = {}
        for owner, flows in wanted.items():
            table = {}
            for flow in flows:
                if flow.key in table and table[flow.key] != flow:
                    LOG.error("owner %s declares two different flows with key %s", owner, flow.key)
                    self.duplicate_keys += 1
                table[flow.key] = flow
            plan.owners[owner] = table
            new_keys.update(table)
        for owner, table in plan.owners.items():
            old = self.installed.get(owner, {})
            for key, flow in old.items():
                if key not in table and key not in new_keys and not self._owned_elsewhere(key, owner, wanted):
                    plan.deletes.append(flow)
            for key, flow in table.items():
                if old.get(key) != flow:
                    plan.adds.append(flow)
        return plan

    def _owned_elsewhere(self, key: FlowKey, owner: Owner, wanted: dict[Owner, list[Flow]]) -> bool:
        for other, table in self.installed.items():
            if other != owner and other not in wanted and key in table:
                return True
        return False

    def commit(self, plan: Plan) -> None:
        for owner, table in plan.owners.items():
            if table:
                self.installed[owner] = table
            else:
                self.installed.pop(owner, None)
