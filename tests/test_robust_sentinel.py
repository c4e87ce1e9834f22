"""A Sentinel failover of the NB under a running 3-chassis sandbox (`sandbox up --nb sentinel`):
the primary is killed with SIGKILL, a sentinel promotes the replica, and the controllers, the
Neutron API and the sandbox's Nova follow it."""
from __future__ import annotations

import shutil
import threading
import time

import pytest

from dfflow.sandbox.topology import NB_SENTINEL, Sandbox
from controller_fixtures import (SyncCloud, controller_status, dump_flows, gates_open, migrate, network_with_vms, pings,
                                 wait_arrival_windows_closed, wait_controllers_ready, wait_until)
from fault_audit import AckedWrites, assert_clean
from sandbox_fixtures import _new_dir, _teardown, require_substrate
from test_robust_nb_faults import assert_survived, controller_pids, start_ping

pytestmark = [pytest.mark.ovs,
              pytest.mark.skipif(shutil.which("redis-sentinel") is None, reason="needs redis-sentinel")]
IPS = {"A1": "10.0.0.11", "B1": "10.0.0.21", "C1": "10.0.0.31"}


@pytest.fixture(scope="module")
def cloud():
    require_substrate()
    sb = Sandbox(_new_dir())
    try:
        sb.up(chassis=3, nb_url=NB_SENTINEL)
        wait_controllers_ready(sb)
        c = SyncCloud(sb)
        network_with_vms(c, {name: (f"chassis-{i}", ip) for i, (name, ip) in enumerate(IPS.items(), start=1)})
        yield c
    finally:
        _teardown([sb])


def fail_over(sb: Sandbox) -> float:
    """SIGKILL the primary, wait for the sentinels to promote the replica, then bring the killed
    server back as the new primary's replica, ready for the next failover.
    Returns when the new primary was named."""
    ha = sb.sentinel_nb()
    old = ha.kill_primary()
    ha.wait_failover(old)
    promoted = time.time()
    sb.revive_nb_server(ha, old)
    return promoted


def installed_equals_desired(sb: Sandbox, chassis: str) -> bool:
    """No stale and no missing flow: what OVS holds is exactly what the controller wants (an activation
    gate the datapath learns replaces the controller's flow of its key: it adds none)."""
    installed = dump_flows(sb, chassis)
    return len(installed) == controller_status(sb, chassis)["flows"]


def test_controllers_follow_a_failover_and_program_a_change_made_after_it(cloud):
    sb = cloud.sb
    before = controller_pids(sb)
    assert len(before) == 3 and sb.status()["nb_url"].startswith("redis+sentinel://")
    ping = start_ping(sb, "A1", IPS["B1"], 8)
    fail_over(sb)
    assert_survived(sb, ping, before, "during the failover")
    cloud.call("create_vm", "D1", "chassis-3", "net1", "10.0.0.41")  # written to the new primary
    wait_until(lambda: pings(sb, "A1", "10.0.0.41"), 15, what="A1 -> D1 (created after the failover)")
    assert pings(sb, "B1", "10.0.0.41")


def test_a_failover_in_the_middle_of_a_live_migration_ends_it_complete_with_no_stale_flow(cloud):
    sb = cloud.sb
    baseline = {ch.name: len(dump_flows(sb, ch.name)) for ch in sb.chassis_list()}
    port_id = sb.vm("B1").vifs[0].port_id
    done: dict = {}

    def run() -> None:
        try:  # the unplug (step 2) and Neutron's binding update (step 3) come after the failover
            done["timeline"] = migrate(cloud, "B1", "chassis-3", unplug_delay=5.0, update_port_delay=6.0)
        except BaseException as exc:
            done["error"] = exc

    migration = threading.Thread(target=run)
    with AckedWrites(cloud.url) as writes:  # acknowledged once the replica holds them (WAIT)
        migration.start()
        try:
            wait_until(lambda: cloud.nb("get", "lport", port_id).migration is not None, 20,
                       what="step 1 recorded by the destination")
            time.sleep(0.5)
            promoted = fail_over(sb)
        finally:
            migration.join(90)
    assert writes.acked and writes.lost(cloud) == []
    assert "error" not in done, done.get("error")
    timeline = done["timeline"]
    assert timeline["origin"] + timeline["steps"]["unplug"] > promoted, "the failover was not mid-migration"
    assert cloud.nb("get", "lport", port_id).migration is None
    assert cloud.nb("get", "lport", port_id).binding_chassis == "chassis-3"
    wait_until(lambda: pings(sb, "A1", IPS["B1"]), 15, what="A1 -> B1 after its migration")
    for ch in sb.chassis_list():
        wait_until(lambda: installed_equals_desired(sb, ch.name), 20, what=f"{ch.name}: no stale flow")
        assert controller_status(sb, ch.name)["stats"].get("task_crashes", 0) == 0
    assert_clean(cloud)  # and no flow of a deleted object, no record, no OVS port left
    # back where it was, with no failover: every chassis holds as many flows as before
    migrate(cloud, "B1", "chassis-2", unplug_delay=0.05, update_port_delay=0.05)
    wait_until(lambda: all(gates_open(sb, ch.name) for ch in sb.chassis_list()), 20,
               what="every activation gate open: no pending destination left")
    wait_arrival_windows_closed(sb)
    assert {ch.name: len(dump_flows(sb, ch.name)) for ch in sb.chassis_list()} == baseline
