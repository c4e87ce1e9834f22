"""Each probe reaches the migrating VM once: no duplicate replies across a live migration with either
strategy, and a pre-programmed destination's VIF gets nothing of the port's traffic until the VM has
announced itself there (real Open vSwitch, real packets, probes every millisecond)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from controller.sandbox.probe import analyse
from controller.sandbox.topology import INT_BRIDGE
from controller_fixtures import migrate, wait_until
from test_migration import assert_everyone_places_m_on, cloud, other, port_id, probes  # noqa: F401

pytestmark = pytest.mark.ovs
MEMORY_COPY = 0.8  # s: the VM runs on the source while its destination is ready, as in a real pre-copy


def rx_packets(sb, vm: str, ifname: str) -> int:
    """Packets the VM's interface received (the VM's end of the veth: what the guest would get)."""
    out = sb.vm_exec(vm, ["ip", "-s", "-j", "link", "show", "dev", ifname]).stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


def lookup_of(sb, chassis: str, mac: str) -> str | None:
    """The chassis' L2 lookup flow for `mac`, with its counters (pushed from the datapath first)."""
    sb.ovs(chassis).appctl("revalidator/wait")
    out = sb.ovs(chassis).ofctl("dump-flows", INT_BRIDGE, f"table=50,dl_dst={mac}")
    return next((line.strip() for line in out.splitlines() if "priority=100" in line), None)


def destination_vif(sb, dest: str):
    try:
        return next((v for v in sb.vm("M").vifs if v.chassis == dest), None)
    except (OSError, ValueError):  # the sandbox's record is being rewritten: look again
        return None


@pytest.mark.parametrize("strategy", ["announce", "unplug"])
def test_each_probe_is_answered_once_and_the_destination_vif_gets_nothing_before_the_announcement(cloud, strategy):
    sb, dest = cloud.sb, other(cloud)
    mac = cloud.nb("get", "lport", port_id(cloud)).mac
    senders = probes(cloud)
    time.sleep(0.3)
    started = time.time()
    during: dict = {}

    def watch_the_memory_copy() -> None:
        try:
            vif = wait_until(lambda: destination_vif(sb, dest), 10, interval=0.01, what="destination VIF")
            if strategy == "announce":
                wait_until(lambda: "tun_id" not in (lookup_of(sb, dest, mac) or "tun_id"), 10, interval=0.01,
                           what="the destination to be pre-programmed")
            time.sleep(MEMORY_COPY / 2)
            during.update(ifname=vif.ifname, rx=rx_packets(sb, "M", vif.ifname), lookup=lookup_of(sb, dest, mac))
        except Exception as exc:  # reported by the test below
            during["error"] = exc

    watcher = threading.Thread(target=watch_the_memory_copy)
    watcher.start()
    result = migrate(cloud, "M", dest, strategy=strategy, memory_copy=MEMORY_COPY, unplug_delay=0.2,
                     update_port_delay=0.3)
    watcher.join()
    time.sleep(0.3)
    figures = {s.vm: analyse(s.stop(), after=started) for s in senders}
    assert "error" not in during, during
    assert result["strategy"] == strategy
    assert {vm: f["duplicates"] for vm, f in figures.items()} == {"P": 0, "Q": 0, "E": 0}, figures
    assert all(f["recovered"] for f in figures.values()), figures
    # Halfway through the memory copy the destination VIF had received nothing at all...
    assert during["rx"] == 0, during
    if strategy == "announce":
        # ...though the port's traffic was being copied there: the gated lookup held it back.
        n_packets = int(during["lookup"].split("n_packets=")[1].split(",")[0])
        assert during["lookup"].endswith("actions=drop") and n_packets > 100, during
    # After the switchover the VM is served through its destination VIF.
    assert rx_packets(sb, "M", during["ifname"]) > 100
    assert_everyone_places_m_on(cloud, dest)
