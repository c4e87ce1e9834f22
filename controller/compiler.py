"""The apps' port programs compiled for dfflow._core, and a plan's flows packed into one buffer.

Every flow the packer has an opcode for (output, set-field, dec-ttl, reg-move, ct,
conjunction, resubmit) is encoded into a `FlowBatch` row and packed by `dfflow._core`
without a Python object per message. The compiled core makes every entry of a port
program, including the few whose actions the packer does not encode (the announce
gate's learn): their rows carry the template and its bound params instead of actions
(`OP_PARAMS` slots), and `flow_mods` serializes them with os-ken in their place, so
the order of the plan (deletes, then adds) is kept. The compiled core packs a change's rows
where it compiles them (bundle adds whose xids, bundle id and flags are placeholders). The
daemon hands a plan to the channel as a `PlanBundle`: one call of the packer copies each packed
change with the bundle's numbers patched in (and packs any other rows), between the bundle's
open and commit.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np
import numpy.lib.recfunctions as rf

from controller.templates import (APP_COOKIE_SHIFT, Each, Fact, FlowTemplate, Param, PortFacts, PortProgram,
                                  PortRole)
from dfflow import core
from dfflow.flowbatch import (ACTION_DTYPE, FIELD_INDEX, FLOW_DTYPE, LAYOUT, MAX_ACTIONS, PACKABLE_ACTIONS,
                              FlowBatch)
from dfflow.flows import Command, Flow

# An action slot of a template whose actions the packer does not encode: `field` is a param of the
# template, `value` its value (patched by the compiled core), `arg` the template's number in CARRIED.
OP_PARAMS = 0xFF
CARRIED: list[FlowTemplate] = []  # the templates OP_PARAMS rows name, numbered once per process
_CARRIED_INDEX: dict[FlowTemplate, int] = {}


def packable(flow: Flow) -> bool:
    """Whether a FlowBatch row holds it: known actions, and no more than a row's slots (a flood
    flow to many ports has more; os-ken serializes those)."""
    return len(flow.actions) <= MAX_ACTIONS and all(isinstance(a, PACKABLE_ACTIONS) for a in flow.actions)


def flow_mods(dp: Any, messages: Sequence[Flow | FlowBatch | core.Rows]) -> bytes | bytearray:
    """FLOW_MOD messages for `messages` (flows, and batches of rows the compiled core made), in
    order, numbered from a block of the channel's xids: the batches packed by one call of the
    packer, runs of packable flows as a batch, the rest (and rows carrying a template's params)
    serialized by os-ken in their place."""
    if not messages:
        return b""
    return core.pack_messages(dp, messages, FlowBatch, _encode_flows, OP_PARAMS, _encode_carried)


def _encode_flows(dp: Any, flows: list[Flow], xid: int) -> bytes:
    """FLOW_MODs for flows in a row: packable ones in runs, the others serialized by os-ken."""
    parts: list[bytes] = []
    run: list[Flow] = []
    for flow in flows:
        if packable(flow):
            run.append(flow)
            continue
        if run:
            parts.append(core.pack_flow_mods(FlowBatch.from_flows(run), xid))
            xid += len(run)
            run = []
        parts.append(_encode(dp, flow, xid))
        xid += 1
    if run:
        parts.append(core.pack_flow_mods(FlowBatch.from_flows(run), xid))
    return b"".join(parts)


def _encode_carried(dp: Any, batch: FlowBatch, row: int, xid: int) -> bytes:
    return _encode(dp, _carried_flow(batch.rows[row]), xid)


# What the packer does not encode itself: runs of flows, and rows carrying a template's params.
_ENCODING = core.MessageEncoding(FlowBatch, _encode_flows, OP_PARAMS, _encode_carried)

# A plan's messages as `Datapath.send_bundle` takes them to pack and frame in one call of the packer
# (`PlanBundle(messages).frame_bundle(dp, bundle_id, flags, commit)`): the FLOW_MODs flow_mods makes,
# each in a bundle add, between the bundle's open and (pipelined) its commit; it returns (framed bundle,
# the adds' xids, the open's xid; the commit's is the next), numbered from one block of the channel's xids.
PlanBundle = _ENCODING.bundle


def _encode(dp: Any, flow: Flow, xid: int) -> bytes:
    message = flow.to_osken(dp, xid)
    message.serialize()
    return bytes(message.buf)


def _carried_flow(row: np.void) -> Flow:
    slots = row["actions"][:int(row["n_actions"])]
    template = CARRIED[int(slots[0]["arg"])]
    cookie = int(row["cookie"])
    values = {Param(int(s["field"])): int(s["value"]) for s in slots} | {Param.COOKIE: cookie}
    return template.flow(values, cookie).as_command(Command(int(row["command"])))


def flows_of_rows(rows: np.ndarray) -> list[Flow]:
    """Rows the compiled core made, as Flows (reconcile, status, tests)."""
    batch = FlowBatch.of_rows(np.ascontiguousarray(rows))
    carrying = set(core.rows_with_action(batch, OP_PARAMS))
    return [_carried_flow(rows[i]) if i in carrying else batch.flow(i) for i in range(len(rows))]


# ---------------------------------------------------------------- the port-flow compiler
# Port programs (controller.templates) as prototype rows for dfflow._core, the port
# columns they read, and the calls the engine and the benchmarks make.

PORT_DTYPE = np.dtype([(name, "<u8") for name in core.PORT_FIELDS])
FIP_DTYPE = np.dtype([(name, "<u8") for name in core.FIP_FIELDS])
PAIR_DTYPE = np.dtype([(name, "<u8") for name in core.PAIR_FIELDS])

# The compiled core numbers params, facts and repetitions itself: it must be the numbering of the templates.
core.require_agreement("port-template params", {p.name: p.value for p in Param},
                       {name: i for i, name in enumerate(core.PARAM_NAMES)})
core.require_agreement("port facts", {f.name: f.value for f in Fact}, core.FACT_BITS)
core.require_agreement("port-template repetitions (each)", {e.name: e.value for e in Each}, core.EACH_KINDS)
core.require_agreement("port roles' items", {name: i for i, name in enumerate(PortRole._fields)},
                       {name: i for i, name in enumerate(core.ROLE_FIELDS)})

_ROW_OFFSET = {name: FLOW_DTYPE.fields[name][1]
               for name in ("cookie", "wmeta_value", "match_value", "match_mask", "actions")}
_ACTION_VALUE = ACTION_DTYPE.fields["value"][1]


def compile_program(*programs: PortProgram) -> core.CompiledProgram:
    """The entries of one or more apps' port programs, as the compiled core runs them."""
    protos = FlowBatch(sum(len(p.entries) for p in programs))
    entries = []
    for program in programs:
        app_cookie = program.app_id << APP_COOKIE_SHIFT
        for entry in program.entries:
            t = entry.template
            prototype = t.flow({p: 0 for p in t.params}, 0)
            packed = t.packable()
            if not packed:  # its row carries the template's params in place of actions
                prototype = Flow(prototype.table, prototype.priority, prototype.match, (), prototype.goto,
                                 prototype.write_metadata)
            row = protos.append(prototype, check=False)
            patches = [(_ROW_OFFSET["cookie"], Param.COOKIE)]
            patches += [(_ROW_OFFSET["match_value"] + 8 * FIELD_INDEX[name], entry.source(value))
                        for name, value, _ in t.match if isinstance(value, Param)]
            patches += [(_ROW_OFFSET["match_mask"] + 8 * FIELD_INDEX[name], entry.source(mask))
                        for name, _, mask in t.match if isinstance(mask, Param)]
            if packed:
                for k, action in enumerate(t.actions):
                    value = getattr(action, "port", getattr(action, "value", None))
                    if isinstance(value, Param):
                        patches.append((_action_offset(k), entry.source(value)))
            else:
                patches += _carry(protos.array, row, t, entry.source)
            if t.write_metadata is not None and isinstance(t.write_metadata[0], Param):
                patches.append((_ROW_OFFSET["wmeta_value"], entry.source(t.write_metadata[0])))
            entries.append((f"{program.app_id}:{t.name}", app_cookie, int(entry.when), int(entry.each), True,
                            entry.uses_location(), [(off, int(param)) for off, param in patches]))
    return core.CompiledProgram(LAYOUT, protos.rows, entries)


def _action_offset(k: int) -> int:
    return _ROW_OFFSET["actions"] + k * ACTION_DTYPE.itemsize + _ACTION_VALUE


def _carry(protos: np.ndarray, row: int, t: FlowTemplate, source: Any) -> list[tuple[int, Param]]:
    """Make prototype `row` an OP_PARAMS row of template `t`; the patches that fill its slots."""
    carried = sorted(p for p in t.params if p != Param.COOKIE)  # the cookie is the row's own
    if not 0 < len(carried) <= MAX_ACTIONS:
        raise ValueError(f"template {t.name}: {len(carried)} params to carry, 1..{MAX_ACTIONS} fit a row")
    number = _CARRIED_INDEX.setdefault(t, len(CARRIED))
    if number == len(CARRIED):
        CARRIED.append(t)
    protos["n_actions"][row] = len(carried)
    for k, param in enumerate(carried):
        protos["actions"][row, k] = (OP_PARAMS, int(param), 0, number, 0)
    return [(_action_offset(k), source(param)) for k, param in enumerate(carried)]


class PortTable(core.PortColumns):
    """The ports' facts as typed columns, kept in step with the NB view by the engine.

    `ports[i]` is port i's record (PORT_DTYPE); its IPv4 addresses, floating IPs and allowed
    address pairs are slices of `ips`, `fips` and `pairs`. Rows are reused when a port goes; the
    other columns only grow until they are compacted (when half of them is stale).
    It is the compiled core's `PortColumns` of its arrays (held anew whenever one is replaced), so a
    compile reads it as it is: no Python call or attribute between the engine and the core.
    """

    def __init__(self, capacity: int = 64) -> None:
        self.ports = np.zeros(capacity, PORT_DTYPE)
        self.ips = np.zeros(max(capacity, 1), np.uint64)
        self.fips = np.zeros(max(capacity // 4, 1), FIP_DTYPE)
        self.pairs = np.zeros(1, PAIR_DTYPE)
        self.n_ips = self.n_fips = self.n_pairs = 0
        self.index: dict[str, int] = {}
        self.facts: dict[str, PortFacts] = {}
        self._free: list[int] = []
        self._n = 0
        self._live_ips = self._live_fips = self._live_pairs = 0  # of current facts (the rest is stale)
        self._hold()

    def _hold(self) -> None:
        """The columns as the compiled core reads them (held anew whenever one is replaced)."""
        core.PortColumns.__init__(self, self.ports, self.ips, self.fips, self.pairs)

    def __len__(self) -> int:
        return len(self.index)

    def set(self, port_id: str, facts: PortFacts) -> int:
        """Store a port's facts (a no-op when unchanged); returns its row."""
        row = self.index.get(port_id)
        if row is not None and self.facts[port_id] == facts:
            return row
        if row is None:
            row = self._free.pop() if self._free else self._grow_row()
            self.index[port_id] = row
        else:
            self._forget(self.facts.pop(port_id))
        # (room first: a compaction lays out the other ports' facts, not these, which may not fit yet)
        self._make_room(len(facts.ipv4s), len(facts.fips), len(facts.pairs))
        self.facts[port_id] = facts
        self._live_ips += len(facts.ipv4s)
        self._live_fips += len(facts.fips)
        self._live_pairs += len(facts.pairs)
        ip_start, fip_start, pair_start = self.n_ips, self.n_fips, self.n_pairs
        self.ips[ip_start:ip_start + len(facts.ipv4s)] = facts.ipv4s
        for k, f in enumerate(facts.fips):
            self.fips[fip_start + k] = (f.fip, f.fip_mac, f.fixed_ip, f.ext_vni, f.router_mac)
        self._put_pairs(pair_start, facts)
        self.n_ips += len(facts.ipv4s)
        self.n_fips += len(facts.fips)
        self.n_pairs += len(facts.pairs)
        flags = (core.PORT_FLAG_SECURITY if facts.port_security else 0) | (core.PORT_FLAG_ROUTED if facts.routed else 0)
        hosts = sum(p.is_host for p in facts.pairs)
        self.ports[row] = (facts.object_hash, facts.vni, facts.mac, flags, ip_start, len(facts.ipv4s),
                           fip_start, len(facts.fips), pair_start, hosts, len(facts.pairs) - hosts)
        return row

    def _put_pairs(self, start: int, facts: PortFacts) -> None:
        """The port's pairs from `start`: its single addresses, then its prefixes (the core's order)."""
        ordered = sorted(facts.pairs, key=lambda p: not p.is_host)
        for k, pair in enumerate(ordered):
            self.pairs[start + k] = (pair.mac, pair.ip, pair.mask)

    def _forget(self, gone: PortFacts) -> None:
        self._live_ips -= len(gone.ipv4s)
        self._live_fips -= len(gone.fips)
        self._live_pairs -= len(gone.pairs)

    def drop(self, port_id: str) -> None:
        row = self.index.pop(port_id, None)
        if row is not None:
            self._forget(self.facts.pop(port_id))
            self.ports[row] = 0
            self._free.append(row)

    def _grow_row(self) -> int:
        if self._n == len(self.ports):
            self.ports = np.concatenate([self.ports, np.zeros(len(self.ports), PORT_DTYPE)])
            self._hold()
        self._n += 1
        return self._n - 1

    def _make_room(self, n_ips: int, n_fips: int, n_pairs: int = 0) -> None:
        if (self.n_ips + n_ips > len(self.ips) or self.n_fips + n_fips > len(self.fips)
                or self.n_pairs + n_pairs > len(self.pairs)):
            if (self._live_ips * 2 < self.n_ips or self._live_fips * 2 < self.n_fips
                    or self._live_pairs * 2 < self.n_pairs):
                self._compact()
            if self.n_ips + n_ips > len(self.ips):
                self.ips = np.concatenate([self.ips, np.zeros(max(len(self.ips), n_ips), np.uint64)])
            if self.n_fips + n_fips > len(self.fips):
                self.fips = np.concatenate([self.fips, np.zeros(max(len(self.fips), n_fips), FIP_DTYPE)])
            if self.n_pairs + n_pairs > len(self.pairs):
                self.pairs = np.concatenate([self.pairs, np.zeros(max(len(self.pairs), n_pairs), PAIR_DTYPE)])
            self._hold()

    def _compact(self) -> None:
        facts, self.n_ips, self.n_fips, self.n_pairs = dict(self.facts), 0, 0, 0
        self.facts.clear()
        for port_id, f in facts.items():
            self.facts[port_id] = f
            row = self.index[port_id]
            start = self.n_ips
            self.ips[start:start + len(f.ipv4s)] = f.ipv4s
            self.n_ips += len(f.ipv4s)
            fstart = self.n_fips
            for k, fip in enumerate(f.fips):
                self.fips[fstart + k] = (fip.fip, fip.fip_mac, fip.fixed_ip, fip.ext_vni, fip.router_mac)
            self.n_fips += len(f.fips)
            pstart = self.n_pairs
            self._put_pairs(pstart, f)
            self.n_pairs += len(f.pairs)
            self.ports[row]["ip_start"], self.ports[row]["fip_start"] = start, fstart
            self.ports[row]["pair_start"] = pstart


PortChange = tuple[int, "PortRole | None", "PortRole | None"]  # (row in the PortTable, old role, new role)


ChangeRows = core.ChangeRows  # (deletes, adds) of a change, packed, and its key_conflicts


def change_rows(dels: np.ndarray, adds: np.ndarray, key_conflicts: int = 0) -> ChangeRows:
    """A change made of numpy rows (a diff's), as the compiled core gives its own."""
    return ChangeRows(core.rows_of_array(LAYOUT, dels), core.rows_of_array(LAYOUT, adds), key_conflicts)


# compile_port_changes(program, table, changes): (deletes, adds) that take ports' flows on this chassis
# from their old roles to their new ones (changes: PortChange), in one call of the compiled core (the
# rows of each change in the order given; an add two templates make alike once), packed in the same
# call: `.deletes` and `.adds` as the packer reads them, numpy arrays when unpacked. Both roles are made
# from the port's facts in `table` (compile_facts_changes when they change). The core's own function:
# every plan of every chassis calls it, and a Python wrapper around it cost more than the core's work on
# a small change.
compile_port_changes: Callable[[core.CompiledProgram, PortTable, Sequence[PortChange]], ChangeRows] = \
    core.compile_changes


def role_rows(program: core.CompiledProgram, table: PortTable, placed: Sequence[tuple[int, PortRole]]) -> np.ndarray:
    """Every flow of the ports (row, role) in `table`, as rows: what they have installed."""
    if not placed:
        return np.zeros(0, FLOW_DTYPE)
    return compile_port_changes(program, table, [(row, None, role) for row, role in placed])[1]


FactsChange = tuple[str, PortFacts, PortRole, PortRole]  # (port id, its new facts, old role, new role)


def compile_facts_changes(program: core.CompiledProgram, table: PortTable,
                          changes: Sequence[FactsChange]) -> ChangeRows:
    """(deletes, adds) that take ports' flows from their old roles over their facts in `table` to
    their new roles over new facts (their IPs, floating IPs or routers changed), in two calls of
    the compiled core for them all; `table` then holds the new facts (the old ones if it fails).

    A flow whose key both have is replaced by its add (never deleted first: a flow the datapath
    learned over the key stays); one that is the same in both is not sent."""
    rows = [table.index[port_id] for port_id, _, _, _ in changes]
    before = role_rows(program, table, [(row, old) for row, (_, _, old, _) in zip(rows, changes)])
    old_facts = {port_id: table.facts[port_id] for port_id, _, _, _ in changes}
    try:
        for port_id, facts, _, _ in changes:
            table.set(port_id, facts)
        after = compile_port_changes(program, table, [(row, None, new) for row, (*_, new) in zip(rows, changes)])
    except Exception:
        for port_id, facts in old_facts.items():
            table.set(port_id, facts)
        raise
    return change_rows(*diff_rows(before, after[1]), after.key_conflicts)


def diff_rows(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(deletes, adds) that take an object's flows from rows `before` to rows `after`.

    A flow whose key both have is replaced by its add (never deleted first: a flow the datapath
    learned over the key stays); one that is the same in both is not sent."""
    if not len(before) and not len(after):
        return before, after
    if not len(before) or not len(after):  # all of one or the other: nothing to compare
        dels, adds = _padding_zeroed(before.copy()), after
    else:
        kept_keys = set(_records(_keys(after)))
        unchanged = set(_records(before))
        dels = _padding_zeroed(before[[key not in kept_keys for key in _records(_keys(before))]])
        adds = _padding_zeroed(after[[row not in unchanged for row in _records(after)]])
    adds = distinct_rows(adds)
    dels["command"], dels["n_actions"], dels["has_wmeta"], dels["goto"] = int(Command.DELETE_STRICT), 0, 0, -1
    return np.ascontiguousarray(dels), np.ascontiguousarray(adds)


def distinct_rows(rows: np.ndarray) -> np.ndarray:
    """`rows` with each identical flow once (two templates can make the same flow: a floating IP whose
    MAC is its port's own on the port's own network), as a switch and FlowState hold it once."""
    if len(rows) < 2:
        return rows
    records = _records(rows)
    if len(set(records)) == len(records):
        return rows
    seen: set[bytes] = set()
    first = [not (record in seen or seen.add(record)) for record in records]
    return _padding_zeroed(np.ascontiguousarray(rows[first]))


def distinct_keys(rows: np.ndarray) -> np.ndarray:
    """The first row of each flow key among `rows` (the switch holds one flow per key)."""
    if len(rows) < 2:
        return np.arange(len(rows))
    keys = _keys(rows)
    _, first = np.unique(keys.view(np.dtype((np.void, keys.dtype.itemsize))), return_index=True)
    return np.sort(first)


_KEY_FIELDS = ("table", "priority", "match_present", "match_masked", "match_value", "match_mask")


def _keys(rows: np.ndarray) -> np.ndarray:
    """The rows' flow keys (table, priority, match), packed: equal keys, equal records."""
    return rf.repack_fields(rows[list(_KEY_FIELDS)])


def _records(rows: np.ndarray) -> list[bytes]:
    """Each record of `rows` as bytes (comparable, hashable), its padding zeroed."""
    size = rows.dtype.itemsize
    data = (np.frombuffer(rows.tobytes(), np.uint8).reshape(-1, size) & _field_bytes(rows.dtype)).tobytes()
    return [data[i:i + size] for i in range(0, len(data), size)]


def _padding_zeroed(copied: np.ndarray) -> np.ndarray:
    """A copy just made of rows, its padding zeroed in place: numpy copies records field by field, so
    the padding of a copy is whatever the allocator left there, and rows are compared as bytes."""
    if len(copied):
        copied.view(np.uint8).reshape(-1, copied.dtype.itemsize)[...] &= _field_bytes(copied.dtype)
    return copied


@functools.cache
def _field_bytes(dtype: np.dtype) -> np.ndarray:
    return core.field_bytes(dtype)
