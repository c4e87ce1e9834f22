"""A sandbox with real controllers, and sync helpers to drive its cloud from tests."""
from __future__ import annotations

import asyncio
import json
import subprocess
import re
import time
import contextlib
from typing import Any, Awaitable, Callable, Iterator

import pytest

from dfflow.status import read_status
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.topology import INT_BRIDGE, Sandbox
from dfflow.nb.store import NbApi
from sandbox_fixtures import _new_dir, _teardown, require_substrate

TEST_FAILED = pytest.StashKey[bool]()  # set on a test's item when its set-up or body failed (conftest)


class SyncCloud:
    """The sandbox's Cloud, one asyncio.run per call (tests are synchronous)."""

    def __init__(self, sb: Sandbox):
        self.sb = sb
        self.url = sb.status()["nb_url"]

    def with_nb(self, body: Callable[[NbApi], Awaitable[Any]]) -> Any:
        """Run `body(nb)` on a fresh NB connection to the sandbox's db."""
        async def run() -> Any:
            nb = NbApi(self.url)
            try:
                return await body(nb)
            finally:
                await nb.close()
        return asyncio.run(run())

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.with_nb(lambda nb: getattr(Cloud.for_sandbox(self.sb, nb), method)(*args, **kwargs))

    def nb(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.with_nb(lambda nb: getattr(nb, method)(*args, **kwargs))


@contextlib.contextmanager
def running_cloud(chassis: int = 3, controller_cmd: list[str] | None = None) -> Iterator[SyncCloud]:
    """A sandbox with one controller per chassis, connected and with a full tunnel mesh; torn down after.
    `controller_cmd`: e.g. benchmarks.faulty_controller.controller_cmd(), for a cloud whose faults `fault` switches."""
    require_substrate()
    sb = Sandbox(_new_dir(), controller_cmd=controller_cmd)
    try:
        sb.up(chassis=chassis, controllers=True)
        wait_controllers_ready(sb)
        yield SyncCloud(sb)
    finally:
        _teardown([sb])


def dump_flows(sb: Sandbox, chassis: str) -> list[str]:
    out = sb.ovs(chassis).ofctl("dump-flows", "--no-stats", INT_BRIDGE)
    return [line.strip() for line in out.splitlines() if line.strip() and "reply" not in line]


def gates_open(sb: Sandbox, chassis: str) -> bool:
    """Every activation gate (table 5) of the chassis is open (loads reg5): no pre-programmed `announce`
    destination waits for its VM there. Every local port has one; a closed gate has no action."""
    return all("REG5" in f or "reg5" in f.partition("actions=")[2]
               for f in dump_flows(sb, chassis) if "table=5," in f)


def flow_cookies(lines: list[str]) -> list[int]:
    return [int(m.group(1), 16) for line in lines if (m := re.search(r"cookie=0x([0-9a-f]+)", line))]


def controller_status(sb: Sandbox, chassis: str) -> dict[str, Any]:
    return read_status(sb.chassis(chassis).status_socket)


def bundles_after_activation(sb: Sandbox, migration: str, port: str) -> dict[str, list]:
    """Per chassis, the bundles about `port` it applied after it applied `migration`'s activation
    (the controllers' own account: their status' apply timings) -- or, on a chassis whose flows the
    activation left as they were (a sender: it already sent the port's traffic to the destination
    alone), after the first chassis applied it."""
    timings = {ch.name: controller_status(sb, ch.name)["apply_timings"] for ch in sb.chassis_list()}
    activated = {name: max(t["applied_at"] for t in ts if [migration, "activated"] in t["stamps"])
                 for name, ts in timings.items() if any([migration, "activated"] in t["stamps"] for t in ts)}
    assert len(activated) >= 2, activated  # the source and the destination
    found = {}
    for name, ts in timings.items():
        since = activated.get(name, min(activated.values()))
        later = [(t["cause"], t["flow_mods"]) for t in ts if t["applied_at"] > since and port in t["cause"]]
        if later:
            found[name] = later
    return found


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


def pings(sb: Sandbox, vm: str, dst: str, count: int = 1, wait: float = 1.0) -> bool:
    result = sb.vm_exec(vm, ["ping", "-c", str(count), "-i", "0.2", "-W", str(wait), dst], check=False)
    return result.returncode == 0


def wait_controllers_ready(sb: Sandbox, timeout: float = 20.0) -> None:
    names = [c.name for c in sb.chassis_list()]

    def ready() -> bool:
        for name in names:
            try:
                st = controller_status(sb, name)
            except (OSError, json.JSONDecodeError):
                return False
            if not st["switch_connected"] or len(st["tunnels"]) != len(names) - 1:
                return False
        return True

    wait_until(ready, timeout, what="controllers connected with full tunnel mesh")


def wait_arrival_windows_closed(sb: Sandbox, timeout: float = 20.0) -> None:
    """Until no chassis admits a migrated port's established connections any more (their window,
    controller.apps.secgroups.ARRIVAL_WINDOW after a migration, is closed): its flows, which commit TCP
    without SYN, are gone (the static ones dropping it stay)."""
    wait_until(lambda: not any("tcp_flags" in f and "commit" in f for ch in sb.chassis_list()
                               for f in dump_flows(sb, ch.name)),
               timeout, what="arrival windows closed")


def controller_log(sb: Sandbox, chassis: str) -> str:
    with open(sb.chassis(chassis).controller_log) as f:
        return f.read()


def rx_packets(sb: Sandbox, vm: str, ifname: str = "eth0") -> int:
    out = sb.vm_exec(vm, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout
    return int(out)


__all__ = ["SyncCloud", "dump_flows", "flow_cookies", "controller_status", "wait_until", "pings",
           "wait_controllers_ready", "controller_log", "rx_packets", "wait_arrival_windows_closed"]


# UDP probes that report what the receiver saw: the sender's address and the TTL on arrival.
UDP_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 12, 1)  # IP_RECVTTL (not exported by Python)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    while True:
        data, anc, _, addr = s.recvmsg(2048, socket.CMSG_SPACE(4))
        ttl = next((int.from_bytes(d[:4], "little") for lvl, typ, d in anc if typ == socket.IP_TTL), -1)
        print(f"from {addr[0]} ttl {ttl}", flush=True)
        s.sendto(data, addr)
except socket.timeout:
    pass
"""

UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(sys.argv[3]))
s.settimeout(0.5)
for attempt in range(10):
    s.sendto(b"probe", (sys.argv[1], int(sys.argv[2])))
    try:
        data, addr = s.recvfrom(2048)
        print(f"reply from {addr[0]}", flush=True)
        break
    except socket.timeout:
        continue
else:
    print("no reply", flush=True)
    sys.exit(1)
"""


def udp_probe(sb, client_vm: str, server_vm: str, dst_ip: str, port: int = 7000, ttl: int = 10) -> tuple[str, str]:
    """Send one UDP probe (retrying) from client_vm to dst_ip, answered by server_vm.

    Returns (what the server saw: 'from A.B.C.D ttl N', what the client saw: 'reply from E.F.G.H')."""
    import sys
    server = sb.vm_popen(server_vm, [sys.executable, "-c", UDP_ECHO_SERVER, str(port), "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready", server.stderr.read()
        client = sb.vm_exec(client_vm, [sys.executable, "-c", UDP_CLIENT, dst_ip, str(port), str(ttl)],
                            check=False, timeout=15)
    finally:
        server.kill()
        out, _ = server.communicate()
    seen = [line for line in out.splitlines() if line.startswith("from ")]
    return (seen[0] if seen else ""), client.stdout.strip()


def migrate(cloud: SyncCloud, vm: str, dest: str, **kwargs: Any) -> dict[str, Any]:
    """Live-migrate through the sandbox's Nova emulation (see dfflow/sandbox/nova.py).

    The tests switch over as soon as the destination is ready (no memory copy): they assert recovery
    and state, and the compressed sequence makes every step meet the one before at its busiest."""
    from dfflow.sandbox import nova
    kwargs.setdefault("memory_copy", 0.0)
    return cloud.with_nb(lambda nb: nova.migrate(Cloud.for_sandbox(cloud.sb, nb), vm, dest, **kwargs))


@contextlib.contextmanager
def fault(cloud: SyncCloud, name: str) -> Iterator[None]:
    """An injected fault (dfflow.sandbox.faults' switches), on for the block only."""
    from dfflow.sandbox.faults import set_fault
    cloud.with_nb(lambda nb: set_fault(nb, name, True))
    try:
        yield
    finally:
        cloud.with_nb(lambda nb: set_fault(nb, name, False))


def update_binding(cloud: SyncCloud, port_id: str, host: str) -> None:
    """Neutron's update_port(binding:host_id=host): the migration's step 3."""
    from dfflow.nb.neutron import update_port_binding
    cloud.with_nb(lambda nb: update_port_binding(nb, port_id, host))


def network_with_vms(cloud: SyncCloud, vms: dict[str, tuple[str, str]], cidr: str = "10.0.0.0/24") -> None:
    """Network net1 with one VM per entry (name -> (chassis, ip)); returns when the first pings every other."""
    cloud.call("create_network", "net1", cidr)
    for name, (chassis, ip) in vms.items():
        cloud.call("create_vm", name, chassis, "net1", ip)
    first, *others = vms
    for other in others:
        wait_until(lambda: pings(cloud.sb, first, vms[other][1]), 15, what=f"{first} -> {other}")
