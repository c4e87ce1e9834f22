"""OVN as the benchmark's peer on the sandbox (dfflow/sandbox/ovn.py, ovn_cloud.py): it comes up
on the sandbox's chassis, two VMs reach each other through its Geneve tunnels, and a live
migration as Neutron's OVN driver drives it (multi-chassis binding, RARP activation) ends with the
VM answering from its destination and the port bound there alone; a floating IP, through a router
pinned to the gateway chassis as Neutron pins it, reaches the VM before and after it moves."""
from __future__ import annotations

import asyncio
import os

import pytest

from dfflow.sandbox import ovn as ovnmod
from dfflow.sandbox.ovn import Ovn
from dfflow.sandbox.ovn_cloud import OvnCloud, migrate
from dfflow.sandbox.ovn_router import create_floating_ip, create_router
from dfflow.sandbox.priorities import autogroup_enabled, autogroup_of
from dfflow.sandbox.topology import INT_BRIDGE
from sandbox_fixtures import sandbox_factory  # noqa: F401


@pytest.fixture
def ovn_cloud(sandbox_factory):  # noqa: F811
    if ovnmod.missing():
        pytest.skip("; ".join(ovnmod.missing()))
    sb = sandbox_factory(chassis=2)
    ovn = Ovn(sb, gateways=["chassis-2"])
    ovn.start()
    cloud = OvnCloud(sb, ovn)
    try:
        yield cloud
    finally:
        cloud.close()
        ovn.stop()


def _ping(sb, vm: str, ip: str) -> bool:
    return sb.vm_exec(vm, ["ping", "-c", "2", "-i", "0.2", "-W", "1", ip], check=False).returncode == 0


def test_ovn_northd_and_every_ovn_controller_run_at_the_niceness_ovn_ctl_gives_them(ovn_cloud):
    daemons = [ovn_cloud.ovn.central.northd] + [node.controller for node in ovn_cloud.ovn.chassis.values()]
    assert {d.name + str(i): os.getpriority(os.PRIO_PROCESS, d.pid()) for i, d in enumerate(daemons)} == {
        d.name + str(i): ovnmod.OVN_NICENESS for i, d in enumerate(daemons)}
    if autogroup_enabled():  # and each one's session, weighed against the guests' (this process') session
        assert {d.name + str(i): autogroup_of(d.pid())[1] for i, d in enumerate(daemons)} == {
            d.name + str(i): ovnmod.OVN_NICENESS for i, d in enumerate(daemons)}
        assert autogroup_of(os.getpid())[0] not in {autogroup_of(d.pid())[0] for d in daemons}


def test_vms_on_two_ovn_chassis_reach_each_other_and_a_migrated_vm_answers_from_its_destination(ovn_cloud):
    sb = ovn_cloud.sandbox
    ovn_cloud.create_network("net1", "10.1.0.0/24")
    a = ovn_cloud.create_vm("A", "chassis-1", "net1", "10.1.0.10")
    ovn_cloud.create_vm("B", "chassis-2", "net1", "10.1.0.20")
    assert _ping(sb, "A", "10.1.0.20")
    # the traffic crossed OVN's own tunnel: one Geneve port per peer, made by ovn-controller
    geneve = sb.ovs("chassis-1").vsctl("--bare", "--columns=options", "find", "Interface", "type=geneve")
    assert "172.31.0.2" in geneve

    timeline = asyncio.run(migrate(ovn_cloud, "A", "chassis-2", memory_copy=0.1, unplug_delay=0.1,
                                   update_port_delay=0.1))
    steps = timeline["steps"]
    # the destination claimed the port before the switchover, as an additional chassis
    assert steps["vif_plugged"] < steps["vm_source_down"] < steps["activated"] < steps["done"]
    assert ovn_cloud.binding(a.id) == (["chassis-2"], [], True)
    options = ovn_cloud.nb.lsp_get_options(a.id).execute(check_error=True)
    assert options["requested-chassis"] == "chassis-2" and "activation-strategy" not in options
    assert [v.chassis for v in sb.vm("A").vifs] == ["chassis-2"]
    assert not sb.ovs("chassis-1").vsctl("--bare", "--columns=name", "find", "Interface",
                                         f"external_ids:iface-id={a.id}").strip()
    assert INT_BRIDGE in sb.ovs("chassis-2").vsctl("port-to-br", sb.vm("A").vifs[0].tap)
    assert _ping(sb, "B", "10.1.0.10")


def test_a_floating_ip_reaches_its_vm_through_the_ovn_gateway_before_and_after_a_migration(ovn_cloud):
    sb = ovn_cloud.sandbox
    ovn_cloud.create_network("net1", "10.1.0.0/24")
    ovn_cloud.create_network("public", "172.24.4.0/24", external=True)
    router = create_router(ovn_cloud, "R", ["net1"], "public")
    m = ovn_cloud.create_vm("M", "chassis-1", "net1", "10.1.0.10")
    ovn_cloud.create_vm("E", "chassis-2", "public", "172.24.4.100", port_security=False)
    ovn_cloud.allow_probes()
    fip = create_floating_ip(ovn_cloud, router, "M")
    # Neutron's default: a centralized floating IP on a router pinned to the gateway chassis
    assert router.chassis == "chassis-2"
    nat = {(n.type, n.external_ip): n for n in ovn_cloud.nb.lr_get(router.lr).execute(check_error=True).nat}
    assert nat[("dnat_and_snat", fip)].logical_ip == "10.1.0.10" and not nat[("dnat_and_snat", fip)].external_mac
    assert ("snat", router.gateway_ip) in nat
    assert _ping(sb, "E", fip)

    asyncio.run(migrate(ovn_cloud, "M", "chassis-2", memory_copy=0.1, unplug_delay=0.1, update_port_delay=0.1))
    assert ovn_cloud.binding(m.id) == (["chassis-2"], [], True)
    assert _ping(sb, "E", fip)
    asyncio.run(migrate(ovn_cloud, "M", "chassis-1", memory_copy=0.1, unplug_delay=0.1, update_port_delay=0.1))
    assert _ping(sb, "E", fip)
    # and what M sends to the outside is translated (E has no route back to net1's addresses)
    assert _ping(sb, "M", "172.24.4.100")


def test_sandbox_down_stops_the_ovn_daemons_left_running(sandbox_factory):  # noqa: F811
    if ovnmod.missing():
        pytest.skip("; ".join(ovnmod.missing()))
    sb = sandbox_factory(chassis=2)
    Ovn(sb).start()  # and never stopped, as after a crash of whatever started it
    running = ovnmod.pids_under(sb.dir)
    assert len(running) == 5  # northd, NB, SB, one ovn-controller per chassis
    stopped = sb.down()["stopped_pids"]
    assert set(running) <= set(stopped) and ovnmod.pids_under(sb.dir) == []
