"""Supervision: a sandbox's dead controller is started again and its restarts are shown; `up` fails,
naming the chassis and its last log lines, when a controller is not healthy after start-up."""
from __future__ import annotations

import os
import signal

import pytest
from click.testing import CliRunner

from dfflow.sandbox import health, netns
from dfflow.sandbox.cli import sandbox as sandbox_cli
from dfflow.sandbox.netns import SandboxError
from dfflow.sandbox.topology import Sandbox
from controller_fixtures import network_with_vms, pings, running_cloud, wait_until
from sandbox_fixtures import _new_dir, _teardown, require_substrate

pytestmark = pytest.mark.ovs


def test_a_killed_controller_is_restarted_and_its_restart_and_last_exit_are_shown():
    with running_cloud(2) as cloud:
        sb = cloud.sb
        network_with_vms(cloud, {"A1": ("chassis-1", "10.0.0.11"), "B1": ("chassis-2", "10.0.0.21")})
        killed = sb.status()["chassis"][0]["controller_pid"]
        os.kill(killed, signal.SIGKILL)
        restarted = wait_until(lambda: (lambda ch: ch if ch["controller_alive"] and ch["controller_pid"] != killed
                                        else None)(sb.status()["chassis"][0]), 10, what="a new controller")
        assert restarted["controller_restarts"] == 1
        assert restarted["controller_last_exit"] == "killed by SIGKILL"
        assert health.wait_healthy(sb.chassis_list(), 20) == {}
        text = CliRunner().invoke(sandbox_cli, ["status", "--dir", sb.dir]).output
        assert f"controller pid {restarted['controller_pid']} (alive), restarted 1 times (last: killed by SIGKILL)" \
            in text
        # the new controller serves a VM created after it started
        cloud.call("create_vm", "A2", "chassis-1", "net1", "10.0.0.12")
        wait_until(lambda: pings(sb, "B1", "10.0.0.12"), 15, what="B1 -> A2")
        # a controller stopped on purpose stays stopped
        sb.stop_controller("chassis-2")
        assert not sb.status()["chassis"][1]["controller_alive"]


def test_up_fails_naming_the_chassis_whose_controller_is_not_healthy():
    require_substrate()
    sb = Sandbox(_new_dir())
    try:
        with pytest.raises(SandboxError) as info:
            sb.up(chassis=2, controllers=True, controller_args=["--strategy", "bogus"])
        message = str(info.value)
        assert "2 of 2 controllers not healthy" in message
        assert "controller keeps dying" in message and "chassis-1: " in message and "chassis-2: " in message
        assert "--strategy: 'bogus' is not one of unplug, announce" in message, message
        assert not [ns for ns in netns.list_netns() if ns.startswith(sb.names.prefix)]  # nothing left
    finally:
        _teardown([sb])
