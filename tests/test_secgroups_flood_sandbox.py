"""Flooded IPv4 (broadcast, multicast) and the security groups, on a real 2-chassis sandbox with real packets.

A flood must not be a way around a port's ingress filter: a broadcast or multicast datagram reaches a
port with port security only when its groups would admit the same datagram sent to it, from this
chassis or through a tunnel; ports without port security get every flood; and no copy arrives twice
(each receiver counts every datagram it gets, by sequence number).

net1: A (chassis-1) and B (chassis-2) are in their project's default group (ingress from its members);
X (chassis-2) is in a group of its own (egress open, no ingress rule); V (chassis-1) has port security
off."""
from __future__ import annotations

import sys
from collections import Counter

import pytest

from controller_fixtures import pings, running_cloud, wait_until
from sandbox_fixtures import heard_while_sending

pytestmark = pytest.mark.ovs

VMS = {"A": ("chassis-1", "10.1.0.10"), "B": ("chassis-2", "10.1.0.20"), "X": ("chassis-2", "10.1.0.30"),
       "V": ("chassis-1", "10.1.0.40")}
PORT = 7700
DHCP_SERVER, DHCP_CLIENT = 67, 68
COUNT = 10
SUBNET_BROADCAST, BROADCAST, MULTICAST = "10.1.0.255", "255.255.255.255", "239.1.2.3"

UDP_RECEIVE = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton(sys.argv[3]), socket.inet_aton("0.0.0.0")))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
got = []
try:
    while True:
        got.append(s.recvfrom(64)[0].decode())
except socket.timeout:
    pass
print(" ".join(got), flush=True)
"""
UDP_SEND = """
import socket, sys, time
dst, port, count, source_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.bind(("", source_port))
for i in range(count):
    s.sendto(b"%s-%d" % (dst.encode(), i), (dst, port))
    time.sleep(0.01)
"""


def neutron(cloud, call, *args):
    return cloud.call("neutron", call, *args)


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(2) as c:
        c.call("create_network", "net1", "10.1.0.0/24")
        own = neutron(c, "create_security_group", {"security_group": {"name": "own", "project_id": "demo"}})
        c.own_group = own["security_group"]["id"]
        attrs = {"X": {"security_groups": [c.own_group]}, "V": {"port_security_enabled": False}}
        for name, (chassis, ip) in VMS.items():
            c.call("create_vm", name, chassis, "net1", ip, port_attrs=attrs.get(name))
        wait_until(lambda: pings(c.sb, "A", VMS["B"][1]), 15, what="A -> B")
        wait_until(lambda: pings(c.sb, "A", VMS["V"][1]), 15, what="A -> V")
        yield c


def received(sb, sender: str, receivers: list[str], dst: str, port: int = PORT,
             source_port: int = 0) -> dict[str, Counter]:
    """The datagrams of COUNT IPv4 UDP datagrams that `sender` sends to `dst` (a broadcast or
    multicast address) each receiver gets: a Counter of their payloads (a duplicate counts 2)."""
    heard = heard_while_sending(sb, receivers, [sys.executable, "-c", UDP_RECEIVE, str(port), "0.8", MULTICAST],
                                sender, [sys.executable, "-c", UDP_SEND, dst, str(port), str(COUNT), str(source_port)])
    return {vm: Counter(out.split()) for vm, out in heard.items()}


def every_once(dst: str) -> Counter:
    return Counter(f"{dst}-{i}" for i in range(COUNT))


NOTHING = Counter()


@pytest.mark.parametrize("dst", [SUBNET_BROADCAST, BROADCAST, MULTICAST])
def test_a_flood_from_outside_the_group_does_not_reach_a_filtered_port(cloud, dst):
    sb = cloud.sb
    # X is no member of A's and B's default group: B is on X's chassis, A behind a tunnel
    assert received(sb, "X", ["A", "B", "V"], dst) == {"A": NOTHING, "B": NOTHING, "V": every_once(dst)}
    # V has no port security and no group: on A's chassis, B behind a tunnel
    assert received(sb, "V", ["A", "B", "X"], dst) == {"A": NOTHING, "B": NOTHING, "X": NOTHING}


@pytest.mark.parametrize("dst", [SUBNET_BROADCAST, BROADCAST, MULTICAST])
def test_a_flood_from_a_member_reaches_the_group_once_and_no_one_else_filtered(cloud, dst):
    sb = cloud.sb
    # B -> A through a tunnel, B -> X on B's chassis (X's group admits nothing), V unfiltered
    assert received(sb, "B", ["A", "X", "V"], dst) == {"A": every_once(dst), "X": NOTHING, "V": every_once(dst)}
    # A -> V on A's chassis, A -> B through a tunnel
    assert received(sb, "A", ["B", "X", "V"], dst) == {"B": every_once(dst), "X": NOTHING, "V": every_once(dst)}


def test_a_rule_admitting_a_source_lets_its_floods_in_and_removing_it_shuts_them_out(cloud):
    sb = cloud.sb
    rule = neutron(cloud, "create_security_group_rule", {"security_group_rule": {
        "security_group_id": cloud.own_group, "direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
        "port_range_min": PORT, "port_range_max": PORT, "remote_ip_prefix": f"{VMS['V'][1]}/32"}})
    try:
        wait_until(lambda: received(sb, "V", ["X"], SUBNET_BROADCAST)["X"] == every_once(SUBNET_BROADCAST),
                   10, what="V's broadcast reaching X once a rule admits V")
        # only V's: A is still no source X's rules admit, and A's group still shuts V out
        assert received(sb, "A", ["X"], SUBNET_BROADCAST) == {"X": NOTHING}
        assert received(sb, "V", ["A", "X"], MULTICAST) == {"A": NOTHING, "X": every_once(MULTICAST)}
    finally:
        neutron(cloud, "delete_security_group_rule", rule["security_group_rule"]["id"])
    wait_until(lambda: received(sb, "V", ["X"], BROADCAST)["X"] == NOTHING, 10,
               what="V's broadcast shut out of X once the rule is gone")


def test_dhcp_replies_reach_filtered_ports_and_filtered_ports_cannot_send_them(cloud):
    sb = cloud.sb
    # V stands in for the network's DHCP server (no port security): its replies reach every port, as in
    # Neutron, whatever the groups -- X's admit nothing else
    assert received(sb, "V", ["A", "B", "X"], BROADCAST, DHCP_CLIENT, DHCP_SERVER) == \
        {vm: every_once(BROADCAST) for vm in ("A", "B", "X")}
    # a VM with port security may not answer DHCP, even to members of its group
    assert received(sb, "B", ["A", "V"], BROADCAST, DHCP_CLIENT, DHCP_SERVER) == {"A": NOTHING, "V": NOTHING}
    assert received(sb, "B", ["A"], VMS["A"][1], DHCP_CLIENT, DHCP_SERVER) == {"A": NOTHING}
    # other UDP from V still does not pass: only the DHCP reply's ports
    assert received(sb, "V", ["A", "X"], BROADCAST, DHCP_CLIENT, DHCP_CLIENT + 1) == {"A": NOTHING, "X": NOTHING}


ARP_COUNT = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
got = 0
try:
    while True:
        frame = s.recv(128)
        if frame[20:22] == b"\\x00\\x01" and frame[38:42] == socket.inet_aton(sys.argv[1]):
            got += 1
except socket.timeout:
    pass
print(got, flush=True)
"""
ARP_ASK = """
import socket, sys, time
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
own, asked, count = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), int(sys.argv[3])
request = (b"\\xff" * 6 + mac + b"\\x08\\x06" + b"\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x01" + mac + own
           + b"\\x00" * 6 + asked)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(count):
    s.send(request)
    time.sleep(0.01)
"""


def test_arp_floods_reach_filtered_ports_from_anyone(cloud):
    """An ARP request for an address no port has (the ARP responder answers the others in place) is
    flooded to every port, filtered or not, as port security always admits ARP: from outside the group,
    on the same chassis and through a tunnel."""
    sb, unknown = cloud.sb, "10.1.0.99"
    heard = heard_while_sending(sb, ["A", "B", "V"], [sys.executable, "-c", ARP_COUNT, unknown, "0.8"],
                                "X", [sys.executable, "-c", ARP_ASK, VMS["X"][1], unknown, str(COUNT)])
    got = {vm: int(out.strip()) for vm, out in heard.items()}
    assert got == {"A": COUNT, "B": COUNT, "V": COUNT}
