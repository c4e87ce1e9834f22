"""Shared fixtures: a private, real redis-server per test that needs one."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from controller.ovsproc import OvsInstance, missing_binaries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A redis-server child on a free loopback port; restartable on the same port and dir."""

    def __init__(self, workdir: str, persistent: bool = False):
        self.workdir = workdir
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.workdir,
             "--save", "", "--protected-mode", "yes",
             *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
               else ["--appendonly", "no"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path, request):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisProcess(str(tmp_path), persistent=request.node.get_closest_marker("persistent_redis") is not None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nb_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
async def nb(nb_url):
    from dfflow.nb.store import NbApi
    api = NbApi(nb_url)
    yield api
    await api.close()


def _ovs_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run ovs-vswitchd"
    if missing_binaries():
        return f"Open vSwitch binaries missing: {missing_binaries()}"
    return None


@pytest.fixture(scope="module")
def ovs():
    """One real ovs-vswitchd with an empty netdev br-int (fail_mode=secure), for a test module."""
    reason = _ovs_usable()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="packer-ovs-") as rundir:
        inst = OvsInstance(rundir)
        inst.start()
        try:
            inst.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                       "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14")
            yield inst
        finally:
            inst.stop()
            inst.wait_stopped()

# One neutron-server for the whole session, shared by every test module that asks for it.
from neutron_fixtures import neutron  # noqa: E402,F401
