"""The NB db restarted, or away for 10 s, in the middle of a live migration on a 3-chassis sandbox
(real Redis with its append-only file, real Open vSwitch, real pings). The migration completes: the
source's unplug (step 2) meets the fault, Nova's Neutron calls after it ride it out as Nova's client
and the API do; the VM answers at its destination; every chassis ends with exactly the flows it
wants, no migration record and no OVS port left; and no NB write acknowledged meanwhile is lost."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from controller_fixtures import controller_status, migrate, network_with_vms, pings, running_cloud, wait_until
from fault_audit import AckedWrites, PatientCloud, assert_clean, wait_nb_back

pytestmark = pytest.mark.ovs
IPS = {"A1": "10.0.0.11", "B1": "10.0.0.21"}
OUTAGE = 10.0
STEP_3_DELAY = 2.0  # s from the unplug to Nova's post-migration at the destination
NOVA_PAST_STEP_1 = 0.4  # s after the destination's record: Nova has read it and waits out the memory copy


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(3) as c:
        patient = PatientCloud(c.sb)
        network_with_vms(patient, {"A1": ("chassis-1", IPS["A1"]), "B1": ("chassis-2", IPS["B1"])})
        yield patient


def migrate_with_fault(cloud, vm: str, dest: str, fault, **nova) -> tuple[dict, dict[str, float]]:
    """Migrate `vm` to `dest` while `fault()` runs from the moment the destination recorded step 1;
    returns the migration's timeline and the fault's own times ({"start", "end"})."""
    port_id = cloud.sb.vm(vm).vifs[0].port_id
    times: dict[str, float] = {}

    def inject() -> None:
        with redis.Redis.from_url(cloud.url) as r:
            wait_until(lambda: b'"migration":{' in (r.get(f"dfflow:obj:lport:{port_id}") or b""), 30,
                       interval=0.005, what="step 1 recorded")
        time.sleep(NOVA_PAST_STEP_1)
        times["start"] = time.time()
        fault()
        times["end"] = time.time()

    injector = threading.Thread(target=inject)
    injector.start()
    try:
        result = migrate(cloud, vm, dest, **nova)
    finally:
        injector.join(60)
    return result, times


def assert_migrated(cloud, vm: str, dest: str, writes: AckedWrites) -> None:
    port = cloud.nb("get", "lport", cloud.sb.vm(vm).vifs[0].port_id)
    assert (port.binding_chassis, port.migration, port.migrating_to) == (dest, None, None), port
    wait_until(lambda: pings(cloud.sb, "A1", IPS[vm]), 15, what=f"A1 -> {vm} at {dest}")
    assert_clean(cloud)
    assert writes.acked and writes.lost(cloud) == [], f"{len(writes.lost(cloud))} acknowledged writes lost"


def test_a_redis_restart_between_step_1_and_the_unplug_ends_the_migration_complete(cloud):
    sb = cloud.sb

    def restart() -> None:
        sb.stop_nb()
        sb.start_nb()

    with AckedWrites(cloud.url) as writes:
        result, fault = migrate_with_fault(cloud, "B1", "chassis-3", restart, memory_copy=1.0,
                                           unplug_delay=0.3, update_port_delay=0.3)
        wait_nb_back(cloud)
    origin = result["origin"]
    assert origin + result["steps"]["recorded"] < fault["start"] and fault["end"] < origin + result["steps"]["unplug"]
    assert "done" in result["states"]
    assert_migrated(cloud, "B1", "chassis-3", writes)
    assert any(controller_status(sb, ch.name)["bus"].get("reconnects", 0) for ch in sb.chassis_list())


def test_a_ten_second_redis_outage_over_the_unplug_and_step_3_ends_the_migration_complete(cloud):
    """Nova's legacy calls: the source's unplug comes 1 s into the outage (its controller moves the
    port at once and writes `switched` when the NB is back); Nova's update_port 3 s in, which the API
    holds until the NB answers."""
    sb = cloud.sb
    current = sb.vm("B1").vifs[0].chassis
    dest = "chassis-2" if current != "chassis-2" else "chassis-3"

    def outage() -> None:
        sb.stop_nb()
        try:
            time.sleep(OUTAGE)
        finally:
            sb.start_nb()

    with AckedWrites(cloud.url) as writes:
        result, fault = migrate_with_fault(cloud, "B1", dest, outage, nova_path="legacy", strategy="unplug",
                                           memory_copy=NOVA_PAST_STEP_1 + 0.4, unplug_delay=0.6,
                                           update_port_delay=STEP_3_DELAY)
        wait_nb_back(cloud)
    origin, steps = result["origin"], result["steps"]
    assert fault["start"] < origin + steps["unplug"] < fault["end"], (fault, result)  # mid-migration
    step_3 = origin + steps["unplug"] + STEP_3_DELAY  # Nova's post-migration calls begin (show_port first)
    assert step_3 < fault["end"] < origin + steps["updated_port"]  # ... and are held until the NB is back
    assert writes.failed > 0  # the writer met the outage too
    assert_migrated(cloud, "B1", dest, writes)
    for ch in sb.chassis_list():
        assert controller_status(sb, ch.name)["bus"].get("reconnects", 0) >= 1
