"""Fixtures and helpers for tests on the real multi-chassis sandbox (root, namespaces, OVS).

Import what you use into your test module (tests/conftest.py belongs to the NB
tests)::

    from sandbox_fixtures import sandbox_factory, sandbox2, require_substrate  # noqa: F401

Sandbox dirs are short mkdtemp dirs under /tmp, not pytest's tmp_path: unix
socket paths (redis, OpenFlow) must stay under 108 bytes.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from dfflow.sandbox import preflight
from dfflow.sandbox.topology import INT_BRIDGE, Sandbox

GENEVE_OFPORT_BASE = 100  # tunnel to chassis with index i gets ofport 100 + i


def require_substrate() -> None:
    """Skip (with the reason) unless we are root and every program the sandbox needs is installed."""
    problems = preflight.problems(need_redis=True)
    if problems:
        pytest.skip("; ".join(problems))


def _new_dir() -> str:
    return tempfile.mkdtemp(prefix="dfsb-", dir="/tmp")


@pytest.fixture
def sandbox_factory():
    """``make(chassis=2, **up_kwargs) -> Sandbox``; every sandbox made is torn down afterwards."""
    require_substrate()
    made: list[Sandbox] = []

    def make(chassis: int = 2, controller_cmd=None, **kwargs) -> Sandbox:
        sb = Sandbox(_new_dir(), controller_cmd=controller_cmd)
        made.append(sb)
        kwargs.setdefault("controllers", False)
        sb.up(chassis=chassis, **kwargs)
        return sb

    yield make
    _teardown(made)


@pytest.fixture(scope="module")
def sandbox2():
    """One 2-chassis sandbox (no controllers) shared by a module's tests."""
    require_substrate()
    sb = Sandbox(_new_dir())
    try:
        sb.up(chassis=2, controllers=False)
        yield sb
    finally:
        _teardown([sb])


def _teardown(sandboxes: list[Sandbox]) -> None:
    errors = []
    for sb in sandboxes:
        try:
            sb.down()
        except Exception as exc:  # keep tearing the others down
            errors.append(exc)
        shutil.rmtree(sb.dir, ignore_errors=True)
    if errors:
        raise errors[0]


# --- hand-written data plane (there is no controller at this layer) -------------------------------
def add_geneve_mesh(sb: Sandbox) -> None:
    """One Geneve port per peer on every br-int: ``gnv-<peer index>``, ofport 100 + peer index."""
    chassis = sb.chassis_list()
    for ch in chassis:
        args: list[str] = []
        for peer in chassis:
            if peer.name == ch.name:
                continue
            port = f"gnv-{peer.index}"
            args += ["--", "add-port", INT_BRIDGE, port, "--", "set", "Interface", port, "type=geneve",
                     f"options:remote_ip={peer.tunnel_ip}", f"options:local_ip={ch.tunnel_ip}",
                     "options:key=flow", f"ofport_request={GENEVE_OFPORT_BASE + peer.index}"]
        if args:
            ch.ovs().vsctl(*args)


def ofport(sb: Sandbox, chassis: str, iface: str) -> int:
    out = sb.ovs(chassis).vsctl("get", "Interface", iface, "ofport").strip()
    port = int(out)
    if port <= 0:
        raise AssertionError(f"{iface} on {chassis} has no ofport ({out})")
    return port


def add_flows(sb: Sandbox, chassis: str, flows: list[str]) -> None:
    ovs = sb.ovs(chassis)
    for flow in flows:
        ovs.ofctl("add-flow", INT_BRIDGE, flow)


def wire_vms(sb: Sandbox, vni: int, vifs: list[tuple[str, str]]) -> None:
    """A point-to-point L2 segment between two VIFs ((vm, ifname) pairs) with static flows.

    Same chassis: in_port=A -> B and back. Different chassis: in_port=A ->
    tun_id=vni, Geneve port towards B's chassis; Geneve in with tun_id=vni ->
    A. ARP needs nothing special: every frame of the segment is carried.
    """
    (vm_a, if_a), (vm_b, if_b) = vifs
    a, b = sb.vm(vm_a).vif(if_a), sb.vm(vm_b).vif(if_b)
    pa, pb = ofport(sb, a.chassis, a.tap), ofport(sb, b.chassis, b.tap)
    if a.chassis == b.chassis:
        add_flows(sb, a.chassis, [f"priority=100,in_port={pa},actions=output:{pb}",
                                  f"priority=100,in_port={pb},actions=output:{pa}"])
        return
    ia, ib = sb.chassis(a.chassis).index, sb.chassis(b.chassis).index
    for here, port, peer in ((a.chassis, pa, ib), (b.chassis, pb, ia)):
        tun = GENEVE_OFPORT_BASE + peer
        add_flows(sb, here, [f"priority=100,in_port={port},actions=set_field:{vni}->tun_id,output:{tun}",
                             f"priority=100,in_port={tun},tun_id={vni},actions=output:{port}"])


def ping(sb: Sandbox, vm: str, dst: str, count: int = 3, interval: float = 0.2) -> subprocess.CompletedProcess:
    return sb.vm_exec(vm, ["ping", "-c", str(count), "-i", str(interval), "-W", "1", dst], check=False)


_TCP_SERVER = textwrap.dedent("""
    import hashlib, socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(1)
    s.settimeout(10)
    print("listening", flush=True)
    c, _ = s.accept()
    c.settimeout(10)
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
    c.sendall(f"{n} {h.hexdigest()}".encode())
    c.close()
""")

_TCP_CLIENT = textwrap.dedent("""
    import hashlib, os, socket, sys
    data = os.urandom(int(sys.argv[3]))
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = c.recv(256)
        if not d:
            break
        reply += d
    n, digest = reply.decode().split()
    ok = int(n) == len(data) and digest == hashlib.sha256(data).hexdigest()
    print("ok" if ok else f"mismatch {reply!r}", flush=True)
    sys.exit(0 if ok else 1)
""")


def tcp_transfer(sb: Sandbox, client_vm: str, server_vm: str, server_ip: str, nbytes: int = 1_000_000,
                 port: int = 5001, bind_ip: str | None = None) -> None:
    """Send `nbytes` random bytes over TCP between two VMs; the server's SHA-256 must match.

    The client connects to `server_ip`; the server listens on `bind_ip` (default: the same; a
    floating IP's server listens on its fixed IP or 0.0.0.0)."""
    server = sb.vm_popen(server_vm, [sys.executable, "-c", _TCP_SERVER, bind_ip or server_ip, str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening", server.stderr.read() if server.stderr else ""
        client = sb.vm_exec(client_vm, [sys.executable, "-c", _TCP_CLIENT, server_ip, str(port), str(nbytes)],
                            check=False, timeout=20)
        assert client.returncode == 0 and client.stdout.strip() == "ok", (client.stdout, client.stderr)
        server.wait(timeout=10)
        assert server.returncode == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def heard_while_sending(sb: Sandbox, receivers: list[str], listen: list[str], sender: str,
                        send: list[str]) -> dict[str, str]:
    """What each receiver VM's `listen` command printed after "ready" while `sender` ran `send`: the
    listeners start first and are each waited for, so nothing sent can go unheard."""
    listeners = {vm: sb.vm_popen(vm, listen, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for vm in receivers}
    try:
        for vm, listener in listeners.items():
            assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
        sb.vm_exec(sender, send, timeout=20)
        return {vm: listener.communicate(timeout=20)[0] for vm, listener in listeners.items()}
    finally:
        for listener in listeners.values():
            if listener.poll() is None:
                listener.kill()
                listener.wait()


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
