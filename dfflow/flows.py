"""OpenFlow 1.3 flows as immutable values: what apps declare and the controller sends.

A `Flow` names its match fields and actions by the names below (os-ken's OXM
names), with integer values (MACs as 48-bit ints, IPv4 as 32-bit ints). The
field table is declared once here; the compiled packer and the os-ken codec
(`dfflow.openflow.osken`, behind `to_osken`) both read it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Union


class Command(enum.IntEnum):
    ADD = 0
    MODIFY_STRICT = 2
    DELETE = 3
    DELETE_STRICT = 4


@dataclass(frozen=True)
class FieldSpec:
    name: str  # os-ken's name for the field
    oxm_class: int
    oxm_field: int
    bits: int
    maskable: bool
    kind: str = "int"  # how people write its values: "mac", "ipv4", or a plain "int"


OXM_OPENFLOW_BASIC = 0x8000
NXM_1 = 0x0001
OXM_EXPERIMENTER = 0xFFFF

# Every field the pipeline matches on or sets. Order is irrelevant here: os-ken
# and the packer serialize matches in OXM (class, field) order -- numerically, so
# NXM_1 registers (class 0x0001) precede OpenFlow-basic fields (class 0x8000).
FIELDS: dict[str, FieldSpec] = {f.name: f for f in (
    FieldSpec("in_port", OXM_OPENFLOW_BASIC, 0, 32, False),
    FieldSpec("metadata", OXM_OPENFLOW_BASIC, 2, 64, True),
    FieldSpec("eth_dst", OXM_OPENFLOW_BASIC, 3, 48, True, "mac"),
    FieldSpec("eth_src", OXM_OPENFLOW_BASIC, 4, 48, True, "mac"),
    FieldSpec("eth_type", OXM_OPENFLOW_BASIC, 5, 16, False),
    FieldSpec("ip_proto", OXM_OPENFLOW_BASIC, 10, 8, False),
    FieldSpec("ipv4_src", OXM_OPENFLOW_BASIC, 11, 32, True, "ipv4"),
    FieldSpec("ipv4_dst", OXM_OPENFLOW_BASIC, 12, 32, True, "ipv4"),
    FieldSpec("tcp_dst", OXM_OPENFLOW_BASIC, 14, 16, True),
    FieldSpec("udp_src", OXM_OPENFLOW_BASIC, 15, 16, True),
    FieldSpec("udp_dst", OXM_OPENFLOW_BASIC, 16, 16, True),
    FieldSpec("sctp_dst", OXM_OPENFLOW_BASIC, 18, 16, True),
    FieldSpec("icmpv4_type", OXM_OPENFLOW_BASIC, 19, 8, False),
    FieldSpec("icmpv4_code", OXM_OPENFLOW_BASIC, 20, 8, False),
    FieldSpec("arp_op", OXM_OPENFLOW_BASIC, 21, 16, False),
    FieldSpec("arp_spa", OXM_OPENFLOW_BASIC, 22, 32, True, "ipv4"),
    FieldSpec("arp_tpa", OXM_OPENFLOW_BASIC, 23, 32, True, "ipv4"),
    FieldSpec("arp_sha", OXM_OPENFLOW_BASIC, 24, 48, True, "mac"),
    FieldSpec("arp_tha", OXM_OPENFLOW_BASIC, 25, 48, True, "mac"),
    FieldSpec("tunnel_id", OXM_OPENFLOW_BASIC, 38, 64, True),
    FieldSpec("reg5", NXM_1, 5, 32, True),
    FieldSpec("reg6", NXM_1, 6, 32, True),
    FieldSpec("reg7", NXM_1, 7, 32, True),
    FieldSpec("reg8", NXM_1, 8, 32, True),
    FieldSpec("reg9", NXM_1, 9, 32, True),
    FieldSpec("conj_id", NXM_1, 37, 32, False),  # set by a completed conjunctive match (Conjunction)
    FieldSpec("ct_state", NXM_1, 105, 32, True),
    # ONF's OpenFlow 1.3 extension (an experimenter OXM), not Nicira's: its prerequisites (eth_type,
    # ip_proto) must come first in the match, and a Nicira field would be serialized before them.
    FieldSpec("tcp_flags", OXM_EXPERIMENTER, 42, 16, True),
)}
TCP_SYN = 0x002


def oxm_order(name: str) -> tuple[int, int]:
    """Where a field goes in a match: os-ken's OFPMatch and the packer write fields by OXM type,
    (oxm_class, oxm_field) -- Nicira registers (class 0x0001) before OpenFlow-basic fields (0x8000)."""
    spec = FIELDS[name]
    return spec.oxm_class, spec.oxm_field


MAC_FIELDS = frozenset(name for name, spec in FIELDS.items() if spec.kind == "mac")
IPV4_FIELDS = frozenset(name for name, spec in FIELDS.items() if spec.kind == "ipv4")

OFPP_IN_PORT = 0xFFFFFFF8
OFPP_CONTROLLER = 0xFFFFFFFD
OFPCML_NO_BUFFER = 0xFFFF
ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_RARP = 0x8035
ETH_TYPE_IPV6 = 0x86DD
BROADCAST_MAC = 0xFFFFFFFFFFFF
MULTICAST_BIT = 0x010000000000


@dataclass(frozen=True)
class Output:
    port: int
    max_len: int = 0


@dataclass(frozen=True)
class SetField:
    field: str
    value: int


@dataclass(frozen=True)
class DecTtl:
    pass


@dataclass(frozen=True)
class Move:
    """Copy `n_bits` of `src` to `dst` (Nicira reg-move): how flows answer ARP in place."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True)
class Resubmit:
    """Run `table` for this packet now and come back (Nicira resubmit): a lookup inside an action list."""

    table: int


@dataclass(frozen=True)
class Learn:
    """Add a flow to `table` from the datapath itself (Nicira learn), matching `match` and loading
    `loads` (immediate values), and with `output_in_port` outputting to the port the learning packet
    came in on: how a pending port opens its own egress and ingress at its first announcement."""

    table: int
    priority: int
    idle_timeout: int
    hard_timeout: int
    cookie: int
    match: tuple[tuple[str, int], ...]
    loads: tuple[tuple[str, int], ...]
    output_in_port: bool = False


@dataclass(frozen=True)
class Ct:
    """Send the packet through Open vSwitch's connection tracker in `zone` (Nicira ct): with `commit`,
    remember its connection; with `table`, continue the pipeline there with ct_state set (the action
    list ends here)."""

    zone: int
    commit: bool = False
    table: int | None = None


@dataclass(frozen=True)
class Conjunction:
    """Make this flow clause `clause` (1..n_clauses) of conjunctive match `id` (Nicira conjunction):
    a packet matching one flow of every clause gets conj_id=`id` and the table is searched again.
    A flow with conjunction actions has no other action."""

    id: int
    clause: int
    n_clauses: int


# ct_state bits (OVS's): what the connection tracker said about the packet
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
CT_NO_TABLE = 255  # Nicira ct's recirc_table meaning "do not recirculate"


Action = Union[Output, SetField, DecTtl, Move, Resubmit, Learn, Ct, Conjunction]
MatchItem = tuple[str, int, Union[int, None]]  # (field, value, mask or None)


@dataclass(frozen=True)
class Flow:
    table: int
    priority: int
    match: tuple[MatchItem, ...] = ()
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    write_metadata: tuple[int, int] | None = None  # (value, mask)
    cookie: int = 0
    command: Command = Command.ADD

    @property
    def key(self) -> tuple[int, int, tuple[MatchItem, ...]]:
        """What makes a flow unique in a table (OpenFlow's strict identity)."""
        return self.table, self.priority, self.match

    def as_command(self, command: Command) -> "Flow":
        return Flow(self.table, self.priority, self.match, self.actions, self.goto,
                    self.write_metadata, self.cookie, command)

    def to_osken(self, datapath: Any, xid: int | None = None) -> Any:
        """The same flow as an os-ken OFPFlowMod: the reference path and the one-off path."""
        from dfflow.openflow.osken import flow_mod  # the codec imports this module
        return flow_mod(self, datapath, xid)


def match(**fields: int | tuple[int, int]) -> tuple[MatchItem, ...]:
    """match(eth_type=0x806, ipv4_dst=(addr, mask)) -> canonical, sorted match items."""
    items = []
    for name, value in fields.items():
        spec = FIELDS.get(name)
        if spec is None:
            raise ValueError(f"unknown match field {name!r}")
        if isinstance(value, tuple):
            if not spec.maskable:
                raise ValueError(f"{name} cannot be masked")
            items.append((name, value[0] & value[1], value[1]))
        else:
            items.append((name, value, None))
    return tuple(sorted(items, key=lambda item: oxm_order(item[0])))


def controller_output() -> Output:
    return Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER)


__all__ = ["Command", "FIELDS", "FieldSpec", "MAC_FIELDS", "IPV4_FIELDS", "Flow", "Output", "SetField", "DecTtl",
           "Move", "Resubmit", "Learn", "Ct", "Conjunction",
           "match", "oxm_order",
           "controller_output"]
