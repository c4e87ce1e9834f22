"""Many chassis started at once: every controller comes up healthy with a full mesh of tunnels.

Before the configuration of the tunnel ports was serialised, two concurrent `ensure_tunnels`
transactions of one controller added the same `dft-...` port and the OVSDB constraint violation
killed the controller, in about half the start-ups of 12-16 chassis."""
from __future__ import annotations

import pytest

from dfflow.ovsdb.monitor import PEER_KEY
from dfflow.sandbox import health
from dfflow.sandbox.topology import Sandbox
from sandbox_fixtures import _new_dir, _teardown, require_substrate

pytestmark = pytest.mark.ovs
CHASSIS = 16


def tunnel_remote_ips(sb: Sandbox, chassis: str) -> list[str]:
    """remote_ip of every dfflow tunnel port in the chassis' OVSDB (duplicates kept)."""
    out = sb.ovs(chassis).vsctl("--format=csv", "--data=bare", "--no-headings", "--columns=options,external_ids",
                               "find", "Interface", f"external_ids:{PEER_KEY}!=\"\"")
    remotes = []
    for line in out.splitlines():
        for item in line.replace('"', "").replace(",", " ").split():
            if item.startswith("remote_ip="):
                remotes.append(item.split("=", 1)[1])
    return remotes


def start_and_check(chassis: int) -> None:
    require_substrate()
    sb = Sandbox(_new_dir())
    try:
        sb.up(chassis=chassis, controllers=True)  # `up` itself fails when a controller is not healthy
        everyone = sb.chassis_list()
        assert health.wait_healthy(everyone, timeout=30) == {}
        for ch in everyone:
            expected = sorted(peer.tunnel_ip for peer in everyone if peer.name != ch.name)
            assert sorted(tunnel_remote_ips(sb, ch.name)) == expected, ch.name
        for ch in everyone:
            with open(ch.controller_log) as f:
                log = f.read()
            assert "constraint violation" not in log and " died" not in log, (ch.name, log[-2000:])
    finally:
        _teardown([sb])


def test_sixteen_chassis_started_at_once_are_all_healthy_with_a_full_tunnel_mesh():
    start_and_check(CHASSIS)


@pytest.mark.stress
@pytest.mark.parametrize("round_", range(10))
def test_sixteen_chassis_start_ten_times(round_):
    start_and_check(CHASSIS)
