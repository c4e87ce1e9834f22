"""A simulated OpenFlow 1.3 pipeline for pure tests: where does this packet go?

Pure tests hand it the flows a chassis wants (`Flow` values) and a packet (a dict of
field values, integers as in `dfflow.flows`), and assert on the packets that come out
and on the ports they leave by, instead of on flow text with bare table numbers.

It interprets what the pipeline uses: highest-priority match per table (a miss
drops), apply-actions in order (output, set-field, dec_ttl, reg-move, resubmit,
learn, ct), write-metadata and goto-table. `ct` records the pipeline fields the
connection tracker freezes (`conntracked`: what names the datapath's recirculation,
so two pipelines that reach it with other registers make other datapath flows) and
goes on in its table as an established connection's packet. Learned flows are added to the table like
the datapath does, so a packet after an announcement sees them. Pipeline fields
(metadata, registers) start at 0, as in Open vSwitch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from dfflow.flows import (CT_EST, CT_TRK, FIELDS, OFPP_IN_PORT, Ct, DecTtl, Flow, Learn, Move, Output,
                          Resubmit, SetField, match)

PIPELINE_FIELDS = ("metadata", "reg5", "reg6", "reg7", "reg8", "reg9")
MAX_RESUBMIT_DEPTH = 64  # Open vSwitch gives up well before a loop would matter


class PipelineLoop(AssertionError):
    pass


@dataclass(frozen=True)
class Delivered:
    port: int
    packet: dict[str, int]


@dataclass
class FakeOFTable:
    flows: list[Flow]
    learned: list[Flow] = field(default_factory=list)
    conntracked: list[tuple[int, int | None, dict[str, int]]] = field(default_factory=list)  # (zone, table, fields)

    @classmethod
    def of(cls, flows: Iterable[Flow]) -> "FakeOFTable":
        return cls(list(flows))

    def forward(self, in_port: int, **packet: int) -> list[Delivered]:
        """Run `packet` arriving on `in_port` through table 0; what leaves, in order."""
        state = {name: 0 for name in PIPELINE_FIELDS}
        state.update(packet, in_port=in_port)
        delivered: list[Delivered] = []
        self._run_table(0, state, delivered, depth=0)
        return delivered

    def ports(self, in_port: int, **packet: int) -> list[int]:
        return [d.port for d in self.forward(in_port, **packet)]

    def lookup(self, table: int, packet: dict[str, int]) -> Flow | None:
        candidates = [f for f in self.learned + self.flows if f.table == table and _matches(f, packet)]
        if not candidates:
            return None
        best = max(f.priority for f in candidates)
        # a flow learned over a controller flow of the same key replaces it (the learned one is listed first)
        return next(f for f in candidates if f.priority == best)

    def _run_table(self, table: int, state: dict[str, int], delivered: list[Delivered], depth: int) -> bool:
        """False when the packet is dropped for good (an expired TTL), ending the whole pipeline."""
        if depth > MAX_RESUBMIT_DEPTH:
            raise PipelineLoop(f"more than {MAX_RESUBMIT_DEPTH} tables for one packet: {state}")
        flow = self.lookup(table, state)
        if flow is None:
            return True
        for action in flow.actions:
            if not self._apply(action, state, delivered, depth):
                return False
        if flow.write_metadata is not None:
            value, mask = flow.write_metadata
            state["metadata"] = (state["metadata"] & ~mask) | (value & mask)
        if flow.goto is not None:
            if flow.goto <= table:
                raise PipelineLoop(f"table {table} goes back to table {flow.goto}")
            return self._run_table(flow.goto, state, delivered, depth + 1)
        return True

    def _apply(self, action: object, state: dict[str, int], delivered: list[Delivered], depth: int) -> bool:
        if isinstance(action, Output):
            # Open vSwitch never sends a packet back out of its input port unless told OFPP_IN_PORT
            if action.port != state["in_port"]:
                port = state["in_port"] if action.port == OFPP_IN_PORT else action.port
                delivered.append(Delivered(port, {k: v for k, v in state.items() if k not in PIPELINE_FIELDS}))
        elif isinstance(action, SetField):
            state[action.field] = action.value
        elif isinstance(action, DecTtl):
            ttl = state.get("ip_ttl", 64)
            if ttl <= 1:
                return False
            state["ip_ttl"] = ttl - 1
        elif isinstance(action, Move):
            mask = (1 << action.n_bits) - 1
            state[action.dst] = state.get(action.src, 0) & mask
        elif isinstance(action, Resubmit):
            # the other table runs on the packet as it stands, and what it changes stays changed
            if not self._run_table(action.table, state, delivered, depth + 1):
                return False
        elif isinstance(action, Learn):
            self._learn(action, state)
        elif isinstance(action, Ct):
            self.conntracked.append((action.zone, action.table, {k: state[k] for k in PIPELINE_FIELDS}))
            if action.table is not None:
                recirculated = dict(state, ct_state=CT_TRK | CT_EST)
                if not self._run_table(action.table, recirculated, delivered, depth + 1):
                    return False
        else:
            raise TypeError(f"the fake table cannot run {action!r}")
        return True

    def _learn(self, learn: Learn, state: dict[str, int]) -> None:
        actions: list[object] = [SetField(name, value) for name, value in learn.loads]
        if learn.output_in_port:
            actions.append(Output(state["in_port"]))
        flow = Flow(learn.table, learn.priority, match(**dict(learn.match)), tuple(actions),
                    cookie=learn.cookie)
        self.learned = [f for f in self.learned if f.key != flow.key]
        self.learned.insert(0, flow)


def _matches(flow: Flow, packet: dict[str, int]) -> bool:
    for name, value, mask in flow.match:
        if name not in FIELDS:
            raise KeyError(f"unknown match field {name!r}")
        have = packet.get(name)
        if have is None:
            return False
        if (have & mask if mask is not None else have) != value:
            return False
    return True
