"""The demo's and the benchmark's cloud (dfflow.sandbox.scenario) and `dfflow sandbox up` / `vm create`
let their probes in through security-group rules made with the API, as a user makes them: the external
host has no port security and is no member of the default group, so without the rules its probes of the
floating IP are refused; peers that are members get in without them. Real 3-chassis sandbox, real
packets."""
from __future__ import annotations

import asyncio
import json
import sys

import pytest

from controller_fixtures import pings, running_cloud, wait_until
from dfflow.nb.store import NbApi
from dfflow.sandbox import scenario
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.probe import PORT, Echo
from dfflow.sandbox.secgroup_rules import allow_probes
from sandbox_fixtures import _new_dir, require_substrate

pytestmark = pytest.mark.ovs
PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
for attempt in range(3):
    s.sendto(b"probe", (sys.argv[1], int(sys.argv[2])))
    try:
        s.recvfrom(64)
        print("answered")
        break
    except socket.timeout:
        continue
"""


@pytest.fixture(scope="module")
def built():
    with running_cloud(3) as c:
        said: list[str] = []

        async def build() -> str:
            nb, _, fip = await scenario._build(c.sb, said.append)
            await nb.close()
            return fip

        c.fip, c.said = asyncio.run(build()), said
        echo = Echo(c.sb, "M")  # M answers the probes, as in the benchmark
        try:
            yield c
        finally:
            echo.stop()


def port_of(c, vm: str) -> dict:
    return c.call("neutron", "show_port", c.sb.vm(vm).vifs[0].port_id)["port"]


def answered(c, client: str, dst: str) -> bool:
    """Whether M answers a downtime probe from `client` to `dst` (three tries)."""
    return c.sb.vm_exec(client, [sys.executable, "-c", PROBE, dst, str(PORT)], timeout=10).stdout.strip() == "answered"


def probe_rule(c, group: str) -> str:
    rules = c.call("neutron", "list_security_group_rules", security_group_id=group)["security_group_rules"]
    return next(r["id"] for r in rules if r["port_range_min"] == PORT)


def test_the_external_host_gets_in_by_the_rules_the_set_up_added_not_as_a_member(built):
    c = built
    assert c.said == ["added security group default (project demo): ingress IPv4 icmp from 0.0.0.0/0 (ping)",
                      f"added security group default (project demo): ingress IPv4 udp port {PORT} from 0.0.0.0/0 "
                      "(the downtime probes)"]
    external, migrating = port_of(c, "E"), port_of(c, "M")
    assert (external["port_security_enabled"], external["security_groups"]) == (False, [])
    [group] = migrating["security_groups"]
    assert answered(c, "E", c.fip) and pings(c.sb, "E", c.fip)

    c.call("neutron", "delete_security_group_rule", probe_rule(c, group))
    wait_until(lambda: not answered(c, "E", c.fip), 15, what="E's probes refused without their rule")
    assert answered(c, "P", scenario.M_IP)  # a member of M's group needs no rule
    assert pings(c.sb, "E", c.fip)  # the ICMP rule is still there

    again: list[str] = c.with_nb(lambda nb: allow_probes(Cloud.for_sandbox(c.sb, nb)))
    assert again == [f"security group default (project demo): ingress IPv4 udp port {PORT} from 0.0.0.0/0 "
                     "(the downtime probes)"]  # the ICMP rule was there already: left as it is
    wait_until(lambda: answered(c, "E", c.fip), 15, what="E's probes let in again")


def test_security_groups_off_takes_port_security_off_the_cloud_vms_and_on_puts_the_default_group_back(built):
    c = built
    group = port_of(c, "M")["security_groups"][0]
    c.call("neutron", "delete_security_group_rule", probe_rule(c, group))
    try:
        c.with_nb(lambda nb: scenario._set_secgroups(Cloud.for_sandbox(c.sb, nb), "off"))
        for vm in scenario.CLOUD_VMS:
            assert (port_of(c, vm)["port_security_enabled"], port_of(c, vm)["security_groups"]) == (False, [])
        wait_until(lambda: answered(c, "E", c.fip), 15, what="E's probes pass with no group to stop them")
        c.with_nb(lambda nb: scenario._set_secgroups(Cloud.for_sandbox(c.sb, nb), "on"))
        for vm in scenario.CLOUD_VMS:
            assert (port_of(c, vm)["port_security_enabled"], port_of(c, vm)["security_groups"]) == (True, [group])
        wait_until(lambda: not answered(c, "E", c.fip), 15, what="E's probes refused again")
    finally:
        c.with_nb(lambda nb: allow_probes(Cloud.for_sandbox(c.sb, nb)))


def _sandbox(*args: str) -> str:
    from click.testing import CliRunner

    from dfflow.sandbox.cli import sandbox
    done = CliRunner().invoke(sandbox, list(args), catch_exceptions=False)
    assert done.exit_code == 0, f"dfflow sandbox {' '.join(args)}: {done.output}"
    return done.output


def test_sandbox_up_adds_the_probe_rules_and_a_vm_on_an_external_network_is_an_external_host():
    require_substrate()
    workdir = _new_dir()
    try:
        status = json.loads(_sandbox("up", "--dir", workdir, "--chassis", "1", "--json"))
        assert [line.split(": ", 1)[1] for line in status["security_group_rules_added"]] == [
            "ingress IPv4 icmp from 0.0.0.0/0 (ping)",
            f"ingress IPv4 udp port {PORT} from 0.0.0.0/0 (the downtime probes)"]
        _sandbox("net", "create", "--dir", workdir, "public", "--cidr", "172.24.4.0/24", "--external")
        assert _sandbox("vm", "create", "--dir", workdir, "E", "--chassis", "chassis-1", "--network",
                        "public").strip().endswith("port security off (no security group)")
        assert "port security" not in _sandbox("vm", "create", "--dir", workdir, "A", "--chassis", "chassis-1",
                                                "--network", "public", "--port-security")
        ports = {vm["name"]: vm["port_id"] for vm in json.loads(_sandbox("status", "--dir", workdir, "--json"))["vms"]}

        async def security() -> dict[str, tuple[bool, int]]:
            nb = NbApi(status["nb_url"])
            try:
                return {vm: ((p := await nb.get("lport", port)).port_security, len(p.security_groups))
                        for vm, port in ports.items()}
            finally:
                await nb.close()

        assert asyncio.run(security()) == {"E": (False, 0), "A": (True, 1)}
    finally:
        _sandbox("down", "--dir", workdir)
