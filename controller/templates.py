"""A port's flows, declared once as data: templates, and the program that instantiates them.

Each app's port flows -- what the blueprint's add_local_port / add_remote_port
events make for it -- are a `PortProgram`: a list of flow templates, each with the port facts and role
it applies to (`when`) and whether it is made once, once per IPv4 address,
once per floating IP, or once per allowed address pair (single addresses and
prefixes apart) of the port (`each`). Values that vary from port to port --
match values and masks, action values -- are `Param`s. Two interpreters run the same program:

* `dfflow._core.compile_changes` over a `dfflow._core.CompiledProgram` (built by
  `controller.compiler.compile_program`): the controller's only interpreter of port
  programs, and the bulk compiler, over typed port columns, with no Python object per flow;
* `PortProgram.flows` (here, Python): the oracle the tests hold the compiled core to
  (and the `osken` variant of `dfflow-bench flow-update`).

Both read the same `Entry` list, so the flows cannot drift; the tests compare
them flow for flow.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Union

from dfflow.flowbatch import PACKABLE_ACTIONS
from dfflow.flows import FIELDS, Action, Flow, Learn


APP_COOKIE_SHIFT = 56  # cookie = app id << 56 | 56-bit hash of the object id


def object_hash(obj_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(obj_id.encode(), digest_size=7).digest(), "big")


class Param(enum.IntEnum):
    """The values a port template may leave open (the compiled core numbers them the same)."""

    OBJECT = 0       # 56-bit hash of the port id: the low bits of every cookie
    VNI = 1          # the port's network
    MAC = 2
    OFPORT = 3       # local role: the VIF's OpenFlow port here
    TUNNEL = 4       # remote role: our tunnel to the chassis that hosts the port
    COPY_TUNNEL = 5  # an `announce` migration in flight: our tunnel to its destination, where all of the
    #                  port's traffic goes (on the gated destination itself: to the source, where the VM
    #                  still runs). The name is historical: no packet is copied.
    IP = 6           # `each=PER_IP`: this IPv4 address of the port
    FIP = 7          # `each=PER_FIP`: the floating IP, ...
    FIP_MAC = 8      # ... its MAC,
    FIXED_IP = 9     # ... the fixed IP it maps to,
    EXT_VNI = 10     # ... the external network's VNI,
    ROUTER_MAC = 11  # ... and the MAC of the router port on the port's subnet
    COOKIE = 12      # the flow's own cookie (a learn action stamps it on the flows it makes)
    PAIR_MAC = 13    # `each=PER_PAIR_*`: an allowed address pair's MAC,
    PAIR_IP = 14     # ... its address (a prefix's network address),
    PAIR_MASK = 15   # ... and its netmask (PER_PAIR_NET only: a single address matches exactly)


N_PARAMS = len(Param)
# The params that say where a port lives: an entry that uses none of them makes the same flows
# wherever the port is, so a move between two remote chassis does not touch them.
LOCATION_PARAMS = frozenset({Param.OFPORT, Param.TUNNEL, Param.COPY_TUNNEL})


class Fact(enum.IntFlag):
    """What holds for a port in a role; an entry applies when all of its `when` facts hold."""

    LOCAL = 1 << 0      # its VIF is on this chassis
    REMOTE = 1 << 1     # another chassis hosts it
    GATED = 1 << 2      # LOCAL: pre-programmed `announce` destination, still closed; REMOTE: the source
    #                     an `announce` migration's VM left (forwards nothing a tunnel brings for it)
    OPEN = 1 << 3
    COPY = 1 << 4       # traffic for it goes to an `announce` destination alone (gated: to the source)
    NO_COPY = 1 << 5
    PS_OFF = 1 << 6     # port security disabled
    PS_MAC = 1 << 7     # port security on, no IPv4 address: the MAC only
    PS_IPS = 1 << 8     # port security on, with IPv4 addresses
    ROUTED = 1 << 9     # its network has a router


class Each(enum.IntEnum):
    ONCE = 0
    PER_IP = 1
    PER_FIP = 2
    PER_PAIR_HOST = 3  # each allowed address pair that is a single IPv4 address
    PER_PAIR_NET = 4   # each allowed address pair that is an IPv4 prefix


Value = Union[int, Param]


@dataclass(frozen=True)
class FlowTemplate:
    """A flow whose match values and masks, action values and write-metadata value may be `Param`s."""

    name: str
    table: int
    priority: int
    match: tuple[tuple[str, Value, Value | None], ...]
    actions: tuple[Any, ...] = ()
    goto: int | None = None
    write_metadata: tuple[Value, int] | None = None

    @functools.cached_property
    def params(self) -> frozenset[Param]:
        used = {v for _, value, mask in self.match for v in (value, mask) if isinstance(v, Param)}
        for action in self.actions:
            used |= set(_action_params(action))
        if self.write_metadata is not None and isinstance(self.write_metadata[0], Param):
            used.add(self.write_metadata[0])
        return frozenset(used)

    def packable(self) -> bool:
        """Whether the compiled packer encodes its actions (learn it does not)."""
        return all(isinstance(a, PACKABLE_ACTIONS) for a in self.actions)

    def flow(self, values: Mapping[Param, int], cookie: int) -> Flow:
        def sub(value: Value) -> int:
            return values[value] if isinstance(value, Param) else value

        match = tuple((name, sub(value), None if mask is None else sub(mask)) for name, value, mask in self.match)
        actions = tuple(_substitute(action, sub) for action in self.actions)
        wmeta = None if self.write_metadata is None else (sub(self.write_metadata[0]), self.write_metadata[1])
        return Flow(self.table, self.priority, match, actions, self.goto, wmeta, cookie)


def template(name: str, table: int, priority: int, match: Mapping[str, Value | tuple[Value, Value]],
             actions: Iterable[Any] = (), goto: int | None = None,
             write_metadata: tuple[Value, int] | None = None) -> FlowTemplate:
    """A template with its match in the canonical (OXM) order `dfflow.flows.match` uses; a match value
    given as (value, mask) is masked."""
    for name_ in match:
        if name_ not in FIELDS:
            raise ValueError(f"template {name}: unknown match field {name_!r}")
    items = tuple(sorted(((f, *(v if isinstance(v, tuple) else (v, None))) for f, v in match.items()),
                         key=lambda item: (FIELDS[item[0]].oxm_class, FIELDS[item[0]].oxm_field)))
    return FlowTemplate(name, table, priority, items, tuple(actions), goto, write_metadata)


def with_match(base: FlowTemplate, name: str, **extra: Value) -> FlowTemplate:
    """`base` with more match fields (e.g. a gated variant: reg5=1)."""
    fields = {f: v if m is None else (v, m) for f, v, m in base.match} | extra
    return template(name, base.table, base.priority, fields, base.actions, base.goto, base.write_metadata)


def _action_params(action: Any) -> Iterator[Param]:
    for f in dataclasses.fields(action):
        value = getattr(action, f.name)
        if isinstance(value, Param):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, tuple):
                    yield from (v for v in item if isinstance(v, Param))


def _substitute(action: Action, sub: Any) -> Action:
    changes = {}
    for f in dataclasses.fields(action):
        value = getattr(action, f.name)
        if isinstance(value, Param):
            changes[f.name] = sub(value)
        elif isinstance(action, Learn) and f.name in ("match", "loads"):
            changes[f.name] = tuple((n, sub(v)) for n, v in value)
    return dataclasses.replace(action, **changes) if changes else action


@dataclass(frozen=True)
class Entry:
    """One template in a program: made `each` time when all `when` facts hold, its params bound
    through `bind` (template param -> the port param that fills it; the others fill themselves)."""

    template: FlowTemplate
    when: Fact = Fact(0)
    each: Each = Each.ONCE
    bind: tuple[tuple[Param, Param], ...] = ()

    def source(self, param: Param) -> Param:
        return dict(self.bind).get(param, param)

    def params(self) -> frozenset[Param]:
        return frozenset(self.source(p) for p in self.template.params)

    def uses_location(self) -> bool:
        return bool(self.params() & LOCATION_PARAMS)


def bound(template_: FlowTemplate, when: Fact = Fact(0), each: Each = Each.ONCE,
          **bind: Param) -> Entry:
    return Entry(template_, when, each, tuple((Param[k.upper()], v) for k, v in bind.items()))


@dataclass(frozen=True)
class FloatingIpFacts:
    fip: int
    fip_mac: int
    fixed_ip: int
    ext_vni: int
    router_mac: int


@dataclass(frozen=True)
class AddressPairFacts:
    """An allowed address pair: `ip` with `mask` (all ones: a single address) from `mac`."""
    mac: int
    ip: int
    mask: int = 0xFFFFFFFF

    @property
    def is_host(self) -> bool:
        return self.mask == 0xFFFFFFFF


@dataclass(frozen=True)
class PortFacts:
    """Everything a port's flows depend on besides its role (integers, as flows carry them)."""

    object_hash: int
    vni: int
    mac: int
    port_security: bool = True
    routed: bool = False
    ipv4s: tuple[int, ...] = ()
    fips: tuple[FloatingIpFacts, ...] = ()
    pairs: tuple[AddressPairFacts, ...] = ()  # IPv4 allowed address pairs: single addresses first


class PortRole(NamedTuple):
    """The port on this chassis: hosted here (LOCAL, on `ofport`) or there (REMOTE, via `tunnel`).

    An immutable record made for every port of every change (the view's answer, the engine's
    placed roles): a named tuple, made and compared several times faster than a frozen dataclass."""

    local: bool
    ofport: int = 0
    tunnel: int = 0
    copy_tunnel: int = 0  # an `announce` migration in flight: the tunnel to its destination (gated: to the
    #                       source, 0 if none); 0 otherwise
    gated: bool = False  # see Fact.GATED

    def facts(self, port: PortFacts) -> Fact:
        facts = Fact.LOCAL if self.local else Fact.REMOTE
        facts |= Fact.GATED if self.gated else Fact.OPEN
        facts |= Fact.COPY if self.copy_tunnel else Fact.NO_COPY
        if not port.port_security:
            facts |= Fact.PS_OFF
        else:
            facts |= Fact.PS_IPS if port.ipv4s else Fact.PS_MAC
        if port.routed:
            facts |= Fact.ROUTED
        return facts


@functools.lru_cache(maxsize=4096)
def remote_role(tunnel: int, copy_tunnel: int = 0, gated: bool = False) -> PortRole:
    """The REMOTE role via `tunnel`, one held record per (tunnel, copy, gate): a chassis answers it
    for every remote port of every change, and a few tunnels make all of them."""
    return PortRole(False, tunnel=tunnel, copy_tunnel=copy_tunnel, gated=gated)


class PortProgram:
    """An app's port flows: its entries, and its app id (the cookie's top byte)."""

    def __init__(self, app_id: int, entries: Iterable[Entry]):
        self.app_id = app_id
        self.entries = tuple(entries)

    def flows(self, port: PortFacts, role: PortRole | None) -> list[Flow]:
        """The Python interpreter of the program (the compiled one is dfflow._core.compile_changes)."""
        if role is None:
            return []
        facts = role.facts(port)
        cookie = (self.app_id << APP_COOKIE_SHIFT) | port.object_hash
        values = {Param.OBJECT: port.object_hash, Param.COOKIE: cookie, Param.VNI: port.vni, Param.MAC: port.mac,
                  Param.OFPORT: role.ofport, Param.TUNNEL: role.tunnel, Param.COPY_TUNNEL: role.copy_tunnel}
        flows = []
        for entry in self.entries:
            if entry.when & ~facts:
                continue
            for each in _each(entry.each, port):
                merged = values | each
                flows.append(entry.template.flow({p: merged[entry.source(p)] for p in entry.template.params},
                                                 cookie))
        return flows


def _each(kind: Each, port: PortFacts) -> Iterator[dict[Param, int]]:
    if kind == Each.ONCE:
        yield {}
    elif kind == Each.PER_IP:
        for ip in port.ipv4s:
            yield {Param.IP: ip}
    elif kind in (Each.PER_PAIR_HOST, Each.PER_PAIR_NET):
        for pair in port.pairs:
            if pair.is_host == (kind == Each.PER_PAIR_HOST):
                yield {Param.PAIR_MAC: pair.mac, Param.PAIR_IP: pair.ip, Param.PAIR_MASK: pair.mask}
    else:
        for fip in port.fips:
            yield {Param.FIP: fip.fip, Param.FIP_MAC: fip.fip_mac, Param.FIXED_IP: fip.fixed_ip,
                   Param.EXT_VNI: fip.ext_vni, Param.ROUTER_MAC: fip.router_mac}


__all__ = ["APP_COOKIE_SHIFT", "object_hash", "Param", "N_PARAMS", "LOCATION_PARAMS", "Fact", "Each", "FlowTemplate", "template", "with_match",
           "Entry", "bound", "FloatingIpFacts", "AddressPairFacts", "PortFacts", "PortRole", "PortProgram"]
