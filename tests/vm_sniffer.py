"""What a VM's interfaces receive, per probe: run inside the VM's namespace (a packet socket on every
interface, kernel receive times), it records each probe request (UDP to the probe port) with the
interface it came in on, and prints them as one JSON line when told to stop.

    with VmSniffer(sandbox, "M") as sniffer:
        ...
    sniffer.received  # [(time, ifname, source address, probe seq), ...]
"""
from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
from typing import Any

ETH_P_ALL = 3
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PROBE_PORT = 7100


def parse(frame: bytes) -> tuple[str, int] | None:
    """(source address, seq) of a probe request frame, or None."""
    if len(frame) < 14 + 20 + 8 + 8 or frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_UDP:
        return None
    udp = 14 + (frame[14] & 0x0F) * 4
    if struct.unpack("!H", frame[udp + 2:udp + 4])[0] != PROBE_PORT:
        return None
    return socket.inet_ntoa(frame[26:30]), struct.unpack("!Q", frame[udp + 8:udp + 16])[0]


def sniff() -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    received = []
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [], 0.5)
        if sys.stdin in ready:
            break
        if sock not in ready:
            continue
        frame, ancillary, _, address = sock.recvmsg(256, socket.CMSG_SPACE(16))
        probe = parse(frame) if address[2] != socket.PACKET_OUTGOING else None
        if probe is None:
            continue
        at = next((s + ns / 1e9 for level, kind, value in ancillary if kind == SO_TIMESTAMPNS
                   for s, ns in [struct.unpack("qq", value[:16])]), None)
        received.append((at, address[0], *probe))
    print(json.dumps(received), flush=True)


class VmSniffer:
    def __init__(self, sandbox: Any, vm: str):
        self.sandbox, self.vm = sandbox, vm
        self.received: list[tuple[float, str, str, int]] = []

    def __enter__(self) -> "VmSniffer":
        self.proc = self.sandbox.vm_popen(self.vm, [sys.executable, __file__], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"sniffer in {self.vm} failed: {self.proc.stderr.read()}")
        return self

    def __exit__(self, *exc: Any) -> None:
        out, err = self.proc.communicate("stop\n", timeout=20)
        if self.proc.returncode != 0:
            raise RuntimeError(f"sniffer in {self.vm} failed: {err}")
        self.received = [tuple(r) for r in json.loads(out.strip().splitlines()[-1])]


if __name__ == "__main__":
    sniff()
