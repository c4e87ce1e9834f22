"""Host evacuation on the real sandbox: several VMs live-migrated at once (Nova's calls for each, every
VM switched over together from one helper), probed by one prober; afterwards every VM answers at its
destination and nothing is left behind: no migration record, binding or status elsewhere, no stale
flow, every chassis holding exactly the flows its controller wants."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from dfflow.sandbox.cli import sandbox as sandbox_cli
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.evacuate import evacuate
from dfflow.sandbox.netns import SandboxError
from dfflow.sandbox.probe import Echo, Sender, analyse, per_target
from dfflow.sandbox.topology import INT_BRIDGE
from controller_fixtures import bundles_after_activation, controller_status, pings, running_cloud, wait_until
from dfflow.models import PortStatus
from neutron_fixtures import stale_flows
from test_robust_sentinel import installed_equals_desired

pytestmark = pytest.mark.ovs

VMS = {"V1": "10.1.0.11", "V2": "10.1.0.12", "V3": "10.1.0.13"}
P_IP = "10.1.0.50"


@pytest.fixture(scope="module")
def cloud():
    """V1-V3 on chassis-1, their peer P on chassis-3 (net1); an echo in every V."""
    with running_cloud(3) as c:
        c.call("create_network", "net1", "10.1.0.0/24")
        c.call("create_vm", "P", "chassis-3", "net1", P_IP)
        for name, ip in VMS.items():
            c.call("create_vm", name, "chassis-1", "net1", ip)
        echoes = [Echo(c.sb, name) for name in VMS]
        for ip in VMS.values():
            wait_until(lambda: pings(c.sb, "P", ip), 20, what=f"P -> {ip} before evacuating")
        yield c
        for echo in echoes:
            echo.stop()


def run_evacuation(cloud, dest: str, **options) -> tuple[dict, dict[str, dict]]:
    """Evacuate every V to `dest` while P probes them all; returns the evacuation and each VM's figures."""
    sender = Sender(cloud.sb, "P", list(VMS.values()), interval=0.002)
    time.sleep(0.2)
    started = time.time()
    try:
        result = cloud.with_nb(lambda nb: evacuate(Cloud(cloud.sb, nb), list(VMS), dest, memory_copy=0.0,
                                                   unplug_delay=0.05, update_port_delay=0.05, **options))
        time.sleep(0.5)
    finally:
        raw = sender.stop()
    by_ip = per_target(raw)
    return result, {vm: analyse(by_ip[ip], after=started) for vm, ip in VMS.items()}


def assert_evacuated_to(cloud, dest: str) -> None:
    """Every V runs on `dest` alone, is bound and reported up there only, with no migration record;
    no chassis holds a stale or missing flow, and no controller counted an error."""
    sb = cloud.sb
    for name in VMS:
        vifs = sb.vm(name).vifs
        assert [(v.chassis, v.up) for v in vifs] == [(dest, True)], (name, vifs)
        port = wait_until(lambda: (lambda p: p if p.migration is None else None)(
            cloud.nb("get", "lport", vifs[0].port_id)), 10, what=f"{name}'s migration record cleared")
        assert (port.binding_chassis, port.inactive_bindings, port.migrating_to) == (dest, [], None), port
        wait_until(lambda: set(cloud.nb("get", PortStatus.table, port.id).up) == {dest}, 10,
                   what=f"{name} reported up on {dest} only")
    for ch in sb.chassis_list():
        taps = sb.ovs(ch.name).vsctl("list-ports", INT_BRIDGE).split()
        assert sorted(t for t in taps if t.startswith("tap")) == sorted(
            v.tap for vm in sb.vms() for v in vm.vifs if v.chassis == ch.name), (ch.name, taps)
        wait_until(lambda: installed_equals_desired(sb, ch.name), 20, what=f"{ch.name} converged")
        status = controller_status(sb, ch.name)
        assert status["stats"].get("handler_errors", 0) == 0, status["errors"]
    assert stale_flows(sb, cloud.url) == {}


def test_an_evacuation_switches_every_vm_over_at_once_and_each_answers_at_its_destination(cloud):
    result, figures = run_evacuation(cloud, "chassis-2", strategy="announce")
    assert result["failed"] == {} and sorted(m["vm"] for m in result["migrations"]) == sorted(VMS)
    # one switchover for all: every VM's resume came from the same `go`
    gos = [m["origin"] + m["steps"]["vm_go"] for m in result["migrations"]]
    assert max(gos) - min(gos) < 1e-5, gos
    for m in result["migrations"]:
        assert (m["destination"], m["strategy"], m["states"].keys() >= {"requested", "activated", "done"}) == (
            "chassis-2", "announce", True), (m["vm"], m["states"])
        assert m["steps"]["vm_source_down"] > m["steps"]["vif_plugged"]  # plugged before anyone moved
    for vm, f in figures.items():
        assert f["recovered"], (vm, f)
    assert_evacuated_to(cloud, "chassis-2")
    for m in result["migrations"]:  # after its activation, nothing of a VM's migration touches its flows
        assert bundles_after_activation(cloud.sb, m["migration"], m["port"]) == {}, m["vm"]


def test_evacuate_command_moves_a_chassis_back_with_the_unplug_strategy_and_legacy_calls(cloud):
    result = CliRunner().invoke(sandbox_cli, [
        "evacuate", "chassis-2", "--to", "chassis-1", "--strategy", "unplug", "--nova-path", "legacy",
        "--memory-copy", "0", "--unplug-delay", "50", "--update-port-delay", "50", "--dir", cloud.sb.dir])
    assert result.exit_code == 0, result.output
    assert "3 VMs to chassis-1: switched over together" in result.output
    for name, ip in VMS.items():
        assert f"{name}: chassis-2 -> chassis-1 (unplug" in result.output
        assert pings(cloud.sb, "P", ip), name
    assert_evacuated_to(cloud, "chassis-1")


def test_an_evacuation_rolled_back_everywhere_switches_nobody_and_leaves_every_vm_home(cloud):
    result, figures = run_evacuation(cloud, "chassis-2", rollback=True)
    assert result["failed"] == {} and result["switchover"] == {}
    assert {m["states"].get("aborted") is not None for m in result["migrations"]} == {True}
    for vm, f in figures.items():
        assert f["recovered"], (vm, f)
    assert_evacuated_to(cloud, "chassis-1")


def test_bad_evacuations_are_refused_before_anything_moves(cloud):
    for vms, dest, message in ((["V1", "V1"], "chassis-2", "vms: named twice: V1"),
                               ([], "chassis-2", "vms: no VM"),
                               (["V1", "V2"], "chassis-1", "vms: V1 is already on chassis-1"),
                               (["V1"], "chassis-9", "chassis-9")):
        with pytest.raises(SandboxError, match=message):
            cloud.with_nb(lambda nb: evacuate(Cloud(cloud.sb, nb), vms, dest))
    result = CliRunner().invoke(sandbox_cli, ["vm", "migrate", "V1", "V2", "--to", "chassis-1",
                                              "--dir", cloud.sb.dir])
    assert result.exit_code != 0 and "V1 is already on chassis-1" in result.output
    assert_evacuated_to(cloud, "chassis-1")


def test_vm_migrate_with_one_name_is_the_single_migration_with_its_timeline(cloud):
    runner = CliRunner()
    moved = runner.invoke(sandbox_cli, ["vm", "migrate", "V1", "--to", "chassis-2", "--memory-copy", "0",
                                        "--json", "--dir", cloud.sb.dir])
    assert moved.exit_code == 0, moved.output
    timeline = json.loads(moved.output)
    assert (timeline["vm"], timeline["source"], timeline["destination"]) == ("V1", "chassis-1", "chassis-2")
    back = runner.invoke(sandbox_cli, ["vm", "migrate", "V1", "--to", "chassis-1", "--memory-copy", "0",
                                       "--dir", cloud.sb.dir])
    assert back.exit_code == 0 and "V1: chassis-2 -> chassis-1" in back.output, back.output
    assert pings(cloud.sb, "P", VMS["V1"])
    assert_evacuated_to(cloud, "chassis-1")


def test_no_probe_is_answered_twice_during_evacuations(cloud):
    """While the VMs' migrations are in flight P sends each probe to the destination alone, which
    sends it back to the source until that VM announces itself there: one copy of each, so none can
    be answered twice, however the destination's vswitchd queues them across the switchover."""
    for dest in ("chassis-2", "chassis-1"):
        _, figures = run_evacuation(cloud, dest, strategy="announce")
        assert {vm: f["duplicates"] for vm, f in figures.items()} == {vm: 0 for vm in VMS}
    assert_evacuated_to(cloud, "chassis-1")
