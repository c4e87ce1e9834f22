"""A VM's switchover in a live migration, as QEMU does it, run inside the VM's namespace.

Started ahead of time (a Python process takes ~150 ms to start), it prints
`ready` and waits for `go` on stdin; then, over netlink in one process (four
`ip` commands would take ~22 ms on their own): the source interface goes down
and loses its addresses, the destination interface gets them, comes up, gets
the default route and the guest's neighbour entries (a migrated guest keeps its
ARP cache), and the guest announces itself with a RARP and a gratuitous ARP,
like QEMU's self-announce. It prints one JSON line of timestamps and exits.

    python -m controller.sandbox.switchover --old eth0 --new eth1 --mac M --ip 10.0.0.5/24 [--gateway G]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time

from pyroute2 import IPRoute

ETH_P_ARP, ETH_P_RARP = 0x0806, 0x8035
NUD_STALE = 0x04
BROADCAST = b"\xff" * 6


def rarp_frame(mac: bytes) -> bytes:
    """QEMU's announcement: a RARP 'request reverse' from and about the guest's MAC."""
    return (BROADCAST + mac + ETH_P_RARP.to_bytes(2, "big")
            + bytes.fromhex("0001080006040003") + mac + bytes(4) + mac + bytes(4)).ljust(60, b"\0")


def garp_frame(mac: bytes, ip: bytes) -> bytes:
    """A gratuitous ARP request: sender and target IP are the guest's own."""
    return (BROADCAST + mac + ETH_P_ARP.to_bytes(2, "big")
            + bytes.fromhex("0001080006040001") + mac + ip + bytes(6) + ip).ljust(60, b"\0")


def switch(old: str, new: str, mac: str, ip: str, gateway: str | None) -> dict[str, float]:
    stamps = {"go": time.time()}
    iface = ipaddress.ip_interface(ip)
    mac_bytes = bytes.fromhex(mac.replace(":", ""))
    with IPRoute() as ipr:
        old_idx, new_idx = ipr.link_lookup(ifname=old)[0], ipr.link_lookup(ifname=new)[0]
        neighbours = [(n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR"))
                      for n in ipr.get_neighbours(ifindex=old_idx, family=socket.AF_INET)
                      if n.get_attr("NDA_LLADDR")]
        ipr.link("set", index=old_idx, state="down")
        ipr.flush_addr(index=old_idx)
        stamps["source_down"] = time.time()
        ipr.addr("replace", index=new_idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        ipr.link("set", index=new_idx, state="up")
        if gateway:
            ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=new_idx)
        for dst, lladdr in neighbours:
            ipr.neigh("replace", dst=dst, lladdr=lladdr, ifindex=new_idx, state=NUD_STALE)
        stamps["destination_up"] = time.time()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((new, 0))
        raw.send(rarp_frame(mac_bytes))
        raw.send(garp_frame(mac_bytes, iface.ip.packed))
    stamps["announced"] = time.time()
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--ip", required=True, help="address/prefix")
    parser.add_argument("--gateway")
    args = parser.parse_args()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("switchover: expected 'go' on stdin")
    print(json.dumps(switch(args.old, args.new, args.mac, args.ip, args.gateway)), flush=True)


if __name__ == "__main__":
    main()
