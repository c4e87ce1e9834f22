"""The os-ken codec: dfflow's `Flow` values to os-ken's OpenFlow message objects and back.

`flow_mod` builds the OFPFlowMod of a flow (what `Flow.to_osken` returns: the reference the
compiled packer is checked against byte for byte, and the path of the few flows it does not
encode); `flow_from_stats` reads a flow dumped from Open vSwitch (an OFPFlowStats, or a parsed
OFPFlowMod) back into a `Flow`, for reconciliation. os-ken names fields as dfflow does (OXM
names); MACs and IPv4 addresses are strings on its side, integers on ours.
"""
from __future__ import annotations

from typing import Any, Iterable

from dfflow import core
from dfflow.flows import (CT_NO_TABLE, FIELDS, IPV4_FIELDS, MAC_FIELDS, Action, Command, Conjunction, Ct, DecTtl,
                          Flow, Learn, MatchItem, Move, Output, Resubmit, SetField, match)


def flow_mod(flow: Flow, datapath: Any, xid: int | None = None) -> Any:
    """The flow as an os-ken OFPFlowMod of `datapath`'s OpenFlow version (xid set if given)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    instructions = []
    if flow.actions:
        instructions.append(parser.OFPInstructionActions(
            ofp.OFPIT_APPLY_ACTIONS, [_osken_action(a, parser) for a in flow.actions]))
    if flow.write_metadata is not None:
        instructions.append(parser.OFPInstructionWriteMetadata(*flow.write_metadata))
    if flow.goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(flow.goto))
    deleting = flow.command in (Command.DELETE, Command.DELETE_STRICT)
    msg = parser.OFPFlowMod(
        datapath, cookie=flow.cookie, cookie_mask=(2**64 - 1) if deleting else 0,
        table_id=flow.table, command=int(flow.command), priority=flow.priority,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=osken_match(flow.match, parser), instructions=[] if deleting else instructions)
    if xid is not None:
        msg.xid = xid
    return msg


def osken_match(items: Iterable[MatchItem], parser: Any) -> Any:
    kwargs = {}
    for name, value, mask in items:
        kwargs[name] = _osken_value(name, value) if mask is None else \
            (_osken_value(name, value), _osken_value(name, mask))
    return parser.OFPMatch(**kwargs)


def _osken_value(name: str, value: int) -> Any:
    bits = FIELDS[name].bits
    if name in MAC_FIELDS:
        return core.int_to_mac(value)
    if name in IPV4_FIELDS:
        return core.int_to_ipv4(value)
    if value >> bits:
        raise ValueError(f"{name}: {value:#x} does not fit in {bits} bits")
    return value


def _osken_action(action: Action, parser: Any) -> Any:
    if isinstance(action, Output):
        return parser.OFPActionOutput(action.port, action.max_len)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: _osken_value(action.field, action.value)})
    if isinstance(action, DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, Move):
        return parser.NXActionRegMove(src_field=action.src, dst_field=action.dst, n_bits=action.n_bits)
    if isinstance(action, Resubmit):
        return parser.NXActionResubmitTable(table_id=action.table)
    if isinstance(action, Learn):
        specs = [parser.NXFlowSpecMatch(src=value, dst=(name, 0), n_bits=FIELDS[name].bits)
                 for name, value in action.match]
        specs += [parser.NXFlowSpecLoad(src=value, dst=(name, 0), n_bits=FIELDS[name].bits)
                  for name, value in action.loads]
        if action.output_in_port:  # NXM's 16-bit in_port: what OVS's learn outputs to unambiguously
            specs.append(parser.NXFlowSpecOutput(src=("in_port_nxm", 0), n_bits=16))
        return parser.NXActionLearn(table_id=action.table, specs=specs, priority=action.priority,
                                    idle_timeout=action.idle_timeout, hard_timeout=action.hard_timeout,
                                    cookie=action.cookie)
    if isinstance(action, Ct):
        return parser.NXActionCT(flags=1 if action.commit else 0, zone_src="", zone_ofs_nbits=action.zone,
                                 recirc_table=CT_NO_TABLE if action.table is None else action.table, alg=0,
                                 actions=[])
    if isinstance(action, Conjunction):  # the wire numbers clauses from 0
        return parser.NXActionConjunction(clause=action.clause - 1, n_clauses=action.n_clauses, id_=action.id)
    raise TypeError(f"unknown action {action!r}")


# ------------------------------------------------------------------ reading flows back

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
