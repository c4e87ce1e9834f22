"""What one chassis' controller knows: the NB objects it follows and its local facts.

Pure data, no I/O. The daemon feeds it NB events and OVSDB facts; apps read it to
compute flows. The location of a port (which chassis hosts it now) is decided
here, in one place, from its binding and its migration record.
"""
from __future__ import annotations

import ipaddress
import operator
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

from controller.migration import current_location
from controller.templates import AddressPairFacts, FloatingIpFacts, PortFacts, PortRole, object_hash, remote_role
from dfflow import core
from dfflow.models import (Chassis, FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, Model, RouterPort,
                           Subnet)

LOCAL, REMOTE = "local", "remote"


@dataclass(frozen=True)
class Vif:
    """An OVSDB Interface carrying os-vif's external_ids, with an ofport."""

    iface_id: str
    name: str
    ofport: int
    attached_mac: str | None = None


class View:
    def __init__(self, chassis: str):
        self.chassis = chassis
        self.objects: dict[str, dict[str, Model]] = defaultdict(dict)
        self.vifs: dict[str, Vif] = {}  # iface-id -> VIF on this chassis' br-int
        self.tunnels: dict[str, int] = {}  # peer chassis -> ofport of our tunnel port to it
        self._ports_by_switch: dict[str, set[str]] = defaultdict(set)
        self._needed: frozenset[str] | None = None  # memo of needed_switches()
        # Kept per port as it changes, so that an event costs what its port touches, not a pass over
        # every port of its network (a network spread over 1,000 chassis has 1,000 ports or more):
        # what each port makes of its network here on its own (is_local, is_arriving) ...
        self._presence: dict[str, tuple[str, bool, bool]] = {}  # port id -> (switch, local, arriving)
        self._present = Counter[str]()  # switch -> ports local or arriving here (needed_switches' roots)
        self._local_here = Counter[str]()  # switch -> ports local here (switch_is_present)
        # ... and its role here, which also depends on the tunnels and the needed networks: rebuilt
        # whole when those change (rare), else updated per port.
        # port id -> (switch, role, the chassis of a REMOTE port or (ofport, pending) of a LOCAL one)
        self._placed: dict[str, tuple[str, str | None, Any]] | None = None
        self._local_ids: dict[str, set[str]] = defaultdict(set)  # switch -> ports whose role is LOCAL
        self._remote_at: dict[str, Counter[str]] = defaultdict(Counter)  # switch -> chassis -> REMOTE ports
        # Bumped whenever a network's flooding inputs change (its local ports, their VIFs, whether one
        # is a pending destination, the chassis hosting its remote ports): a port move that leaves it
        # alone needs no recompute of the network's flows (controller.engine).
        self.flood_epoch = 0
        # ports migrating to this chassis, until a while after their migration ended (controller.engine):
        # their established connections are admitted here meanwhile (controller.apps.secgroups)
        self.arrivals: set[str] = set()
        self._migrating: set[str] = set()  # ports whose NB version holds a migration record
        # port id -> (what its facts were made of, the facts): a move (a new binding, a migration record)
        # changes none of it. The port's own fields are compared by identity (an update read from the
        # version before shares the values it did not change, dfflow.models.base.Model.updated); the rest
        # of the view they read (networks, subnets, routers, floating IPs, the networks needed here), by
        # `_facts_epoch`, bumped whenever it may change.
        self._facts: dict[str, tuple[tuple[Any, ...], PortFacts]] = {}
        self._facts_epoch = 0

    # -- NB --------------------------------------------------------------------
    def put(self, obj: Model) -> Model | None:
        old = self.objects[obj.table].get(obj.id)
        self.objects[obj.table][obj.id] = obj
        if isinstance(obj, LogicalPort):
            if old is not None:
                self._ports_by_switch[old.lswitch].discard(obj.id)
            self._ports_by_switch[obj.lswitch].add(obj.id)
            if obj.migration is not None:
                self._migrating.add(obj.id)
            else:
                self._migrating.discard(obj.id)
            self._port_changed(obj.id)
        elif obj.table in _ROLE_TABLES:
            self._topology_changed()
        elif obj.table == FloatingIP.table:
            self._facts_epoch += 1
        return old

    def drop(self, table: str, obj_id: str) -> Model | None:
        old = self.objects[table].pop(obj_id, None)
        if isinstance(old, LogicalPort):
            self._ports_by_switch[old.lswitch].discard(obj_id)
            self._migrating.discard(obj_id)
            self._facts.pop(obj_id, None)
            self._port_changed(obj_id)
        elif table in _ROLE_TABLES:
            self._topology_changed()
        elif table == FloatingIP.table:
            self._facts_epoch += 1
        return old

    def set_vif(self, vif: Vif) -> None:
        self.vifs[vif.iface_id] = vif
        self._port_changed(vif.iface_id)

    def remove_vif(self, iface_id: str) -> Vif | None:
        vif = self.vifs.pop(iface_id, None)
        self._port_changed(iface_id)
        return vif

    def set_tunnels(self, tunnels: dict[str, int]) -> None:
        self.tunnels = dict(tunnels)
        self._placed = None

    # -- the per-port indexes ------------------------------------------------------
    def _topology_changed(self) -> None:
        """A network, subnet or router changed: what is needed, and every role, may differ."""
        self._needed = None
        self._placed = None
        self._facts_epoch += 1

    def _port_changed(self, port_id: str) -> None:
        port = self.port(port_id)
        was = self._presence.pop(port_id, None)
        now = (port.lswitch, self.is_local(port), self.is_arriving(port)) if port is not None else None
        if was == now:
            if was is not None:
                self._presence[port_id] = was
        else:
            touched = {entry[0]: entry[0] in self._present for entry in (was, now) if entry is not None}
            if was is not None:
                _uncount(self._present, was[0], was[1] or was[2])
                _uncount(self._local_here, was[0], was[1])
            if now is not None:
                self._presence[port_id] = now
                _count(self._present, now[0], now[1] or now[2])
                _count(self._local_here, now[0], now[1])
            if any((switch in self._present) != before for switch, before in touched.items()):
                self._needed = None  # the networks present here differ: recomputed when asked
                self._facts_epoch += 1
        if self._placed is None:
            return
        if self._needed is None:
            self._placed = None  # every role may change: rebuilt when asked
            return
        self._place(port_id, port)

    def _place(self, port_id: str, port: LogicalPort | None) -> None:
        was = self._placed.pop(port_id, None)
        now = None
        if port is not None:
            where = self.location(port)
            role = self._role_at(port, where)
            now = (port.lswitch, role, where if role == REMOTE else
                   (self.vifs[port_id].ofport, self.is_pending(port)) if role == LOCAL else None)
        if now is not None:
            self._placed[port_id] = now
        if was == now:
            return
        flood_changed = False
        for entry, sign in ((was, -1), (now, 1)):
            if entry is None:
                continue
            switch, role, where = entry
            if role == LOCAL:
                (self._local_ids[switch].add if sign > 0 else self._local_ids[switch].discard)(port_id)
                flood_changed = True
            elif role == REMOTE:
                at = self._remote_at[switch]
                at[where] += sign
                if at[where] <= 0:
                    del at[where]
                    flood_changed = True
                elif sign > 0 and at[where] == 1:
                    flood_changed = True
        if flood_changed:
            self.flood_epoch += 1

    def _placement(self) -> dict[str, tuple[str, str | None, Any]]:
        if self._placed is None:
            self.needed_switches()
            self._placed, self._local_ids, self._remote_at = {}, defaultdict(set), defaultdict(Counter)
            for port in self.ports():
                self._place(port.id, port)
            self.flood_epoch += 1
        return self._placed

    def get(self, table: str, obj_id: str) -> Model | None:
        return self.objects[table].get(obj_id)

    def port(self, port_id: str) -> LogicalPort | None:
        return self.objects[LogicalPort.table].get(port_id)

    def switch(self, switch_id: str) -> LogicalSwitch | None:
        return self.objects[LogicalSwitch.table].get(switch_id)

    def ports(self) -> Iterator[LogicalPort]:
        return iter(list(self.objects[LogicalPort.table].values()))

    def migrating_ports(self) -> list[LogicalPort]:
        """The ports with a migration record, in id order (what the migrator's housekeeping looks at
        every second: not a pass over every port of a network spread over 1,000 chassis)."""
        table = self.objects[LogicalPort.table]
        return [table[p] for p in sorted(self._migrating)]

    def ports_on(self, switch_id: str) -> list[LogicalPort]:
        table = self.objects[LogicalPort.table]
        return [table[p] for p in sorted(self._ports_by_switch.get(switch_id, ())) if p in table]

    def subnets_of(self, switch_id: str) -> list[Subnet]:
        return [s for s in self.objects[Subnet.table].values() if s.lswitch == switch_id]

    def routers(self) -> list[LogicalRouter]:
        return list(self.objects[LogicalRouter.table].values())

    def floating_ips(self) -> list[FloatingIP]:
        return list(self.objects[FloatingIP.table].values())

    def chassis_row(self, name: str) -> Chassis | None:
        return self.objects[Chassis.table].get(name)

    # -- where ports are ---------------------------------------------------------
    def location(self, port: LogicalPort) -> str | None:
        """The chassis that hosts the port now (the migration protocol's rule)."""
        return current_location(port)

    def is_pending(self, port: LogicalPort) -> bool:
        """This chassis is the pre-programmed destination of an `announce` migration, not yet activated."""
        mig = port.migration
        return (mig is not None and mig.state == "requested" and mig.strategy == "announce"
                and mig.chassis == self.chassis)

    def forwards_no_copies(self, port: LogicalPort) -> bool:
        """This chassis is the source of an `announce` migration the VM has left (activated on its
        destination, or switched by the source's unplug -- which may come before any activation):
        what a tunnel still brings it for the port, the destination sent back before the announcement;
        the VM is not here to take it."""
        mig = port.migration
        return (mig is not None and mig.state in ("activated", "switched") and mig.strategy == "announce"
                and mig.source == self.chassis)

    def also_send_to(self, port: LogicalPort) -> str | None:
        """While an `announce` migration is in flight, traffic for the port goes to its destination
        alone, which decides where it goes (when this chassis is not that destination and has a
        tunnel to it)."""
        mig = port.migration
        if (mig is not None and mig.state == "requested" and mig.strategy == "announce"
                and mig.chassis != self.chassis and mig.chassis in self.tunnels):
            return mig.chassis
        return None

    def role(self, port: LogicalPort) -> str | None:
        """LOCAL if this chassis hosts the port (or is its pending `announce` destination) and its
        VIF is here; REMOTE if another chassis does and the port's network is needed here;
        otherwise None (no flows)."""
        return self._role_at(port, self.location(port))

    def _role_at(self, port: LogicalPort, where: str | None) -> str | None:
        """`role(port)`, `where` being its location."""
        if not port.enabled or self.switch(port.lswitch) is None:
            return None
        if port.id in self.vifs and self._hosted_here(port, where):
            return LOCAL
        if where is None or where == self.chassis or where not in self.tunnels:
            return None
        return REMOTE if port.lswitch in self.needed_switches() else None

    def is_arriving(self, port: LogicalPort) -> bool:
        """A migration of the port to this chassis is recorded and its VIF is plugged here."""
        mig = port.migration
        return port.enabled and port.id in self.vifs and mig is not None and mig.chassis == self.chassis

    def is_local(self, port: LogicalPort) -> bool:
        return port.enabled and port.id in self.vifs and self._hosted_here(port, self.location(port))

    def _hosted_here(self, port: LogicalPort, where: str | None) -> bool:
        """The port, located at `where`, runs here or is this chassis' pending `announce` destination."""
        return where == self.chassis or self.is_pending(port)

    def switch_is_present(self, switch_id: str) -> bool:
        """A network is present on this chassis while one of its ports is local here."""
        return self._local_here[switch_id] > 0

    def needed_switches(self) -> frozenset[str]:
        """Networks this chassis needs flows for: those present here or with a port migrating in (its
        VIF plugged here), and every network that routers reach from them (their interfaces and
        gateways), transitively. (The destination of a migration thus gets the network's flows at
        step 1; the switch changes only the port's own flows there.)"""
        if self._needed is None:
            present = set(self._present)
            links: dict[str, set[str]] = defaultdict(set)
            for router in self.routers():
                attached = self.router_switches(router)
                for switch_id in attached:
                    links[switch_id] |= attached
            needed, todo = set(present), list(present)
            while todo:
                for other in links.get(todo.pop(), ()):
                    if other not in needed:
                        needed.add(other)
                        todo.append(other)
            self._needed = frozenset(s for s in needed if self.switch(s) is not None)
        return self._needed

    # -- routers and floating IPs ---------------------------------------------------
    def router_switches(self, router: LogicalRouter) -> set[str]:
        found = set()
        for rport in router.ports:
            subnet = self.get(Subnet.table, rport.subnet)
            if subnet is not None:
                found.add(subnet.lswitch)
        if router.external_gateway is not None:
            found.add(router.external_gateway.lswitch)
        return found

    def router_interfaces(self, router: LogicalRouter) -> list[tuple[RouterPort, Subnet, LogicalSwitch]]:
        """(router port, its subnet, its switch) for interfaces whose subnet and switch we know."""
        found = []
        for rport in router.ports:
            subnet = self.get(Subnet.table, rport.subnet)
            switch = self.switch(subnet.lswitch) if subnet is not None else None
            if switch is not None:
                found.append((rport, subnet, switch))
        return found

    def routers_on(self, switch_id: str) -> list[LogicalRouter]:
        return [r for r in self.routers() if switch_id in self.router_switches(r)]

    def floating_ips_of(self, port_id: str) -> list[FloatingIP]:
        return [f for f in self.floating_ips() if f.port == port_id and f.fixed_ip is not None]

    def local_ports(self, switch_id: str) -> list[LogicalPort]:
        self._placement()
        table = self.objects[LogicalPort.table]
        return [table[p] for p in sorted(self._local_ids.get(switch_id, ()))]

    def remote_chassis_of(self, switch_id: str) -> list[str]:
        """Peers that host a port of the network and that we have a tunnel to."""
        self._placement()
        return sorted(self._remote_at.get(switch_id, {}))

    def flood_version(self) -> int:
        """Changes whenever some network's flooding inputs may have changed (see flood_epoch)."""
        self._placement()
        return self.flood_epoch

    # -- what a port's flows depend on (controller.templates) ---------------------------
    def port_facts(self, port: LogicalPort) -> PortFacts:
        made = self._facts.get(port.id)
        inputs = (self._facts_epoch, port.lswitch, port.mac, port.port_security, port.ips,
                  port.allowed_address_pairs)
        if made is not None and all(map(operator.is_, made[0], inputs)):
            return made[1]
        facts = self.facts_of(port)
        self._facts[port.id] = (inputs, facts)
        return facts

    def facts_of(self, port: LogicalPort) -> PortFacts:
        """`port_facts` made again, from the view as it is."""
        return PortFacts(object_hash(port.id), self.vni(port.lswitch), mac_int(port.mac), port.port_security,
                         bool(self.routers_on(port.lswitch)), tuple(ipv4s_of(port)),
                         tuple(self.usable_floating_ips(port)), address_pairs_of(port))

    def placed_role(self, port: LogicalPort) -> str | None:
        """`role(port)`, read from the placement when `port` is the view's version of it (every input of
        a role re-places the port or drops the placement)."""
        if self._placed is not None and self.objects[LogicalPort.table].get(port.id) is port:
            placed = self._placed.get(port.id)
            if placed is not None:
                return placed[1]
        return self.role(port)

    def port_role(self, port: LogicalPort) -> PortRole | None:
        role = self.placed_role(port)
        if role is None:
            return None
        copy_to = self.also_send_to(port)
        copy_tunnel = self.tunnels[copy_to] if copy_to is not None else 0
        if role == LOCAL:
            gated = self.is_pending(port)
            if gated:  # until the VM announces itself here, what comes for the port goes on to the source
                copy_tunnel = self.tunnels.get(self.location(port), 0)
            return PortRole(True, ofport=self.ofport(port), copy_tunnel=copy_tunnel, gated=gated)
        return remote_role(self.tunnel_ofport(port), copy_tunnel, self.forwards_no_copies(port))

    def usable_floating_ips(self, port: LogicalPort) -> list[FloatingIpFacts]:
        """The port's floating IPs whose external network is needed here and whose router has an
        interface on the port's subnet (that interface's MAC is the DNATed packets' source)."""
        found = []
        for fip in self.floating_ips_of(port.id):
            ext = self.switch(fip.lswitch)
            router = self.get(LogicalRouter.table, fip.router) if fip.router else None
            if ext is None or router is None or fip.lswitch not in self.needed_switches():
                continue
            fixed = ipaddress.ip_address(fip.fixed_ip)
            for rport, subnet, switch in self.router_interfaces(router):
                if switch.id == port.lswitch and fixed in subnet.network:
                    found.append(FloatingIpFacts(ip_int(fip.floating_ip), mac_int(fip.mac), ip_int(fip.fixed_ip),
                                                 ext.segmentation_id, mac_int(rport.mac)))
                    break
        return found

    def ofport(self, port: LogicalPort) -> int:
        return self.vifs[port.id].ofport

    def tunnel_ofport(self, port: LogicalPort) -> int:
        return self.tunnels[self.location(port)]

    def vni(self, switch_id: str) -> int:
        return self.switch(switch_id).segmentation_id


_ROLE_TABLES = frozenset({LogicalSwitch.table, Subnet.table, LogicalRouter.table})


def _count(counter: Counter[str], key: str, yes: bool) -> None:
    if yes:
        counter[key] += 1


def _uncount(counter: Counter[str], key: str, yes: bool) -> None:
    if yes:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]


def mac_int(mac: str) -> int:
    return core.mac_to_int(mac)


def ip_int(ip: str) -> int:
    return core.ipv4_to_int(ip)


def ipv4s_of(port: LogicalPort) -> list[int]:
    return [ip_int(ip) for ip in port.ips if ":" not in ip]


def address_pairs_of(port: LogicalPort) -> tuple[AddressPairFacts, ...]:
    """The port's IPv4 allowed address pairs, single addresses first (a prefix by its network)."""
    pairs = []
    for pair in port.allowed_address_pairs:
        net = ipaddress.ip_interface(pair.ip_address).network
        if net.version == 4:
            pairs.append(AddressPairFacts(mac_int(pair.mac_address.lower()), int(net.network_address),
                                          int(net.netmask)))
    return tuple(sorted(pairs, key=lambda p: not p.is_host))
