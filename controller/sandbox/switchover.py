"""A VM's switchover in a live migration, as QEMU does it, run inside the VM's namespace.

Started ahead of time (a Python process takes ~150 ms to start), once told to
`prepare` (when the destination interface exists) it sets up what a resumed
guest already has (its ARP cache on the destination interface, a raw socket
for the announcements), prints `ready` and waits for
`go` on stdin. Then, over netlink in one process (four `ip` commands would take
~22 ms on their own): the source interface goes down, the destination interface
takes the guest's address, the guest announces itself with a RARP (as QEMU does right after the
resume), takes the default route and sends a gratuitous ARP. It prints one JSON
line of timestamps and exits.

    python -m controller.sandbox.switchover --old eth0 --new eth1 --mac M --ip 10.0.0.5/24 [--gateway G]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import time

from pyroute2 import IPRoute

ETH_P_ARP, ETH_P_RARP = 0x0806, 0x8035
NUD_STALE = 0x04
BROADCAST = b"\xff" * 6
SWITCHOVER_PRIORITY = 10  # SCHED_FIFO, low among real-time priorities


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
        self.gateway, self.iface = gateway, ipaddress.ip_interface(ip)
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

    def go(self) -> dict[str, float]:
        stamps = {"go": time.time()}
        self.ipr.link("set", index=self.old_idx, state="down")
        stamps["source_down"] = time.time()
        self.ipr.addr("replace", index=self.new_idx, address=str(self.iface.ip),
                      prefixlen=self.iface.network.prefixlen)
        self.ipr.link("set", index=self.new_idx, state="up")
        stamps["destination_up"] = time.time()
        self.raw.send(self.frames[0])  # QEMU announces first thing after the resume
        stamps["announced"] = time.time()
        if self.gateway:
            self.ipr.route("replace", dst="0.0.0.0/0", gateway=self.gateway, oif=self.new_idx)
        self.raw.send(self.frames[1])
        stamps["routed"] = time.time()
        return stamps

    def close(self) -> None:
        self.raw.close()
        self.ipr.close()  # takes milliseconds: only after the stamps are out


def realtime() -> None:
    """Run the switchover ahead of ordinary processes: on a busy machine a VM's resume step must not
    wait tens of milliseconds for a CPU (it would count as downtime that no controller causes). The
    helper blocks on stdin until `go` and exits right after, so it never holds a CPU for long."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SWITCHOVER_PRIORITY))
    except OSError as exc:
        print(f"switchover: running at normal priority ({exc})", file=sys.stderr, flush=True)


def ordinary() -> None:
    """Back to normal priority once the resume is done. Its teardown (closing netlink, the
    interpreter's exit) at real-time priority, right after the switchover, held the machine: the
    probers sent nothing for ~43 ms (median) starting 6-13 ms after the announcement, against
    ~10 ms with the helper at normal priority (benchmarks/RESULTS.md, 2026-11-28, `no-stall`)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:
        print(f"switchover: could not leave real-time priority ({exc})", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--ip", required=True, help="address/prefix")
    parser.add_argument("--gateway")
    args = parser.parse_args()
    print("started", flush=True)
    if sys.stdin.readline().strip() != "prepare":  # sent once the destination interface exists
        sys.exit("switchover: expected 'prepare' on stdin")
    switchover = Switchover(args.old, args.new, args.mac, args.ip, args.gateway)
    realtime()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("switchover: expected 'go' on stdin")
    print(json.dumps(switchover.go()), flush=True)
    ordinary()
    switchover.close()


if __name__ == "__main__":
    main()
