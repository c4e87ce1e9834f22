"""A VM's switchover in a live migration, as QEMU does it, run inside the VM's namespace.

Started ahead of time (a Python process takes ~150 ms to start), once told to
`prepare` (when the destination interface exists) it sets up what a resumed
guest already has (its ARP cache on the destination interface, a raw socket
for the announcements), prints `ready` and waits for
`go` on stdin. Then, over netlink in one process (four `ip` commands would take
~22 ms on their own): the source interface goes down, the destination interface
takes the guest's address and its default route (a resumed guest has its routes: they are in its
memory), the guest announces itself with a RARP (as QEMU does right after the resume) and sends a
gratuitous ARP. It prints one JSON line of timestamps and exits once its stdin is closed.

    python -m dfflow.sandbox.switchover --old eth0 --new eth1 --mac M --ip 10.0.0.5/24 [--gateway G]

With `--many` one process switches many VMs over at once (a host evacuation): it runs outside the
VMs and enters each VM's namespace only to open that VM's sockets (a netlink or packet socket
stays in the namespace it was opened in). On stdin, one line per VM once its destination
interface exists, answered `ready NAME`:

    prepare NAME NETNS OLD NEW MAC IP/PREFIX [GATEWAY]

then `go NAME...`: those VMs resume in that order (down, address, up, route, RARP each), then each
sends its gratuitous ARP; one JSON line maps each name to its timestamps.

Either way the helper then waits for its stdin to close (the emulation reaping it) before it exits.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import json
import os
import socket
import struct
import sys
import time

from pyroute2 import IPRoute

ETH_P_ARP, ETH_P_RARP = 0x0806, 0x8035
NUD_STALE = 0x04
BROADCAST = b"\xff" * 6
SWITCHOVER_PRIORITY = 10  # SCHED_FIFO, low among real-time priorities
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


# rtnetlink, for the resume's own requests (see Rtnl)
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE, NLMSG_ERROR = 16, 20, 24, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
IFF_UP = 0x1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port
IFINFOMSG = struct.Struct("=BxHiII")  # family, device type, index, flags, change mask
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src prefix lengths, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")
NLMSGERR = struct.Struct("=i")


class Rtnl:
    """The resume's link and address changes as rtnetlink requests built in advance and sent on a raw
    socket. The kernel applies a request inside the send (rtnetlink runs in the sender's context), so
    the next step follows at once and the acknowledgements are read afterwards: a VM's resume costs
    a few system calls, not a library's round trips (~1 ms a VM with pyroute2, which with many VMs
    switching at once delayed the last one's resume by as many milliseconds)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq, self.unacked = 0, 0

    def _message(self, kind: int, flags: int, body: bytes) -> bytes:
        self.seq += 1
        return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0) + body

    def link(self, index: int, up: bool) -> bytes:
        return self._message(RTM_NEWLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0,
                                                            IFF_UP))

    def address(self, index: int, iface: ipaddress.IPv4Interface) -> bytes:
        attrs = b"".join(RTATTR.pack(RTATTR.size + 4, kind) + iface.ip.packed for kind in (IFA_LOCAL, IFA_ADDRESS))
        return self._message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE,
                             IFADDRMSG.pack(socket.AF_INET, iface.network.prefixlen, 0, 0, index) + attrs)

    def default_route(self, index: int, gateway: ipaddress.IPv4Address) -> bytes:
        """`ip route replace default via GATEWAY dev INDEX`: replaces the route of the interface that went down."""
        attrs = RTATTR.pack(RTATTR.size + 4, RTA_GATEWAY) + gateway.packed + RTATTR.pack(RTATTR.size + 4, RTA_OIF) \
            + struct.pack("=i", index)
        return self._message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                             RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE,
                                        RTN_UNICAST, 0) + attrs)

    def send(self, message: bytes) -> None:
        self.sock.send(message)
        self.unacked += 1

    def check(self) -> None:
        """Every request sent was acknowledged without an error (raises the first error)."""
        while self.unacked:
            data = self.sock.recv(65536)
            offset = 0
            while offset < len(data):
                length, kind, _, seq, _ = NLMSGHDR.unpack_from(data, offset)
                if kind == NLMSG_ERROR:
                    self.unacked -= 1
                    (error,) = NLMSGERR.unpack_from(data, offset + NLMSGHDR.size)
                    if error:
                        raise OSError(-error, f"rtnetlink request {seq}: {os.strerror(-error)}")
                offset += (length + 3) & ~3


def rarp_frame(mac: bytes) -> bytes:
    """QEMU's announcement: a RARP 'request reverse' from and about the guest's MAC."""
    return (BROADCAST + mac + ETH_P_RARP.to_bytes(2, "big")
            + bytes.fromhex("0001080006040003") + mac + bytes(4) + mac + bytes(4)).ljust(60, b"\0")


def garp_frame(mac: bytes, ip: bytes) -> bytes:
    """A gratuitous ARP request: sender and target IP are the guest's own."""
    return (BROADCAST + mac + ETH_P_ARP.to_bytes(2, "big")
            + bytes.fromhex("0001080006040001") + mac + ip + bytes(6) + ip).ljust(60, b"\0")


class Switchover:
    """Everything that can be prepared is, before `go`: at `go` only what QEMU's resume changes."""

    def __init__(self, old: str, new: str, mac: str, ip: str, gateway: str | None):
        self.ipr = IPRoute()
        self.iface = ipaddress.ip_interface(ip)
        self.mac = bytes.fromhex(mac.replace(":", ""))
        self.old_idx = self.ipr.link_lookup(ifname=old)[0]
        self.new_idx = self.ipr.link_lookup(ifname=new)[0]
        # The guest keeps its ARP cache: the destination interface gets it now, while still down.
        for n in self.ipr.get_neighbours(ifindex=self.old_idx, family=socket.AF_INET):
            if n.get_attr("NDA_LLADDR"):
                self.ipr.neigh("replace", dst=n.get_attr("NDA_DST"), lladdr=n.get_attr("NDA_LLADDR"),
                               ifindex=self.new_idx, state=NUD_STALE)
        # Routes of the interface that goes down must not be used any more (they stay, marked linkdown).
        with open("/proc/sys/net/ipv4/conf/all/ignore_routes_with_linkdown", "w") as f:
            f.write("1")
        self.raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.raw.bind((new, 0))
        self.frames = (rarp_frame(self.mac), garp_frame(self.mac, self.iface.ip.packed))
        self.rtnl = Rtnl()
        # A resumed guest runs with its routes (they are in its memory): its default route moves with the address,
        # in the resume's burst, before QEMU's RARP. Taken after it with pyroute2 (~1 ms of Python, at the
        # single-VM helper's real-time priority) it held one of the machine's two CPUs while the destination's
        # datapath handled the announcement, and the guest could answer no routed packet until it was done
        # (benchmarks/RESULTS.md, branch `h16-route`).
        route = (self.rtnl.default_route(self.new_idx, ipaddress.ip_address(gateway)),) if gateway else ()
        self.requests = (self.rtnl.link(self.old_idx, up=False), self.rtnl.address(self.new_idx, self.iface),
                         self.rtnl.link(self.new_idx, up=True), *route)

    def go(self) -> dict[str, float]:
        stamps = self.resume(time.time())
        normal()  # the gratuitous ARP and the requests' acknowledgements may wait beside the resumed VM's replies
        self.confirm_and_garp(stamps)
        return stamps

    def resume(self, go: float) -> dict[str, float]:
        """The VM stops on the source and runs on the destination, where it announces itself."""
        stamps = {"go": go}
        source_down, *destination = self.requests
        self.rtnl.send(source_down)
        stamps["source_down"] = time.time()
        for request in destination:  # its address, up, its default route (if it has a gateway)
            self.rtnl.send(request)
        stamps["destination_up"] = time.time()
        self.raw.send(self.frames[0])  # QEMU announces first thing after the resume
        stamps["announced"] = time.time()
        return stamps

    def confirm_and_garp(self, stamps: dict[str, float]) -> None:
        """The resume's requests were all applied (their acknowledgements), and the guest's gratuitous ARP."""
        self.rtnl.check()
        self.raw.send(self.frames[1])
        stamps["routed"] = time.time()


def realtime() -> None:
    """Run the switchover ahead of ordinary processes: on a busy machine a VM's resume step must not
    wait tens of milliseconds for a CPU (it would count as downtime that no controller causes). The
    helper blocks on stdin until `go` and leaves real-time priority right after, so it never holds a
    CPU for long."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SWITCHOVER_PRIORITY))
    except OSError as exc:
        print(f"switchover: running at normal priority ({exc})", file=sys.stderr, flush=True)


def normal() -> None:
    """Back to the ordinary processes' priority, for work that may wait for a CPU."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:
        print(f"switchover: could not leave real-time priority ({exc})", file=sys.stderr)


def leave() -> None:
    """Once the stamps are out: back to normal priority, wait without a CPU until the emulation reaps
    the helper (closes its stdin, after the source unplug), then exit without the interpreter's
    teardown. At real-time priority that teardown held the machine right after the switchover (the
    probers sent nothing for ~43 ms, branch `no-stall`); at normal priority it still took 60-130 ms of
    CPU (closing pyroute2, the modules' clean-up) spread over the second after the switchover, and even
    the bare exit (a few ms of the kernel's) right after the resume delayed the VMs' first replies in
    an evacuation: the emulated QEMU's cost, in the measured window of dfflow's migrations and OVN's
    alike (benchmarks/RESULTS.md, 2026-11-28, `unplug-stall`). The kernel closes the sockets."""
    normal()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdin.read()
    os._exit(0)


@contextlib.contextmanager
def inside(netns: str):
    """This thread in network namespace `netns` for the block (sockets opened there stay there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)


def many() -> None:
    """The `--many` protocol (see the module's doc): prepare VMs one by one, then switch them all."""
    prepared: dict[str, Switchover] = {}
    print("started", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "prepare" and len(words) in (7, 8):
            # Preparing is not the resume: at real-time priority, N VMs' set-up (pyroute2, their ARP
            # caches) would take the CPU from every chassis' datapath while the evacuation's plugs run
            # (branch `evac-tails`). Only the wait for the next line is real-time, so `go` is taken at once.
            normal()
            name, netns, old, new, mac, ip = words[1:7]
            with inside(netns):
                prepared[name] = Switchover(old, new, mac, ip, words[7] if len(words) == 8 else None)
            realtime()
            print(f"ready {name}", flush=True)
        elif words and words[0] == "go":
            unknown = [n for n in words[1:] if n not in prepared]
            if unknown:
                sys.exit(f"switchover: go for VMs never prepared: {' '.join(unknown)}")
            chosen = [prepared[n] for n in words[1:]]
            go = time.time()
            stamps = [vm.resume(go) for vm in chosen]  # every VM runs again (its route too) before any sends its GARP
            normal()  # N GARPs and acknowledgements at real-time would hold a CPU while the resumed VMs answer
            for vm, stamp in zip(chosen, stamps):
                vm.confirm_and_garp(stamp)
            print(json.dumps(dict(zip(words[1:], stamps))), flush=True)
            leave()
        else:
            sys.exit(f"switchover: unexpected line {line.strip()!r}")
    sys.exit("switchover: stdin closed before 'go'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many", action="store_true", help="switch many VMs over at once (see above)")
    parser.add_argument("--old")
    parser.add_argument("--new")
    parser.add_argument("--mac")
    parser.add_argument("--ip", help="address/prefix")
    parser.add_argument("--gateway")
    args = parser.parse_args()
    if args.many:
        many()
        return
    missing = [f"--{k}" for k in ("old", "new", "mac", "ip") if getattr(args, k) is None]
    if missing:
        parser.error(f"required without --many: {', '.join(missing)}")
    print("started", flush=True)
    if sys.stdin.readline().strip() != "prepare":  # sent once the destination interface exists
        sys.exit("switchover: expected 'prepare' on stdin")
    switchover = Switchover(args.old, args.new, args.mac, args.ip, args.gateway)
    realtime()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("switchover: expected 'go' on stdin")
    print(json.dumps(switchover.go()), flush=True)
    leave()


if __name__ == "__main__":
    main()
