"""Shared fixtures: a private, real redis-server per test that needs one."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from dfflow.sandbox.ovsproc import OvsInstance, missing_binaries
from dfflow.sandbox.redisproc import RedisServer
from controller_fixtures import TEST_FAILED


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Mark a test whose set-up or body failed, for fixtures that must not hand on what it left."""
    report = yield
    if report.failed:
        item.stash[TEST_FAILED] = True
    return report


@pytest.fixture
def redis_server(tmp_path, request):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    # TCP only: a unix socket under pytest's tmp_path can exceed the 108-byte path limit
    server = RedisServer(str(tmp_path / "redis"), unixsocket=False,
                         persistent=request.node.get_closest_marker("persistent_redis") is not None)
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
