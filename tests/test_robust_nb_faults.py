"""The NB db going away and coming back, on a running 3-chassis sandbox with controllers.

A Redis outage used to kill every controller at once (the heartbeat caught the built-in
ConnectionError, not redis-py's, and a dead task ended the controller); a Redis restart without
an append-only file emptied the NB, and the controllers then removed every flow."""
from __future__ import annotations

import subprocess
import time

import pytest

from dfflow.sandbox.topology import Sandbox
from controller_fixtures import (controller_status, dump_flows, migrate, network_with_vms, pings,
                                 running_cloud, wait_arrival_windows_closed, wait_until)

pytestmark = pytest.mark.ovs
IPS = {"A1": "10.0.0.11", "B1": "10.0.0.21", "C1": "10.0.0.31"}
OUTAGE = 10.0


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(3) as c:
        network_with_vms(c, {name: (f"chassis-{i}", ip) for i, (name, ip) in enumerate(IPS.items(), start=1)})
        yield c


def controller_pids(sb: Sandbox) -> dict[str, int]:
    return {ch["name"]: ch["controller_pid"] for ch in sb.status()["chassis"] if ch["controller_alive"]}


def status_if_up(sb: Sandbox, chassis: str) -> dict:
    try:
        return controller_status(sb, chassis)
    except (OSError, ValueError):
        return {}


def all_flows(sb: Sandbox) -> dict[str, list[str]]:
    """The controllers' flows on every chassis; flows the datapath learned itself (an announce migration's
    activation gate, with timeouts of their own) come and go without the controller and are left out."""
    return {ch.name: sorted(f for f in dump_flows(sb, ch.name) if "idle_timeout=" not in f)
            for ch in sb.chassis_list()}


def start_ping(sb: Sandbox, vm: str, dst: str, seconds: float) -> subprocess.Popen:
    count = int(seconds / 0.1)
    return sb.vm_popen(vm, ["ping", "-c", str(count), "-i", "0.1", "-W", "1", dst],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def received(ping: subprocess.Popen) -> tuple[int, int]:
    out, _ = ping.communicate(timeout=120)
    line = next(l for l in out.splitlines() if "packets transmitted" in l)
    sent, got = (int(x.split()[0]) for x in line.split(",")[:2])
    return sent, got


def assert_survived(sb: Sandbox, ping: subprocess.Popen, before: dict[str, int], during: str) -> None:
    """No ping lost, every controller the same process, back on the NB and without a task crash."""
    sent, got = received(ping)
    assert got == sent, f"{sent - got} of {sent} pings lost {during} (the data plane must not care)"
    assert controller_pids(sb) == before, "a controller died or was restarted"
    for name in before:
        wait_until(lambda: controller_status(sb, name)["nb_connected"], 15, what=f"{name} back on the NB")
        status = controller_status(sb, name)
        assert status["stats"].get("task_crashes", 0) == 0, status["errors"]
        assert status["bus"].get("reconnects", 0) >= 1


def test_a_ten_second_redis_outage_kills_no_controller_and_later_changes_are_programmed(cloud):
    sb = cloud.sb
    before = controller_pids(sb)
    assert len(before) == 3
    ping = start_ping(sb, "A1", IPS["B1"], OUTAGE + 3)
    sb.stop_nb()
    try:
        time.sleep(OUTAGE)
    finally:
        sb.start_nb()
    assert_survived(sb, ping, before, "while the NB db was away")
    # An NB change made after the outage is programmed everywhere...
    cloud.call("create_vm", "D1", "chassis-3", "net1", "10.0.0.41")
    wait_until(lambda: pings(sb, "A1", "10.0.0.41"), 15, what="A1 -> D1 (created after the outage)")
    # ... and a live migration works.
    migrate(cloud, "B1", "chassis-3")
    wait_until(lambda: pings(sb, "A1", IPS["B1"]), 15, what="A1 -> B1 after its migration")
    assert controller_pids(sb) == before


def test_a_redis_restart_keeps_the_nb_every_flow_and_the_pings(cloud):
    sb = cloud.sb
    wait_until(lambda: pings(sb, "A1", IPS["C1"]), 15, what="A1 -> C1")
    before = all_flows(sb)
    ports_before = {p.id for p in cloud.nb("list", "lport")}
    ping = start_ping(sb, "A1", IPS["C1"], 6)
    sb.stop_nb()
    sb.start_nb()
    for name in controller_pids(sb):
        wait_until(lambda: controller_status(sb, name)["nb_connected"], 15, what=f"{name} back on the NB")
    time.sleep(1.0)  # the resync's events are handled
    sent, got = received(ping)
    assert got == sent, f"{sent - got} of {sent} pings lost across the Redis restart"
    assert {p.id for p in cloud.nb("list", "lport")} == ports_before, "the NB lost ports in the restart"
    assert all_flows(sb) == before


def test_a_flushed_nb_makes_no_controller_delete_a_flow_nor_hands_out_a_vni_again(cloud):
    """Last in this module: it leaves the NB empty."""
    sb = cloud.sb
    wait_until(lambda: pings(sb, "A1", IPS["C1"]), 15, what="A1 -> C1")
    used_vni = cloud.nb("get", "lswitch", "net1").segmentation_id
    wait_arrival_windows_closed(sb)  # the module's migrations: their admissions end by themselves
    before = all_flows(sb)
    cloud.with_nb(lambda nb: nb.redis.flushdb())
    for name in controller_pids(sb):
        wait_until(lambda: controller_status(sb, name)["nb_behind"], 10, what=f"{name} saying the NB is behind")
    sb.stop_nb()  # a restart: the controllers reconnect and resynchronise from the empty NB
    sb.start_nb()
    for name in controller_pids(sb):
        wait_until(lambda: controller_status(sb, name)["nb_connected"], 15, what=f"{name} back on the NB")
        assert controller_status(sb, name)["nb_behind"]["revision"] < controller_status(sb, name)["nb_behind"]["delivered"]
    time.sleep(1.0)
    assert all_flows(sb) == before
    assert pings(sb, "A1", IPS["C1"], count=3)
    # A controller restarted meanwhile reads the NB revision its flows came from (kept in OVSDB) and
    # does not take the empty NB for the truth either.
    sb.start_controller("chassis-1")
    wait_until(lambda: status_if_up(sb, "chassis-1").get("stats", {}).get("reconciles"), 15,
               what="chassis-1 restarted and reconciled")
    assert controller_status(sb, "chassis-1")["nb_behind"]
    assert all_flows(sb) == before
    assert pings(sb, "A1", IPS["C1"], count=3)
    switch, _ = cloud.call("create_network", "net2", "10.9.0.0/24")
    assert switch.segmentation_id > used_vni
