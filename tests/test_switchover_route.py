"""The emulated resume (dfflow/sandbox/switchover.py) gives the guest its default route on the destination
interface in the resume's own netlink burst, before QEMU's RARP: a resumed guest runs with its routes (they are
in its memory), so its first answer to a routed packet must not wait for a route taken after the announcement.
Real netlink, in a network namespace of the test's own with two veth pairs standing in for the VM's
source and destination interfaces."""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from pyroute2 import IPRoute

from dfflow.sandbox import switchover

MAC, IP, GATEWAY = "fa:16:3e:00:16:01", "10.9.0.5/24", "10.9.0.1"


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    name = f"h16r-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        def ip(*args: str) -> None:
            subprocess.run(["ip", "-n", name, *args], check=True)
        for end in ("old", "new"):  # veth pairs, as the VM's interfaces are; the peers up, as OVS keeps them
            ip("link", "add", f"{end}0", "type", "veth", "peer", "name", f"{end}1")
            ip("link", "set", f"{end}1", "up")
        ip("addr", "add", IP, "dev", "old0")
        ip("link", "set", "old0", "up")
        ip("route", "add", "default", "via", GATEWAY, "dev", "old0")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def default_routes() -> list[tuple[int, str]]:
    with IPRoute() as ipr:
        return [(r.get_attr("RTA_OIF"), r.get_attr("RTA_GATEWAY"))
                for r in ipr.get_routes(family=socket.AF_INET, table=254) if r["dst_len"] == 0]


class Wire:
    """The raw socket's stand-in: what the guest's routes were when each frame left."""

    def __init__(self):
        self.sent: list[tuple[int, list[tuple[int, str]]]] = []

    def send(self, frame: bytes) -> None:
        self.sent.append((int.from_bytes(frame[12:14], "big"), default_routes()))


def test_the_guest_has_its_default_route_on_the_destination_interface_when_it_announces_itself(netns):
    with switchover.inside(netns):
        vm = switchover.Switchover("old0", "new0", MAC, IP, GATEWAY)
        vm.raw.close()
        vm.raw = wire = Wire()
        stamps = vm.resume(time.time())
        vm.confirm_and_garp(stamps)
        routes_after = default_routes()
    (rarp_type, routes_at_rarp), (garp_type, _) = wire.sent
    assert (rarp_type, garp_type) == (switchover.ETH_P_RARP, switchover.ETH_P_ARP)
    assert routes_at_rarp == [(vm.new_idx, GATEWAY)]  # replaced: not left on the interface that went down
    assert routes_after == [(vm.new_idx, GATEWAY)]
    assert stamps["source_down"] <= stamps["destination_up"] <= stamps["announced"] <= stamps["routed"]


def test_a_guest_without_a_gateway_resumes_without_a_route_request(netns):
    with switchover.inside(netns):
        subprocess.run(["ip", "route", "del", "default"], check=True)
        vm = switchover.Switchover("old0", "new0", MAC, IP, None)
        vm.raw.close()
        vm.raw = Wire()
        vm.confirm_and_garp(vm.resume(time.time()))
        assert default_routes() == []
    assert len(vm.requests) == 3  # source down, destination address, destination up
