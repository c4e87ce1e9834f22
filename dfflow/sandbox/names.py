"""Every name a sandbox uses, derived from one short id of its directory.

Why: several sandboxes (two developers, a test and a developer, two tests) run
on one machine at once. Namespaces are global names, so each sandbox prefixes
them with its id, a hash of the sandbox directory's real path: the same dir
always maps to the same names, which is also what lets `down` find what a
crashed `up` left behind without any state file (every namespace named
``<sbid>-*`` is ours).

Interfaces never live in the root namespace: every veth is created directly
inside the namespaces that hold its two ends (the kernel creates a veth peer
in its target namespace), so deleting our namespaces deletes every interface
we made. Interface names still carry the id where the brief wants it (the
underlay bridge and underlay veths), and they are all at most 15 characters
(IFNAMSIZ - 1).
"""
from __future__ import annotations

import hashlib
import os
import re

IFNAMSIZ = 15
UNDERLAY_NET = "172.31.0"           # chassis N has underlay IP 172.31.0.N/24
UNDERLAY_PREFIXLEN = 24
MAX_CHASSIS = 250
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def sandbox_id(dir: str) -> str:
    """``df`` + 6 hex digits of sha1(realpath(dir)): 8 characters."""
    real = os.path.realpath(dir)
    return "df" + hashlib.sha1(real.encode()).hexdigest()[:6]


_PORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


def check_port_id(port_id: str) -> str:
    """Port ids end up in interface names (tap + 11 chars): keep them to name-safe characters."""
    if not _PORT_RE.match(port_id):
        raise ValueError(f"bad port id {port_id!r}: use 1-64 of [A-Za-z0-9_.-]")
    return port_id


def check_ifname(ifname: str) -> str:
    if not _IF_RE.match(ifname):
        raise ValueError(f"bad interface name {ifname!r}: 1-15 of [A-Za-z0-9_.-]")
    return ifname


def check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"bad {kind} name {name!r}: use 1-32 of [A-Za-z0-9_.-], starting alphanumeric")
    return name


class Names:
    """Names for the sandbox with id `sbid`."""

    def __init__(self, sbid: str):
        self.sbid = sbid

    @property
    def prefix(self) -> str:
        """Every namespace of this sandbox starts with this."""
        return f"{self.sbid}-"

    @property
    def underlay_ns(self) -> str:
        return f"{self.sbid}-ul"

    @property
    def underlay_bridge(self) -> str:
        return f"{self.sbid}-br"                      # 11 chars, inside the underlay ns

    def chassis_ns(self, index: int) -> str:
        return f"{self.sbid}-ch{index}"

    def vm_ns(self, vm: str) -> str:
        return f"{self.sbid}-vm-{vm}"

    def underlay_port(self, index: int) -> str:
        """Underlay-bridge end of chassis `index`'s veth (in the underlay ns)."""
        return self._ifname(f"{self.sbid}-u{index}")

    def chassis_uplink(self, index: int) -> str:
        """Chassis end of that veth (in the chassis ns, a port of br-phy)."""
        return self._ifname(f"{self.sbid}-c{index}")

    @staticmethod
    def tap(port_id: str) -> str:
        """os-vif's rule: ``tap`` + the first 11 characters of the port id."""
        return "tap" + port_id[:11]

    @staticmethod
    def _ifname(name: str) -> str:
        if len(name) > IFNAMSIZ:
            raise ValueError(f"interface name {name!r} longer than {IFNAMSIZ}")
        return name


def tunnel_ip(index: int) -> str:
    return f"{UNDERLAY_NET}.{index}"


def _mac(prefix: str, index: int) -> str:
    return f"{prefix}:{(index >> 8) & 0xff:02x}:{index & 0xff:02x}"


def phy_mac(index: int) -> str:
    """br-phy MAC of chassis `index` (locally administered; peers pre-seed it for tunnel ARP)."""
    return _mac("0a:df:00:00", index)


def int_mac(index: int) -> str:
    """br-int MAC of chassis `index` (other_config:hwaddr, so it is stable across restarts)."""
    return _mac("0a:df:01:00", index)


def tap_mac(port_id: str, chassis: str) -> str:
    """Deterministic MAC for the chassis-side end of a VIF veth (like libvirt's fe:..)."""
    h = hashlib.sha1(f"{chassis}/{port_id}".encode()).digest()
    return "fe:16:3e:" + ":".join(f"{b:02x}" for b in h[:3])
