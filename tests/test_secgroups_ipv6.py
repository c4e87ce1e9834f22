"""IPv6 and the security groups, on a real 2-chassis sandbox with real packets.

The pipeline carries IPv4 only and the security groups filter only IPv4 (IPv6 rules are stored, not
enforced), so IPv6 must never reach or leave a port with security groups around them: what such a
port sends is dropped by port security, and what is sent to it -- unicast or multicast, from this
chassis or from a tunnel -- is dropped before it. Ports without port security still switch IPv6
between them (L2 does not look at the ethertype), which shows the packets are really sent.

net1: A (chassis-1) and B (chassis-2) are in their project's default group; U (chassis-2) and V
(chassis-1) have port security off. Each VM has a ULA address with its neighbours' MACs filled in
statically (no neighbour discovery needed for unicast)."""
from __future__ import annotations

import sys

import pytest

from controller_fixtures import pings, running_cloud, wait_until
from sandbox_fixtures import heard_while_sending

pytestmark = pytest.mark.ovs

VMS = {"A": ("chassis-1", "10.1.0.10", True), "B": ("chassis-2", "10.1.0.20", True),
       "U": ("chassis-2", "10.1.0.30", False), "V": ("chassis-1", "10.1.0.40", False)}
V6 = {name: f"fd00:1::{ip.rsplit('.', 1)[1]}" for name, (_, ip, _) in VMS.items()}
PORT = 7600
COUNT = 10

UDP6_RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
got = 0
try:
    while True:
        s.recvfrom(64)
        got += 1
except socket.timeout:
    pass
print(got, flush=True)
"""
UDP6_SEND = """
import socket, sys, time
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
scope = socket.if_nametoindex("eth0") if dst.startswith("ff02") else 0
for i in range(count):
    s.sendto(b"probe %d" % i, (dst, port, 0, scope))
    time.sleep(0.01)
"""


def enable_ipv6(sb, vm: str) -> None:
    """IPv6 on the VM's eth0 (the sandbox turns it off): its ULA address, no DAD or router
    solicitations, and every other VM's address as a static neighbour."""
    script = ["sysctl -qw net.ipv6.conf.eth0.accept_dad=0 net.ipv6.conf.eth0.router_solicitations=0",
              "sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.eth0.disable_ipv6=0",
              f"ip -6 addr add {V6[vm]}/64 dev eth0 nodad"]
    for other, vif_mac in ((o, sb.vm(o).vifs[0].mac) for o in VMS if o != vm):
        script.append(f"ip -6 neigh replace {V6[other]} lladdr {vif_mac} dev eth0 nud permanent")
    sb.vm_exec(vm, ["sh", "-ec", "\n".join(script)])


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(2) as c:
        c.call("create_network", "net1", "10.1.0.0/24")
        for name, (chassis, ip, security) in VMS.items():
            attrs = None if security else {"port_security_enabled": False}
            c.call("create_vm", name, chassis, "net1", ip, port_attrs=attrs)
        for name, (_, ip, _) in VMS.items():
            if name != "A":
                wait_until(lambda: pings(c.sb, "A", ip), 15, what=f"A -> {name}")
        for name in VMS:
            enable_ipv6(c.sb, name)
        yield c


def received(sb, sender: str, receivers: list[str], dst: str) -> dict[str, int]:
    """How many of COUNT IPv6 UDP datagrams `sender` sends to `dst` (an address or ff02::1) each
    receiver gets."""
    heard = heard_while_sending(sb, receivers, [sys.executable, "-c", UDP6_RECEIVE, str(PORT), "0.8"],
                                sender, [sys.executable, "-c", UDP6_SEND, dst, str(PORT), str(COUNT)])
    return {vm: int(out.strip()) for vm, out in heard.items()}


def test_ports_without_port_security_switch_ipv6_between_them(cloud):
    assert received(cloud.sb, "U", ["V"], V6["V"]) == {"V": COUNT}
    assert received(cloud.sb, "V", ["U"], V6["U"]) == {"U": COUNT}
    assert received(cloud.sb, "U", ["V"], "ff02::1") == {"V": COUNT}


def test_a_port_with_port_security_sends_no_ipv6(cloud):
    for dst in ("B", "U", "V"):
        assert received(cloud.sb, "A", [dst], V6[dst]) == {dst: 0}
    assert received(cloud.sb, "A", ["B", "U", "V"], "ff02::1") == {"B": 0, "U": 0, "V": 0}


def test_ipv6_does_not_reach_a_port_with_security_groups_around_them(cloud):
    sb = cloud.sb
    assert received(sb, "V", ["A"], V6["A"]) == {"A": 0}  # same chassis
    assert received(sb, "U", ["A"], V6["A"]) == {"A": 0}  # through a tunnel
    # multicast: flooded to the ports without port security, not to those with groups
    assert received(sb, "U", ["A", "B", "V"], "ff02::1") == {"A": 0, "B": 0, "V": COUNT}
    assert received(sb, "V", ["A", "B", "U"], "ff02::1") == {"A": 0, "B": 0, "U": COUNT}
    # IPv4 is A's groups' business: V is no member of them, A's connections out are answered
    assert not pings(sb, "V", VMS["A"][1]) and pings(sb, "A", VMS["V"][1])
