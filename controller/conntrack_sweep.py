"""Cutting the connections a local port's security groups no longer allow.

The security-group flows (controller.apps.secgroups) pass every packet of a connection its zone already
tracks, so removing what allowed a connection (a rule, a remote group's member address, a group of the
port) would not end it. After the engine's plan that removed one of a port's allowing flows is applied
(Plan.narrowed), the sweeper dumps the conntrack entries of the port's zone, judges each against the
port's current rules and deletes, by its exact tuple, every one they no longer allow. The next packet of a
cut TCP connection is new to conntrack, and only a SYN a rule allows commits one (the security-group
tables drop the rest, controller.apps.secgroups); a cut UDP or ICMP flow is let again only as the
rules let a new one.

An entry's original direction is its opener's (a rule committed it on its first packet), except for the
TCP connections of a port that migrated here: during its arrival window the first packet here, from either
end, committed them. So the sweeper records the zone's TCP entries when a port's arrival window closes
(Plan.arrived), and keeps a recorded one if the rules allow it read either way; a change that narrows the
rules of an arriving port is swept when its window closes. The sweep runs `ovs-appctl` as subprocesses
(never blocking the loop), one port at a time, at most MAX_ENTRIES entries judged and MAX_DELETIONS
deleted per port and round (what is left is deleted in the next round; entries past MAX_ENTRIES are
counted, not judged). A failure is logged with its
traceback, counted (stats `conntrack_sweep.*`) and kept for status; a line of the dump it cannot read is
logged, counted and skipped.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Counter, Iterable, NamedTuple

import numpy as np

from controller.apps.secgroups import filtered, group_members, rules_of
from controller.apps.sg_rules import prefix, rule_rows
from dfflow import core
from dfflow.models.secgroup import IP_PROTOCOLS, PORT_PROTOCOLS  # the protocols conntrack tracks with ports

if TYPE_CHECKING:
    from controller.view import View

LOG = logging.getLogger(__name__)
MAX_ENTRIES = 20000  # entries of one zone judged per round
MAX_DELETIONS = 500  # entries of one zone deleted per round (one ovs-appctl each)
APPCTL_TIMEOUT = 10.0  # s
IPPROTO_ICMP, IPPROTO_TCP = 1, 6
LINE = re.compile(r"^(\w+),orig=\(([^()]*)\),reply=\(([^()]*)\)")


class BadEntry(ValueError):
    """A line of the conntrack dump the sweeper cannot read."""


class Entry(NamedTuple):
    """A conntrack entry's original direction: addresses as integers, ports (ICMP: type, code, id)."""
    proto: int
    src: int
    dst: int
    sport: int = 0
    dport: int = 0
    icmp: tuple[int, int, int] | None = None  # (type, code, id)


def parse_entry(line: str) -> Entry | None:
    """One line of `dpctl/dump-conntrack`; None for an IPv6 entry (the groups filter IPv4 only)."""
    found = LINE.match(line.strip())
    if found is None:
        raise BadEntry(f"not a conntrack entry: {line!r}")
    name, orig = found.group(1), found.group(2)
    try:
        fields = dict(part.split("=", 1) for part in orig.split(","))
        proto = int(name) if name.isdigit() else IP_PROTOCOLS.get(name)
        if proto is None:
            if name.endswith("6"):  # icmp6 and its kind
                return None
            raise BadEntry(f"unknown protocol {name!r}: {line!r}")
        if ":" in fields["src"] or ":" in fields["dst"]:
            return None
        src, dst = int(ipaddress.IPv4Address(fields["src"])), int(ipaddress.IPv4Address(fields["dst"]))
        if proto == IPPROTO_ICMP:
            return Entry(proto, src, dst, icmp=(int(fields["type"]), int(fields["code"]), int(fields["id"])))
        if proto in PORT_PROTOCOLS:
            return Entry(proto, src, dst, int(fields["sport"]), int(fields["dport"]))
        return Entry(proto, src, dst)
    except (KeyError, ValueError) as exc:
        raise BadEntry(f"{exc!r} in {line!r}") from exc


def flush_tuple(entry: Entry) -> str:
    """The entry's exact original tuple as `dpctl/flush-conntrack` takes it."""
    parts = [f"ct_nw_src={ipaddress.IPv4Address(entry.src)}", f"ct_nw_dst={ipaddress.IPv4Address(entry.dst)}",
             f"ct_nw_proto={entry.proto}"]
    if entry.icmp is not None:
        parts += [f"icmp_type={entry.icmp[0]}", f"icmp_code={entry.icmp[1]}", f"icmp_id={entry.icmp[2]}"]
    elif entry.proto in PORT_PROTOCOLS:
        parts += [f"ct_tp_src={entry.sport}", f"ct_tp_dst={entry.dport}"]
    return ",".join(parts)


@dataclass(frozen=True)
class PortPolicy:
    """What a local port's groups allow now: its zone, its own addresses (fixed IPs and allowed address
    pairs, as (network, mask)), its rules as rows (controller.apps.sg_rules) and their members' addresses."""
    zone: int
    own: tuple[tuple[int, int], ...]
    rules: list[tuple[int, ...]]
    members: list[tuple[int, int]]

    def is_own(self, address: int) -> bool:
        return any(address & mask == net for net, mask in self.own)

    def allows(self, direction: int, remote: int, entry: Entry, port: int) -> bool:
        """Whether a rule of `direction` lets a connection with the remote end `remote` open to `port`
        (for ICMP, the entry's type and code)."""
        for rule_dir, proto, flags, low, high, remote_ip, remote_mask, start, count in self.rules:
            if rule_dir != direction or (proto and proto != entry.proto):
                continue
            if proto == IPPROTO_ICMP and entry.icmp is not None:
                if (flags & core.SG_FLAG_LOW and entry.icmp[0] != low) or \
                        (flags & core.SG_FLAG_HIGH and entry.icmp[1] != high):
                    continue
            elif proto in PORT_PROTOCOLS and flags & (core.SG_FLAG_LOW | core.SG_FLAG_HIGH):
                if not (low if flags & core.SG_FLAG_LOW else 0) <= port <= (high if flags & core.SG_FLAG_HIGH
                                                                              else 65535):
                    continue
            if flags & core.SG_FLAG_GROUP:
                if any(remote & mask == ip for ip, mask in self.members[start:start + count]):
                    return True
            elif remote & remote_mask == remote_ip:
                return True
        return False

    def keeps(self, entry: Entry, either_way: bool = False) -> bool:
        """Whether the rules allow the entry, its original direction being its opener's (`either_way`:
        or the other's, for a connection committed mid-stream by a migration's arrival window)."""
        readings = [(entry.src, entry.dst, entry.dport)]  # (opener, other end, the port opened to)
        if either_way:
            readings.append((entry.dst, entry.src, entry.sport))
        for opener, other, port in readings:
            if self.is_own(opener) and self.allows(core.SG_EGRESS, other, entry, port):
                return True
            if self.is_own(other) and self.allows(core.SG_INGRESS, opener, entry, port):
                return True
        return False


def policy_of(view: "View", port_id: str) -> PortPolicy | None:
    """The port's policy here; None when it is not a filtered port running on this chassis."""
    port = view.port(port_id)
    role = view.port_role(port) if port is not None else None
    if role is None or not role.local or not filtered(port):
        return None
    rules = rules_of(view, port.security_groups)
    members = group_members(view) if any(r.remote_group for r in rules) else {}
    rows, addresses = rule_rows(rules, members)
    own = [prefix(ip) for ip in port.ips if ":" not in ip]
    own += [prefix(pair.ip_address) for pair in port.allowed_address_pairs if ":" not in pair.ip_address]
    return PortPolicy(role.ofport, tuple(own), [tuple(int(v) for v in r) for r in rows.tolist()],
                      [tuple(int(v) for v in a) for a in np.asarray(addresses).tolist()])


def appctl_command(ovsdb: str) -> tuple[list[str], dict[str, str] | None]:
    """(argv, env) of `ovs-appctl` reaching this chassis' ovs-vswitchd: the one whose OVSDB socket is
    `ovsdb` (its run directory holds ovs-vswitchd.ctl, or the pid file naming its control socket), else
    the default one."""
    if not ovsdb.startswith("unix:"):
        return ["ovs-appctl"], None
    rundir = os.path.dirname(ovsdb[len("unix:"):])
    ctl = os.path.join(rundir, "ovs-vswitchd.ctl")
    if os.path.exists(ctl):
        return ["ovs-appctl", "-t", ctl], None
    return ["ovs-appctl"], dict(os.environ, OVS_RUNDIR=rundir)


class ConntrackSweeper:
    """Sweeps the zones of the ports it is told about (`request`), one at a time, in its own task (`run`)."""

    def __init__(self, policy: Callable[[str], PortPolicy | None], stats: Counter[str],
                 record_error: Callable[[str], None], appctl: tuple[list[str], dict[str, str] | None]):
        self.policy, self.stats, self.record_error = policy, stats, record_error
        self.appctl, self.appctl_env = appctl
        self.arrived: dict[str, tuple[int, set[Entry]]] = {}  # port id -> (zone, TCP entries recorded)
        self._to_record: list[str] = []
        self._to_sweep: list[str] = []
        self._left_over: dict[str, int] = {}  # port id -> entries to cut its last round left
        self._wake = asyncio.Event()

    def request(self, arrived: Iterable[str] = (), narrowed: Iterable[str] = ()) -> None:
        """Record the zones of ports whose arrival window closed; sweep those whose filter narrowed."""
        self._to_record += [p for p in arrived if p not in self._to_record]
        self._to_sweep += [p for p in narrowed if p not in self._to_sweep]
        if self._to_record or self._to_sweep:
            self._wake.set()

    def status(self) -> dict[str, object]:
        return {"to_sweep": list(self._to_sweep), "to_record": list(self._to_record),
                "arrivals_recorded": {p: len(entries) for p, (_, entries) in self.arrived.items()}}

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._to_record or self._to_sweep:
                recording = bool(self._to_record)  # the records first: a sweep may judge by them
                port_id = (self._to_record if recording else self._to_sweep).pop(0)
                try:
                    await (self.record(port_id) if recording else self.sweep(port_id))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.stats["conntrack_sweep.failures"] += 1
                    LOG.error("conntrack sweep of port %s failed", port_id)
                    self.record_error("conntrack_sweep")

    async def _run_appctl(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(*self.appctl, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=self.appctl_env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), APPCTL_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"ovs-appctl {' '.join(args)}: no answer in {APPCTL_TIMEOUT} s") from None
        if proc.returncode:
            raise RuntimeError(f"ovs-appctl {' '.join(args)} exited {proc.returncode}: {err.decode().strip()}")
        return out.decode()

    async def entries(self, zone: int) -> tuple[list[Entry], bool]:
        """The zone's IPv4 entries (unreadable lines logged, counted, skipped); whether it had more."""
        found: list[Entry] = []
        lines = (await self._run_appctl("dpctl/dump-conntrack", f"zone={zone}")).splitlines()
        for line in lines[:MAX_ENTRIES]:
            if not line.strip():
                continue
            try:
                entry = parse_entry(line)
            except BadEntry as exc:
                self.stats["conntrack_sweep.unreadable_entries"] += 1
                LOG.warning("conntrack sweep of zone %d skips an entry: %s", zone, exc)
                continue
            if entry is not None:
                found.append(entry)
        return found, len(lines) > MAX_ENTRIES

    async def record(self, port_id: str) -> None:
        policy = self.policy(port_id)
        if policy is None:
            self.arrived.pop(port_id, None)
            return
        entries, _ = await self.entries(policy.zone)
        self.arrived[port_id] = (policy.zone, {e for e in entries if e.proto == IPPROTO_TCP})
        self.stats["conntrack_sweep.arrivals_recorded"] += 1

    async def sweep(self, port_id: str) -> None:
        policy = self.policy(port_id)
        if policy is None:  # gone from here, or no longer filtered: nothing of its zone to cut
            self.arrived.pop(port_id, None)
            return
        self.stats["conntrack_sweep.sweeps"] += 1
        entries, more = await self.entries(policy.zone)
        zone, arrived = self.arrived.get(port_id, (policy.zone, set()))
        if zone != policy.zone:
            arrived = set()
        present = set(entries)
        if arrived:
            self.arrived[port_id] = (zone, arrived & present)  # what ended is forgotten
        cut = [e for e in entries if not policy.keeps(e, either_way=e in arrived)]
        self.stats["conntrack_sweep.entries_judged"] += len(entries)
        if more:  # a zone this full is judged in part: what the first MAX_ENTRIES hold
            self.stats["conntrack_sweep.zones_truncated"] += 1
            LOG.warning("port %s: zone %d holds more than %d entries; only those were judged", port_id,
                        policy.zone, MAX_ENTRIES)
        left_before = self._left_over.pop(port_id, None)
        if len(cut) > MAX_DELETIONS and (left_before is None or len(cut) < left_before):  # (only while it shrinks)
            self.stats["conntrack_sweep.rounds_left_over"] += 1
            self._left_over[port_id] = len(cut)
            self.request(narrowed=[port_id])
        for entry in cut[:MAX_DELETIONS]:
            try:
                await self._run_appctl("dpctl/flush-conntrack", f"zone={policy.zone}", flush_tuple(entry))
            except RuntimeError:
                # one entry that will not go does not keep the others (OVS 3.1 answers an entry that ended
                # since the dump with success; another datapath may not): logged with its traceback, counted
                self.stats["conntrack_sweep.flush_failures"] += 1
                LOG.warning("conntrack sweep of port %s could not delete %s", port_id, flush_tuple(entry),
                            exc_info=True)
                continue
            self.stats["conntrack_sweep.entries_cut"] += 1
        if cut:
            LOG.info("port %s: cut %d connection(s) its security groups no longer allow", port_id,
                     min(len(cut), MAX_DELETIONS))
