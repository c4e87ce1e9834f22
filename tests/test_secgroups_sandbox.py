"""Security groups enforced with Open vSwitch conntrack, on a real 3-chassis sandbox with real packets.

A and B (net1, chassis-1 and -2) are in their project's default group; C (net1, chassis-3) is in a group of
its own (egress open, no ingress rule); E is an external host on `public` (chassis-3) without port
security, and A has a floating IP."""
from __future__ import annotations

import subprocess
import sys

import pytest

from controller_fixtures import dump_flows, pings, running_cloud, wait_until
from sandbox_fixtures import tcp_transfer

pytestmark = pytest.mark.ovs

A, B, C, E = "10.1.0.10", "10.1.0.20", "10.1.0.30", "172.24.4.100"
PAIR = "10.1.0.200"  # A's allowed address pair

TCP_CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except OSError as exc:
    print(f"refused {exc}")
"""
TCP_LISTEN = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("listening", flush=True)
s.settimeout(float(sys.argv[2]))
try:
    while True:
        s.accept()[0].close()
except socket.timeout:
    pass
"""


def neutron(cloud, call, *args):
    return cloud.call("neutron", call, *args)


def tcp_opens(sb, client: str, server: str, dst_ip: str, port: int, timeout: float = 1.5) -> bool:
    """Whether `client` can open a TCP connection to `server` listening on `port` (at `dst_ip`)."""
    listener = sb.vm_popen(server, [sys.executable, "-c", TCP_LISTEN, str(port), str(timeout + 3)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "listening", listener.stderr.read()
        out = sb.vm_exec(client, [sys.executable, "-c", TCP_CONNECT, dst_ip, str(port), str(timeout)],
                         timeout=timeout + 10).stdout.strip()
        return out == "connected"
    finally:
        listener.kill()
        listener.wait()


def routed_net1_and_public(c) -> None:
    """net1 behind router R, whose gateway is on the external network `public`."""
    c.call("create_network", "net1", "10.1.0.0/24")
    c.call("create_network", "public", "172.24.4.0/24", external=True)
    c.call("create_router", "R", ["net1"], external="public")


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(3) as c:
        routed_net1_and_public(c)
        own = neutron(c, "create_security_group", {"security_group": {"name": "own", "project_id": "demo"}})
        c.own_group = own["security_group"]["id"]
        c.call("create_vm", "A", "chassis-1", "net1", A)
        c.call("create_vm", "B", "chassis-2", "net1", B)
        c.call("create_vm", "C", "chassis-3", "net1", C, port_attrs={"security_groups": [c.own_group]})
        c.call("create_vm", "E", "chassis-3", "public", E, port_attrs={"port_security_enabled": False})
        c.fip = c.call("create_floating_ip", "A").floating_ip
        c.default_group = c.nb("get", "lport", c.sb.vm("A").vifs[0].port_id).security_groups[0]
        wait_until(lambda: pings(c.sb, "A", B), 15, what="A -> B")
        yield c


def add_rule(cloud, **rule) -> str:
    body = {"security_group_id": cloud.default_group, "direction": "ingress", "ethertype": "IPv4", **rule}
    return neutron(cloud, "create_security_group_rule", {"security_group_rule": body})["security_group_rule"]["id"]


def test_members_of_the_default_group_talk_both_ways(cloud):
    sb = cloud.sb
    assert pings(sb, "B", A)
    tcp_transfer(sb, "A", "B", B, nbytes=200_000)
    tcp_transfer(sb, "B", "A", A, nbytes=200_000)
    flows = "\n".join(dump_flows(sb, "chassis-1"))
    assert "ct(table=" in flows and "ct(commit" in flows, flows


def test_a_vm_outside_the_group_and_the_external_host_cannot_open_a_connection_in(cloud):
    sb = cloud.sb
    assert not pings(sb, "C", A, count=2)
    assert not pings(sb, "E", cloud.fip, count=2)
    assert not tcp_opens(sb, "C", "A", A, 5101)
    assert not tcp_opens(sb, "E", "A", cloud.fip, 5102)


def test_replies_of_connections_opened_from_inside_flow(cloud):
    sb = cloud.sb
    assert pings(sb, "A", E)  # E has no port security: only A's groups decide
    assert tcp_opens(sb, "A", "E", E, 5103)
    assert pings(sb, "A", C) is False  # C's group admits nothing in ...
    assert pings(sb, "C", B) is False
    tcp_transfer(sb, "A", "E", E, nbytes=200_000)  # ... while A's replies from E flow


def test_rules_added_and_removed_change_what_is_allowed_at_once(cloud):
    sb = cloud.sb
    icmp = add_rule(cloud, protocol="icmp", remote_ip_prefix="0.0.0.0/0")
    try:
        wait_until(lambda: pings(sb, "E", cloud.fip), 10, what="E -> A's floating IP once ICMP is allowed")
        assert pings(sb, "C", A)
        assert not tcp_opens(sb, "E", "A", cloud.fip, 5104)  # only ICMP
        tcp = add_rule(cloud, protocol="tcp", port_range_min=5100, port_range_max=5110,
                       remote_ip_prefix="172.24.4.0/24")
        try:
            wait_until(lambda: tcp_opens(sb, "E", "A", cloud.fip, 5105), 10, what="E -> A tcp 5105 once allowed")
            assert not tcp_opens(sb, "E", "A", cloud.fip, 5111)  # outside the range
            assert not tcp_opens(sb, "C", "A", A, 5105)  # outside the prefix
        finally:
            neutron(cloud, "delete_security_group_rule", tcp)
        wait_until(lambda: not tcp_opens(sb, "E", "A", cloud.fip, 5106), 10, what="tcp refused once the rule is gone")
    finally:
        neutron(cloud, "delete_security_group_rule", icmp)
    wait_until(lambda: not pings(sb, "E", cloud.fip), 10, what="E -> A refused once ICMP is not allowed")
    assert not pings(sb, "C", A)
    assert pings(sb, "A", B)


def test_a_new_member_is_let_in_and_a_leaving_one_is_shut_out(cloud):
    sb = cloud.sb
    port_c = sb.vm("C").vifs[0].port_id
    neutron(cloud, "update_port", port_c, {"port": {"security_groups": [cloud.own_group, cloud.default_group]}})
    try:
        wait_until(lambda: pings(sb, "C", A), 10, what="C -> A once C is a member of A's group")
        assert pings(sb, "A", C)  # and C's new group lets the members in
    finally:
        neutron(cloud, "update_port", port_c, {"port": {"security_groups": [cloud.own_group]}})
    wait_until(lambda: not pings(sb, "C", A), 10, what="C shut out once it left the group")


def pings_from(sb, vm: str, source: str, dst: str) -> bool:
    return sb.vm_exec(vm, ["ping", "-c", "1", "-W", "1", "-I", source, dst], check=False).returncode == 0


def test_an_allowed_address_pair_is_let_through_and_other_spoofed_sources_are_not(cloud):
    sb, spoofed = cloud.sb, "10.1.0.201"
    port_a = sb.vm("A").vifs[0].port_id
    for address in (PAIR, spoofed):
        sb.vm_exec("A", ["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
    try:
        assert not pings_from(sb, "A", PAIR, B)  # not A's address yet
        neutron(cloud, "update_port", port_a, {"port": {"allowed_address_pairs": [{"ip_address": PAIR}]}})
        # A's port security lets the pair out, and B's group admits it as a member's address
        wait_until(lambda: pings_from(sb, "A", PAIR, B), 10, what="A -> B from its allowed address pair")
        assert not pings_from(sb, "A", spoofed, B)
        assert pings(sb, "A", B)
        neutron(cloud, "update_port", port_a, {"port": {"allowed_address_pairs": []}})
        wait_until(lambda: not pings_from(sb, "A", PAIR, B), 10, what="the pair refused once removed")
    finally:
        for address in (PAIR, spoofed):
            sb.vm_exec("A", ["ip", "addr", "del", f"{address}/24", "dev", "eth0"], check=False)
