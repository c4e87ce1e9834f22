"""Security groups enforced with Open vSwitch conntrack, on a real 3-chassis sandbox with real packets.

A and B (net1, chassis-1 and -2) are in their project's default group; C (net1, chassis-3) is in a group of
its own (egress open, no ingress rule); E is an external host on `public` (chassis-3) without port
security, and A has a floating IP."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import pytest

from controller_fixtures import controller_status, dump_flows, pings, running_cloud, wait_until
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


# The connection of a script run with `role` server (listening on `host`:`port`; it says when) or client.
ONE_CONNECTION = """
if role == "server":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    print("listening", flush=True)
    conn = listener.accept()[0]
else:
    conn = socket.create_connection((host, port), timeout=5)
"""

# Both ends of one connection keep sending (1 KiB every 20 ms) and write how many bytes they received so far
# to a file, so the test sees whether the connection still carries bytes either way.
TALKER = """
import os, socket, sys, threading, time
role, host, port, counter = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
quiet = sys.argv[5:] == ["quiet"]  # receive only
""" + ONE_CONNECTION + """conn.settimeout(None)
def send():
    try:
        while True:
            conn.sendall(b"x" * 1024)
            time.sleep(0.02)
    except OSError:
        pass
if not quiet:
    threading.Thread(target=send, daemon=True).start()
received = 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    received += len(data)
    with open(counter + ".tmp", "w") as f:
        f.write(str(received))
    os.replace(counter + ".tmp", counter)
"""


class Talk:
    """A TCP connection from `client` to `server` (listening on `port`, reached at `dst_ip`) carrying bytes
    both ways (`quiet_client`: from the server only); `received()` is what each end got so far."""

    def __init__(self, sb, tmp_path, client: str, server: str, dst_ip: str, port: int, quiet_client: bool = False):
        self.quiet = quiet_client
        self.files = (str(tmp_path / f"{server}-{port}"), str(tmp_path / f"{client}-{port}"))
        self.procs = [sb.vm_popen(server, [sys.executable, "-c", TALKER, "server", "0.0.0.0", str(port), self.files[0]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        assert self.procs[0].stdout.readline().strip() == "listening", self.procs[0].stderr.read()
        self.procs.append(sb.vm_popen(client, [sys.executable, "-c", TALKER, "client", dst_ip, str(port),
                                               self.files[1], *(["quiet"] if quiet_client else [])],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))

    def received(self) -> tuple[int, int]:
        def read(path: str) -> int:
            try:
                with open(path) as f:
                    return int(f.read() or 0)
            except FileNotFoundError:
                return 0
        return read(self.files[0]), read(self.files[1])

    def flowing(self, over: float = 0.5) -> bool:
        before = self.received()
        time.sleep(over)
        after = self.received()
        return after[1] > before[1] and (self.quiet or after[0] > before[0])

    def stopped(self, over: float = 1.0) -> bool:
        before = self.received()
        time.sleep(over)
        return self.received() == before

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def talking(*talks_args):
    talks = []
    try:
        for args in talks_args:
            talks.append(Talk(*args))
        yield talks
    finally:
        for talk in talks:
            talk.close()


def test_removing_the_rule_that_let_a_connection_in_cuts_it_while_others_go_on(cloud, tmp_path):
    sb = cloud.sb
    cut_rule = add_rule(cloud, protocol="tcp", port_range_min=5120, port_range_max=5120, remote_ip_prefix=f"{E}/32")
    kept_rule = add_rule(cloud, protocol="tcp", port_range_min=5121, port_range_max=5121,
                         remote_ip_prefix="172.24.4.0/24")
    try:
        wait_until(lambda: tcp_opens(sb, "E", "A", cloud.fip, 5120), 10, what="E -> A tcp 5120 once allowed")
        with talking((sb, tmp_path, "E", "A", cloud.fip, 5120), (sb, tmp_path, "E", "A", cloud.fip, 5121)) as (cut, kept):
            wait_until(lambda: cut.flowing() and kept.flowing(), 10, what="both connections carry bytes both ways")
            neutron(cloud, "delete_security_group_rule", cut_rule)
            wait_until(cut.stopped, 5, what="the connection of the removed rule cut")
            assert cut.stopped(2.0), cut.received()  # no byte either way since, though both ends keep sending
            assert kept.flowing(1.0), kept.received()
        status = controller_status(sb, "chassis-1")
        assert status["stats"].get("conntrack_sweep.entries_cut", 0) >= 1, status["stats"]
        assert not status["stats"].get("conntrack_sweep.failures"), status["errors"]
    finally:
        for rule in (cut_rule, kept_rule):
            with contextlib.suppress(Exception):
                neutron(cloud, "delete_security_group_rule", rule)


def test_a_member_leaving_the_remote_group_loses_its_connections_to_the_group(cloud, tmp_path):
    sb = cloud.sb
    port_c = sb.vm("C").vifs[0].port_id
    neutron(cloud, "update_port", port_c, {"port": {"security_groups": [cloud.own_group, cloud.default_group]}})
    try:
        wait_until(lambda: pings(sb, "C", A), 10, what="C -> A once C is a member of A's group")
        with talking((sb, tmp_path, "C", "A", A, 5130), (sb, tmp_path, "B", "A", A, 5131)) as (leaving, member):
            wait_until(lambda: leaving.flowing() and member.flowing(), 10, what="both connections carry bytes")
            neutron(cloud, "update_port", port_c, {"port": {"security_groups": [cloud.own_group]}})
            wait_until(leaving.stopped, 5, what="C's connection cut once it left the group")
            assert leaving.stopped(2.0), leaving.received()
            assert member.flowing(1.0), member.received()
    finally:
        neutron(cloud, "update_port", port_c, {"port": {"security_groups": [cloud.own_group]}})


def test_established_connections_resume_after_ovs_vswitchd_restarts(cloud, tmp_path):
    """A userspace datapath's conntrack zones die with ovs-vswitchd; as TCP without SYN opens nothing, the
    controller admits every local port's established TCP for an arrival window once it reprograms the switch."""
    sb = cloud.sb
    rule = add_rule(cloud, protocol="tcp", port_range_min=5140, port_range_max=5140, remote_ip_prefix=f"{E}/32")
    try:
        wait_until(lambda: tcp_opens(sb, "E", "A", cloud.fip, 5140), 10, what="E -> A tcp 5140 once allowed")
        with talking((sb, tmp_path, "E", "A", cloud.fip, 5140), (sb, tmp_path, "A", "B", B, 5141)) as talks:
            wait_until(lambda: all(t.flowing() for t in talks), 10, what="both connections carry bytes both ways")
            connects = controller_status(sb, "chassis-1")["stats"]["switch_connects"]
            sb.ovs("chassis-1").restart_vswitchd()
            wait_until(lambda: controller_status(sb, "chassis-1")["stats"]["switch_connects"] == connects + 1, 15,
                       what="the controller reconnected to the new ovs-vswitchd")
            for talk in talks:
                wait_until(talk.flowing, 15, what="the connection carries bytes both ways again")
    finally:
        neutron(cloud, "delete_security_group_rule", rule)
