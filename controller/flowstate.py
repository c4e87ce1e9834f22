"""What flows this chassis has, per owner, and the difference to what it wants.

An owner is (app, kind, object id): the flows one app installs for one object.
`plan()` turns new per-owner flow lists into the minimal change (deletes and
adds), which the controller sends as one atomic bundle and then `commit()`s.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from dfflow.flows import Command, Flow

LOG = logging.getLogger(__name__)
Owner = tuple[str, str, str]
FlowKey = tuple


class DerivedFlows(Mapping):
    """An owner's flows when the compiled path installed them: made (by the same program, in
    Python) only if someone asks -- a reconcile, a later Python-path diff, a test."""

    def __init__(self, make: Callable[[], list[Flow]], empty: bool = False):
        self._make = make
        self._flows: dict[FlowKey, Flow] | None = {} if empty else None
        self.empty = empty  # known without making them (the port has no role here)

    def _table(self) -> dict[FlowKey, Flow]:
        if self._flows is None:
            self._flows = {f.key: f for f in self._make()}
        return self._flows

    def __getitem__(self, key: FlowKey) -> Flow:
        return self._table()[key]

    def __iter__(self) -> Iterator[FlowKey]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


@dataclass
class Plan:
    deletes: list[Flow] = field(default_factory=list)
    adds: list[Flow] = field(default_factory=list)
    # Flow mods the compiled core made as rows (FlowBatch deletes, FlowBatch adds), sent between
    # the Python deletes and adds; `owners` has their owners' new flows as DerivedFlows.
    rows: list[tuple[Any, Any]] = field(default_factory=list)
    owners: dict[Owner, Mapping[FlowKey, Flow]] = field(default_factory=dict)
    moved: set[str] = field(default_factory=set)  # ports whose role or location here changed
    stamps: list[tuple[str, str]] = field(default_factory=list)  # (migration id, state) to stamp once applied
    timing: dict[str, float] = field(default_factory=dict)  # what it took: event to plan, queue, bundle
    cause: str = ""  # "table:id" of the NB event that made it (empty for local events)
    port_states: dict[str, Any] = field(default_factory=dict)  # port id -> (facts, role) once committed

    def __bool__(self) -> bool:
        return bool(self.deletes or self.adds or self.rows)

    @property
    def n_flow_mods(self) -> int:
        return len(self.deletes) + len(self.adds) + sum(len(d) + len(a) for d, a in self.rows)

    def messages(self) -> list[Any]:
        """Deletes then adds, as flow-mod commands (an add replaces a flow with the same key); the
        compiled rows as FlowBatches in between (controller.compiler.flow_mods packs both)."""
        return [f if f.command == Command.DELETE else
                Flow(f.table, f.priority, f.match, cookie=f.cookie, command=Command.DELETE_STRICT)
                for f in self.deletes] + \
               [d for d, _ in self.rows if len(d)] + [a for _, a in self.rows if len(a)] + \
               [f.as_command(Command.ADD) for f in self.adds]


class FlowState:
    def __init__(self) -> None:
        self.installed: dict[Owner, Mapping[FlowKey, Flow]] = {}
        self.duplicate_keys = 0

    def flows_of(self, owner: Owner) -> list[Flow]:
        return list(self.installed.get(owner, {}).values())

    def all_flows(self) -> dict[FlowKey, Flow]:
        merged: dict[FlowKey, Flow] = {}
        for flows in self.installed.values():
            merged.update(flows)
        return merged

    def plan(self, wanted: dict[Owner, list[Flow]], replaced: frozenset[Owner] = frozenset()) -> Plan:
        """The change that makes each owner in `wanted` have exactly its listed flows.

        `replaced`: owners the caller changes itself in the same plan (the compiled core's port
        owners); a deleted key is not looked for among their flows: port flows and the
        network/router flows planned here never share a key."""
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
                if key not in table and key not in new_keys and not self._owned_elsewhere(key, owner, wanted,
                                                                                         replaced):
                    plan.deletes.append(flow)
            for key, flow in table.items():
                if old.get(key) != flow:
                    plan.adds.append(flow)
        return plan

    def _owned_elsewhere(self, key: FlowKey, owner: Owner, wanted: dict[Owner, list[Flow]],
                         replaced: frozenset[Owner]) -> bool:
        for other, table in self.installed.items():
            if other != owner and other not in wanted and other not in replaced and key in table:
                return True
        return False

    def commit(self, plan: Plan) -> None:
        for owner, table in plan.owners.items():
            if (not table.empty) if isinstance(table, DerivedFlows) else table:
                self.installed[owner] = table  # (derived flows are not made to find out)
            else:
                self.installed.pop(owner, None)
