"""Flows as rows of one numpy array: the input of the compiled OpenFlow packer.

A :class:`FlowBatch` holds flows with no Python object per flow. Each row of its
structured array (:data:`FLOW_DTYPE`, 464 bytes, C-aligned) is one FLOW_MOD:

=================  ========  ===================================================
column             type      meaning
=================  ========  ===================================================
``cookie``         u8        the flow's cookie (deletes: matched with mask ~0)
``wmeta_value``    u8        write-metadata instruction value ...
``wmeta_mask``     u8        ... and mask, emitted when ``has_wmeta`` is 1
``match_present``  u8        bitmap: bit i set = field ``FIELD_ORDER[i]`` matched
``match_masked``   u8        bitmap: bit i set = that match carries a mask
``priority``       u2
``goto``           i2        goto-table target, -1 = no goto instruction
``command``        u1        :class:`dfflow.flows.Command` (0 add .. 4 delete-strict)
``table``          u1        0..254 (255 = all tables, deletes only)
``n_actions``      u1        how many of ``actions`` are used (apply-actions)
``has_wmeta``      u1        1 = emit write-metadata
``match_value``    u8[NF]    value of field i (MACs/IPv4 as integers)
``match_mask``     u8[NF]    mask of field i, read only where ``match_masked``
``actions``        [M]       ``MAX_ACTIONS`` slots of ``ACTION_DTYPE``:
  ``.op``          u1        ``OP_OUTPUT`` / ``OP_SET_FIELD`` / ``OP_DEC_NW_TTL`` / ``OP_MOVE`` /
                             ``OP_CT`` / ``OP_CONJUNCTION`` / ``OP_RESUBMIT``
  ``.field``       u1        set-field field index; move source field index; ct: 1 = commit;
                             conjunction: its clause (1..n)
  ``.dst``         u1        move destination field index; conjunction: n_clauses
  ``.arg``         u2        output max_len; move n_bits; ct: recirculation table (255: none);
                             resubmit: its table (from the packet's in_port)
  ``.value``       u8        output port; set-field value; ct zone; conjunction id
=================  ========  ===================================================

Fields are indexed by :data:`FIELD_ORDER`, derived from :data:`dfflow.flows.FIELDS`
and sorted the way os-ken's ``OFPMatch`` serializes them, i.e. by OXM type
``(oxm_class << 7) | oxm_field`` -- so Nicira registers (class 0x0001) come before
every OpenFlow-basic field (class 0x8000). The packer walks ``match_present``
bit by bit and therefore always emits canonical order, without sorting. A
presence bitmap with fixed value/mask columns was chosen over (field, value)
match slots: it needs no sort, no duplicate check, and vectorized code fills a
whole column at once (``rows["match_value"][:, FIELD_INDEX["eth_dst"]] = macs``).

Compiled or vectorized producers (the flow compiler) call :meth:`FlowBatch.add_rows`
and fill the returned view; :meth:`FlowBatch.append` is the Python encoder of one
:class:`dfflow.flows.Flow` for non-hot paths and tests. Every row is checked by
the packer (and rows appended through the encoder are checked at once), so a
bad value raises :class:`ValueError` naming the field before any byte is produced.
"""
from __future__ import annotations

import struct
from typing import Iterable, Iterator

import numpy as np

from dfflow import core
from dfflow.flows import (CT_NO_TABLE, FIELDS, IPV4_FIELDS, MAC_FIELDS, OXM_EXPERIMENTER, Action, Command,
                          Conjunction, Ct, DecTtl, Flow, MatchItem, Move, Output, Resubmit, SetField, oxm_order)

FIELD_ORDER: tuple[str, ...] = tuple(sorted(FIELDS, key=oxm_order))
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(FIELD_ORDER)}
FIELD_BIT: dict[str, int] = {name: 1 << i for i, name in enumerate(FIELD_ORDER)}
NF = len(FIELD_ORDER)
MAX_ACTIONS = 8  # an ARP responder needs 8 (3 moves, 4 set-fields, output in_port)

# The action slots' opcodes are the packer's; the numbers of flows.py it also writes must be its own.
OP_NONE, OP_OUTPUT, OP_SET_FIELD, OP_DEC_NW_TTL, OP_MOVE, OP_CT, OP_CONJUNCTION, OP_RESUBMIT = (
    core.ACTION_OPCODES[name]
    for name in ("NONE", "OUTPUT", "SET_FIELD", "DEC_NW_TTL", "MOVE", "CT", "CONJUNCTION", "RESUBMIT"))
core.require_agreement(
    "FLOW_MOD commands and OXM classes",
    {"OFPFC_DELETE": Command.DELETE, "OFPFC_DELETE_STRICT": Command.DELETE_STRICT,
     "OFPXMC_EXPERIMENTER": OXM_EXPERIMENTER},
    {name: core.OPENFLOW[name] for name in ("OFPFC_DELETE", "OFPFC_DELETE_STRICT", "OFPXMC_EXPERIMENTER")})
# what a row encodes (not learn)
PACKABLE_ACTIONS = (Output, SetField, DecTtl, Move, Ct, Conjunction, Resubmit)

# Range rules beyond the field width (the packer enforces them too).
VNI_MAX = (1 << 24) - 1  # dfflow's tunnels (Geneve/VXLAN) carry a 24-bit VNI in tunnel_id
VALUE_LIMITS: dict[str, int] = {"tunnel_id": VNI_MAX}
OFPORT_FIELDS = frozenset({"in_port"})  # values must be a valid OpenFlow port number

ACTION_DTYPE = np.dtype([("op", "u1"), ("field", "u1"), ("dst", "u1"), ("arg", "<u2"),
                         ("value", "<u8")], align=True)
FLOW_DTYPE = np.dtype([
    ("cookie", "<u8"), ("wmeta_value", "<u8"), ("wmeta_mask", "<u8"),
    ("match_present", "<u8"), ("match_masked", "<u8"),
    ("priority", "<u2"), ("goto", "<i2"), ("command", "u1"), ("table", "u1"),
    ("n_actions", "u1"), ("has_wmeta", "u1"),
    ("match_value", "<u8", (NF,)), ("match_mask", "<u8", (NF,)),
    ("actions", ACTION_DTYPE, (MAX_ACTIONS,)),
], align=True)

LAYOUT = core.FlowLayout(
    FLOW_DTYPE,
    [(name, FIELDS[name].oxm_class, FIELDS[name].oxm_field, FIELDS[name].bits, FIELDS[name].maskable,
      name in OFPORT_FIELDS, VALUE_LIMITS.get(name, (1 << FIELDS[name].bits) - 1))
     for name in FIELD_ORDER],
    MAX_ACTIONS, commands=tuple(int(c) for c in Command))

_U64 = (1 << 64) - 1


def _empty_rows(k: int) -> np.ndarray:
    rows = np.zeros(k, FLOW_DTYPE)
    rows["goto"] = -1
    return rows


_BLANK = _empty_rows(1)[0]


class FlowBatch:
    """Flows as rows of a growable structured array; ``array[:n]`` are the flows."""

    layout = LAYOUT

    def __init__(self, capacity: int = 64) -> None:
        self.array: np.ndarray = _empty_rows(max(1, int(capacity)))
        self.n = 0

    # --------------------------------------------------------------- container
    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"FlowBatch(n={self.n}, capacity={len(self.array)})"

    @property
    def capacity(self) -> int:
        return len(self.array)

    @property
    def rows(self) -> np.ndarray:
        """A view of the used rows (column access: ``batch.rows["priority"]``)."""
        return self.array[:self.n]

    def reserve(self, capacity: int) -> None:
        """Grow the array to hold at least ``capacity`` rows (earlier row views go stale)."""
        if capacity > len(self.array):
            bigger = _empty_rows(max(capacity, 2 * len(self.array)))
            bigger[:self.n] = self.array[:self.n]
            self.array = bigger

    def add_rows(self, k: int) -> np.ndarray:
        """Append ``k`` blank rows (goto -1, all else 0) and return a view of them to fill.

        The view stays valid until the batch grows again (next ``add_rows``/``append``
        beyond capacity): fill it first. The packer validates the rows.
        """
        if k < 0:
            raise ValueError(f"add_rows: negative count {k}")
        self.reserve(self.n + k)
        rows = self.array[self.n:self.n + k]
        rows[...] = _BLANK
        self.n += k
        return rows

    def clear(self) -> None:
        self.n = 0

    # --------------------------------------------------------------- encoder
    def append(self, flow: Flow, check: bool = True) -> int:
        """Encode one Flow into the next row (checked at once, unless it is a template's
        prototype whose values are still 0); returns its row index."""
        record = _encode(flow)
        if self.n == len(self.array):
            self.reserve(self.n + 1)
        i = self.n
        _RECORD.pack_into(self.array, i * FLOW_DTYPE.itemsize, *record)
        self.n = i + 1
        if not check:
            return i
        try:
            core.validate_flows(self, i, i + 1)
        except ValueError as exc:
            self.n = i
            self.array[i] = _BLANK
            raise ValueError(str(exc).replace(f"flow {i}: ", "", 1)) from None
        return i

    def extend(self, flows: Iterable[Flow]) -> None:
        for flow in flows:
            self.append(flow)

    @classmethod
    def of_rows(cls, rows: np.ndarray) -> "FlowBatch":
        """A batch over existing rows of the flow record (no copy; the packer validates them)."""
        if (rows.dtype is not FLOW_DTYPE and rows.dtype != FLOW_DTYPE) or not rows.flags.c_contiguous:
            raise TypeError(f"of_rows: expected C-contiguous rows of the flow record, got {rows.dtype}")
        batch = cls.__new__(cls)
        batch.array, batch.n = rows, len(rows)
        return batch

    @classmethod
    def from_flows(cls, flows: Iterable[Flow]) -> "FlowBatch":
        flows = list(flows)
        batch = cls(len(flows))
        batch.extend(flows)
        return batch

    # --------------------------------------------------------------- decoder
    def flow(self, i: int) -> Flow:
        """Row ``i`` back as a Flow (canonical match order)."""
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} out of range (batch has {self.n} flows)")
        return _decode(self.array[i])

    def flows(self) -> list[Flow]:
        return [self.flow(i) for i in range(self.n)]

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.flows())

    # --------------------------------------------------------------- packing
    def pack(self, xid_start: int) -> bytes:
        """All flows as OpenFlow 1.3 FLOW_MOD messages, xids ``xid_start``, ``xid_start+1``..."""
        return core.pack_flow_mods(self, xid_start)

    def pack_bundle(self, bundle_id: int, xid_start: int,
                    flags: int = core.ONF_BF_ATOMIC | core.ONF_BF_ORDERED, commit: bool = True) -> bytes:
        return core.pack_bundle(self, bundle_id, xid_start, flags, commit)


# ------------------------------------------------------------------- encoding helpers

def _field_value(what: str, name: str, value: object) -> int:
    """A field value as an integer: MAC/IPv4 strings are parsed, ints range-checked."""
    if isinstance(value, str):
        try:
            if name in MAC_FIELDS:
                return core.mac_to_int(value)
            if name in IPV4_FIELDS:
                return core.ipv4_to_int(value)
        except ValueError as exc:
            raise ValueError(f"{what} {name!r}: {exc}") from None
        raise ValueError(f"{what} {name!r}: expected an integer, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} {name!r}: expected an integer, got {value!r}")
    value = int(value)
    bits = FIELDS[name].bits
    if value < 0 or value >> bits:
        raise ValueError(f"{what} {name!r}: value {value:#x} does not fit in {bits} bits")
    return value


def _field_index(what: str, name: object) -> int:
    index = FIELD_INDEX.get(name) if isinstance(name, str) else None
    if index is None:
        raise ValueError(f"{what}: unknown field {name!r} (known: {', '.join(FIELD_ORDER)})")
    return index


def _int_in(what: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{what}: {value!r} out of range ({lo}..{hi})")
    return int(value)


def _record_struct(dtype: np.dtype) -> struct.Struct:
    """A struct.Struct writing one record of `dtype` (fields in offset order, padding zeroed)."""
    codes = {"u1": "B", "u2": "H", "i2": "h", "u4": "I", "u8": "Q"}
    items = [(at, codes[scalar.str[1:]], scalar.itemsize) for at, scalar in core.field_spans(dtype)]
    fmt, pos = "<", 0
    for at, code, size in sorted(items):
        fmt += "x" * (at - pos) + code
        pos = at + size
    fmt += "x" * (dtype.itemsize - pos)
    packer = struct.Struct(fmt)
    assert packer.size == dtype.itemsize
    return packer


_RECORD = _record_struct(FLOW_DTYPE)


def _encode(flow: Flow) -> list[int]:
    """One Flow as the flat list of record values, in _RECORD's order (raises ValueError)."""
    command = _int_in("command", flow.command, 0, 4)
    table = _int_in("table", flow.table, 0, 255)
    priority = _int_in("priority", flow.priority, 0, 0xFFFF)
    cookie = _int_in("cookie", flow.cookie, 0, _U64)
    present = masked = 0
    values = [0] * NF
    masks = [0] * NF
    for item in flow.match:
        if not isinstance(item, tuple) or len(item) != 3:
            raise ValueError(f"match: expected (field, value, mask) items, got {item!r}")
        name, value, mask = item
        k = _field_index("match", name)
        if present >> k & 1:
            raise ValueError(f"match field {name!r} given twice")
        present |= 1 << k
        values[k] = _field_value("match field", name, value)
        if mask is not None:
            if not FIELDS[name].maskable:
                raise ValueError(f"match field {name!r} cannot be masked")
            masked |= 1 << k
            masks[k] = _field_value("match field mask", name, mask)
    goto = -1 if flow.goto is None else _int_in("goto", flow.goto, 0, 254)
    wm = flow.write_metadata
    if wm is None:
        has_wmeta = wm_value = wm_mask = 0
    else:
        if not isinstance(wm, tuple) or len(wm) != 2:
            raise ValueError(f"write_metadata: expected (value, mask), got {wm!r}")
        has_wmeta = 1
        wm_value = _int_in("write_metadata value", wm[0], 0, _U64)
        wm_mask = _int_in("write_metadata mask", wm[1], 0, _U64)
    actions = flow.actions
    if len(actions) > MAX_ACTIONS:
        raise ValueError(f"actions: {len(actions)} actions, at most {MAX_ACTIONS} fit a row")
    slots = [0] * (5 * MAX_ACTIONS)  # per slot: op, field, dst, arg, value
    for k, action in enumerate(actions):
        j = 5 * k
        if isinstance(action, Output):
            slots[j] = OP_OUTPUT
            slots[j + 3] = _int_in(f"action {k} output max_len", action.max_len, 0, 0xFFFF)
            slots[j + 4] = _int_in(f"action {k} output port", action.port, 0, 0xFFFFFFFF)
        elif isinstance(action, SetField):
            slots[j] = OP_SET_FIELD
            slots[j + 1] = _field_index(f"action {k} set_field", action.field)
            slots[j + 4] = _field_value(f"action {k} set_field", action.field, action.value)
        elif isinstance(action, DecTtl):
            slots[j] = OP_DEC_NW_TTL
        elif isinstance(action, Move):
            slots[j] = OP_MOVE
            slots[j + 1] = _field_index(f"action {k} move src", action.src)
            slots[j + 2] = _field_index(f"action {k} move dst", action.dst)
            slots[j + 3] = _int_in(f"action {k} move n_bits", action.n_bits, 1, 0xFFFF)
        elif isinstance(action, Ct):
            slots[j] = OP_CT
            slots[j + 1] = int(bool(action.commit))
            slots[j + 3] = CT_NO_TABLE if action.table is None else _int_in(f"action {k} ct table", action.table,
                                                                            0, 254)
            slots[j + 4] = _int_in(f"action {k} ct zone", action.zone, 0, 0xFFFF)
        elif isinstance(action, Resubmit):
            slots[j] = OP_RESUBMIT
            slots[j + 3] = _int_in(f"action {k} resubmit table", action.table, 0, 254)
        elif isinstance(action, Conjunction):
            slots[j] = OP_CONJUNCTION
            slots[j + 2] = _int_in(f"action {k} conjunction n_clauses", action.n_clauses, 2, 64)
            slots[j + 1] = _int_in(f"action {k} conjunction clause", action.clause, 1, action.n_clauses)
            slots[j + 4] = _int_in(f"action {k} conjunction id", action.id, 0, 0xFFFFFFFF)
        else:
            raise ValueError(f"action {k}: unknown action {action!r}")
    return [cookie, wm_value, wm_mask, present, masked, priority, goto, command, table, len(actions),
            has_wmeta, *values, *masks, *slots]


def _decode(row: np.void) -> Flow:
    present = int(row["match_present"])
    masked = int(row["match_masked"])
    match: list[MatchItem] = []
    for k, name in enumerate(FIELD_ORDER):
        if present >> k & 1:
            mask = int(row["match_mask"][k]) if masked >> k & 1 else None
            match.append((name, int(row["match_value"][k]), mask))
    actions: list[Action] = []
    for k in range(int(row["n_actions"])):
        slot = row["actions"][k]
        op = int(slot["op"])
        if op == OP_OUTPUT:
            actions.append(Output(int(slot["value"]), int(slot["arg"])))
        elif op == OP_SET_FIELD:
            actions.append(SetField(FIELD_ORDER[int(slot["field"])], int(slot["value"])))
        elif op == OP_DEC_NW_TTL:
            actions.append(DecTtl())
        elif op == OP_MOVE:
            actions.append(Move(FIELD_ORDER[int(slot["field"])], FIELD_ORDER[int(slot["dst"])],
                                int(slot["arg"])))
        elif op == OP_CT:
            recirc = int(slot["arg"])
            actions.append(Ct(int(slot["value"]), bool(slot["field"]), None if recirc == CT_NO_TABLE else recirc))
        elif op == OP_CONJUNCTION:
            actions.append(Conjunction(int(slot["value"]), int(slot["field"]), int(slot["dst"])))
        elif op == OP_RESUBMIT:
            actions.append(Resubmit(int(slot["arg"])))
        else:
            raise ValueError(f"action {k}: unknown opcode {op}")
    goto = int(row["goto"])
    return Flow(table=int(row["table"]), priority=int(row["priority"]), match=tuple(match),
                actions=tuple(actions), goto=None if goto == -1 else goto,
                write_metadata=(int(row["wmeta_value"]), int(row["wmeta_mask"])) if row["has_wmeta"] else None,
                cookie=int(row["cookie"]), command=Command(int(row["command"])))


__all__ = ["FlowBatch", "FLOW_DTYPE", "ACTION_DTYPE", "FIELD_ORDER", "FIELD_INDEX", "FIELD_BIT", "NF",
           "MAX_ACTIONS", "PACKABLE_ACTIONS", "OP_NONE", "OP_OUTPUT", "OP_SET_FIELD", "OP_DEC_NW_TTL", "OP_MOVE", "OP_CT", "OP_CONJUNCTION", "OP_RESUBMIT", "VNI_MAX",
           "LAYOUT"]
