"""`dfflow sandbox up --neutron`: the sandbox runs its own neutron-server with the dfflow driver (MariaDB,
gunicorn) as its cloud's API; Neutron's Nova notifier sends to the URL given; `status` shows it and
`down` stops every process of it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dfflow.sandbox import neutronproc
from controller_fixtures import wait_until
from neutron_fixtures import events_for
from nova_recorder import NovaRecorder
from sandbox_fixtures import _new_dir, require_substrate

pytestmark = [pytest.mark.ovs, pytest.mark.neutron]
DFFLOW = str(Path(sys.executable).parent / "dfflow")


def _sandbox(*args: str) -> str:
    done = subprocess.run([DFFLOW, "sandbox", *args], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"dfflow sandbox {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def test_sandbox_up_neutron_serves_the_cloud_with_neutron_server_that_tells_nova_and_down_stops_it():
    require_substrate()
    if neutronproc.missing():
        pytest.skip("; ".join(neutronproc.missing()))
    workdir = _new_dir()
    neutron_dir = Path(workdir) / "neutron"
    try:
        with NovaRecorder() as nova:
            status = json.loads(_sandbox("up", "--dir", workdir, "--chassis", "1", "--neutron",
                                         "--nova-url", nova.url, "--json"))
            server = status["neutron"]
            assert (status["api_kind"], status["api_url"]) == ("neutron-server", server["url"])
            assert (server["alive"], server["nova_url"]) == ({"api": True, "db": True}, nova.url)
            assert "neutron-server with the dfflow driver" in _sandbox("status", "--dir", workdir)

            _sandbox("net", "create", "--dir", workdir, "net1", "--cidr", "10.41.0.0/24")
            # Nova's boot through neutron-server: the port bound to chassis-1, os-vif's plug, the VIF up
            _sandbox("vm", "create", "--dir", workdir, "A", "--chassis", "chassis-1", "--network", "net1")
            vm = json.loads(_sandbox("status", "--dir", workdir, "--json"))["vms"][0]
            port = httpx.get(f"{status['api_url']}/v2.0/ports/{vm['port_id']}", timeout=30).json()["port"]
            assert (port["device_id"], port["binding:host_id"]) == (vm["uuid"], "chassis-1")
            wait_until(lambda: ("network-vif-plugged", "completed", vm["uuid"]) in events_for(nova, vm["port_id"]),
                       30, 0.1, what="network-vif-plugged from neutron-server's notifier")
            assert neutronproc.running_in(neutron_dir)
    finally:
        _sandbox("down", "--dir", workdir)
        left = neutronproc.running_in(neutron_dir)
        shutil.rmtree(workdir, ignore_errors=True)
    assert left == []


def test_a_nova_url_without_neutron_server_is_refused_naming_the_options(tmp_path):
    from click.testing import CliRunner

    from dfflow.sandbox.cli import sandbox
    result = CliRunner().invoke(sandbox, ["up", "--dir", str(tmp_path), "--nova-url", "http://127.0.0.1:1/v2.1"])
    assert result.exit_code == 2 and "--nova-url" in result.output and "--neutron" in result.output, result.output
    assert not (tmp_path / "state.json").exists()


def test_a_running_neutron_server_needs_the_nb_db_it_writes_to(tmp_path):
    from dfflow.sandbox.netns import SandboxError
    from dfflow.sandbox.topology import Sandbox
    require_substrate()
    with pytest.raises(SandboxError, match="nb_url"):
        Sandbox(str(tmp_path)).up(chassis=1, neutron_url="http://127.0.0.1:9696")
    assert not (tmp_path / "state.json").exists()
