"""The `announce` strategy on a real sandbox (real Open vSwitch, real packets, probes every millisecond).

Each probe reaches the migrating VM once: no duplicate replies across a live migration with either
strategy, and a pre-programmed destination's VIF gets nothing of the port's traffic until the VM has
announced itself there. A VM on the destination chassis reaches the VM wherever it runs. A VM that never announces is moved by the
blueprint's step 2."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from dfflow.sandbox.probe import Sender, analyse
from dfflow.sandbox.topology import INT_BRIDGE
from controller_fixtures import bundles_after_activation, migrate, pings, wait_until
from test_migration import E_IP, M_IP, P_IP, Q_IP, assert_everyone_places_m_on, assert_recovered, cloud, other, port_id, probes, where  # noqa: F401,E501

pytestmark = pytest.mark.ovs
MEMORY_COPY = 1.2  # s: the VM runs on the source while its destination is ready, as in a real pre-copy
_NONE = SimpleNamespace(state=None)  # no migration record


def rx_packets(sb, vm: str, ifname: str) -> int:
    """Packets the VM's interface received (the VM's end of the veth: what the guest would get)."""
    out = sb.vm_exec(vm, ["ip", "-s", "-j", "link", "show", "dev", ifname]).stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


def lookup_of(sb, chassis: str, mac: str, priority: int = 100, counted: bool = False) -> str | None:
    """The chassis' L2 lookup flow for `mac` (`counted`: with the datapath's counters pushed first)."""
    if counted:
        sb.ovs(chassis).appctl("revalidator/wait")
    out = sb.ovs(chassis).ofctl("dump-flows", INT_BRIDGE, f"table=50,dl_dst={mac}")
    return next((line.strip() for line in out.splitlines() if f"priority={priority}," in line), None)


def back_to_source_of(sb, chassis: str, mac: str, counted: bool = False) -> list[str]:
    """The pending destination's flows sending what comes for `mac` back to the source (the VM has
    not announced itself there: ingress_conntrack, reg9=2), with the datapath's counters if `counted`."""
    if counted:
        sb.ovs(chassis).appctl("revalidator/wait")
    out = sb.ovs(chassis).ofctl("dump-flows", INT_BRIDGE, f"table=47,dl_dst={mac}")
    return [line.strip() for line in out.splitlines() if "reg9=0x2" in line and "output:" in line]


def answered_after(raw: dict, since: float) -> int:
    """Probes sent after `since` that were answered: traffic flows (a stall of the busy machine just
    before the probe stops does not hide it, as it would `analyse`'s `recovered`)."""
    return len({seq for seq, sent, _ in raw["replies"] if sent > since})


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
    during: dict = {"rx": []}
    migrated = threading.Event()

    def watch_the_memory_copy() -> None:
        """Samples the destination interface's counters while the VM still runs on the source."""
        try:
            vif = wait_until(lambda: destination_vif(sb, dest), 10, interval=0.01, what="destination VIF")
            if strategy == "announce":
                wait_until(lambda: back_to_source_of(sb, dest, mac), 10, interval=0.01,
                           what="the destination to be pre-programmed")
            during["ifname"] = vif.ifname
            time.sleep(MEMORY_COPY / 4)
            during["lookup"] = (back_to_source_of(sb, dest, mac, counted=True), time.time())
            while not migrated.is_set():
                during["rx"].append((rx_packets(sb, "M", vif.ifname), time.time()))
                time.sleep(0.05)
        except Exception as exc:  # reported by the test below
            during["error"] = exc

    watcher = threading.Thread(target=watch_the_memory_copy)
    watcher.start()
    try:
        result = migrate(cloud, "M", dest, strategy=strategy, memory_copy=MEMORY_COPY, unplug_delay=0.2,
                         update_port_delay=0.3)
    finally:
        migrated.set()
        watcher.join()
    time.sleep(0.3)
    raw = {s.vm: s.stop() for s in senders}
    figures = {vm: analyse(r, after=started) for vm, r in raw.items()}
    finished = result["origin"] + max(result["steps"].values())
    assert {vm: f["duplicates"] for vm, f in figures.items()} == {"P": 0, "Q": 0, "E": 0}, figures
    assert "error" not in during, during
    assert result["strategy"] == strategy
    assert all(answered_after(r, finished) > 100 for r in raw.values()), figures
    # Until the switchover the destination VIF received nothing at all...
    switchover = result["origin"] + result["steps"]["vm_go"]
    before = [rx for rx, at in during["rx"] if at < switchover]
    assert before and max(before) == 0, (during, switchover)
    if strategy == "announce":
        # ...though the port's traffic went there, all of it: the destination sent it back to the source.
        flows, at = during["lookup"]
        n_packets = sum(int(line.split("n_packets=")[1].split(",")[0]) for line in flows)
        assert at < switchover and n_packets > 100, (during, switchover)
    # After the switchover the VM is served through its destination VIF.
    assert rx_packets(sb, "M", during["ifname"]) > 100
    assert_everyone_places_m_on(cloud, dest)
    if strategy == "announce":
        # Once a chassis applied the activation, nothing that follows -- Nova's binding activation, the
        # record's end, the source unplug, Nova's clean-up -- changes a flow of M's there: the datapaths
        # the VM's traffic crosses are left alone after the switchover.
        assert bundles_after_activation(sb, result["migration"], port_id(cloud)) == {}



@pytest.mark.parametrize("end", ["destination", "source"])
def test_a_vm_next_to_either_end_reaches_the_migrating_vm_throughout(cloud, end):
    """Before the announcement its probes go to the source, where the VM runs (from the source's own
    VM: to the destination and back out of the tunnel they came in by); after it, to the destination's
    VIF: none is lost for the memory copy, none is answered twice."""
    sb, dest = cloud.sb, other(cloud)
    cloud.call("create_vm", "N", dest if end == "destination" else where(cloud), "net1", "10.1.0.40")
    try:
        wait_until(lambda: pings(sb, "N", M_IP), 20, what="N -> M before migrating")
        sender = Sender(sb, "N", M_IP)
        time.sleep(0.3)
        started = time.time()
        result = migrate(cloud, "M", dest, strategy="announce", memory_copy=MEMORY_COPY, unplug_delay=0.2,
                         update_port_delay=0.3)
        time.sleep(0.3)
        raw = sender.stop()
        figures = analyse(raw, after=started)
    finally:
        cloud.call("delete_vm", "N")
    assert figures["duplicates"] == 0, figures
    assert answered_after(raw, result["origin"] + max(result["steps"].values())) > 100, figures
    assert figures["lost_window_ms"] < MEMORY_COPY * 1e3 / 4, figures  # not the whole memory copy


def test_a_vm_that_never_announces_is_moved_by_the_source_unplug(cloud):
    """Its RARP and GARP never reach the destination's switch (dropped ahead of the pipeline, by a
    flow of no app of ours): no activation, in the datapath or by the controller; step 2 moves it.
    A neighbour on the source keeps the network there: the source has flows for M after it left."""
    sb, dest = cloud.sb, other(cloud)
    mac = cloud.nb("get", "lport", port_id(cloud)).mac
    cloud.call("create_vm", "S2", where(cloud), "net1", "10.1.0.41")
    silencer = "cookie=0x7e57,table=0,priority=200"
    sb.ovs(dest).ofctl("add-flow", INT_BRIDGE, f"{silencer},rarp,dl_src={mac},actions=drop")
    sb.ovs(dest).ofctl("add-flow", INT_BRIDGE, f"{silencer},arp,dl_src={mac},arp_spa={M_IP},arp_tpa={M_IP},actions=drop")
    try:
        senders = probes(cloud)
        started = time.time()
        # Nova's legacy calls: with binding-extended ones the activation, before the unplug, would move it
        result = migrate(cloud, "M", dest, strategy="announce", unplug_delay=0.3, update_port_delay=0.5,
                         nova_path="legacy")
        time.sleep(0.3)
        figures = assert_recovered(senders, started)
        silenced = sb.ovs(dest).ofctl("dump-flows", INT_BRIDGE, "cookie=0x7e57/-1")
    finally:
        sb.ovs(dest).ofctl("del-flows", INT_BRIDGE, "cookie=0x7e57/-1")
        cloud.call("delete_vm", "S2")
    assert result["strategy"] == "announce"
    assert "activated" not in result["states"] and "switched" in result["states"], result["states"]
    assert all("n_packets=0," not in line for line in silenced.splitlines() if "priority=200" in line), silenced
    # no path to the VM from its switchover until the source unplug (0.3 s later) moved the flows
    assert all(f["downtime_ms"] > 250 for f in figures), figures
    # the unplug came before any activation: what the destination sent back to the source just before
    # it moved, arriving once the source knew the VM gone there, must not have been delivered twice
    assert [f["duplicates"] for f in figures] == [0, 0, 0], figures
    assert_everyone_places_m_on(cloud, dest)


def test_a_sender_behind_the_source_unplug_has_each_probe_delivered_once(cloud):
    """The unplug comes before any activation (the VM never announces) while the probers' chassis
    lags: its controller is frozen from before the unplug until after it, so it keeps sending M's
    traffic to the destination, as it does while the migration is in flight. Each probe of the lag
    must reach the VM once. (The pure walk of the same flows: tests/test_announce_single_delivery.py.)"""
    sb, source, dest = cloud.sb, where(cloud), other(cloud)
    sender_chassis = "chassis-3"  # P, Q and E
    mac = cloud.nb("get", "lport", port_id(cloud)).mac
    cloud.call("create_vm", "S2", source, "net1", "10.1.0.42")  # the network stays on the source
    silencer = "cookie=0x7e57,table=0,priority=200"
    sb.ovs(dest).ofctl("add-flow", INT_BRIDGE, f"{silencer},rarp,dl_src={mac},actions=drop")
    sb.ovs(dest).ofctl("add-flow", INT_BRIDGE, f"{silencer},arp,dl_src={mac},arp_spa={M_IP},arp_tpa={M_IP},actions=drop")
    lagging = sb.chassis(sender_chassis).controller_now()[0]
    to_source = lookup_of(sb, sender_chassis, mac)
    moved: dict = {}
    try:
        senders = probes(cloud)
        started = time.time()
        migration = threading.Thread(target=lambda: moved.update(result=migrate(
            cloud, "M", dest, strategy="announce", unplug_delay=0.3, update_port_delay=0.5, nova_path="legacy")))
        migration.start()
        try:
            wait_until(lambda: (lookup_of(sb, sender_chassis, mac) or to_source) != to_source, 10, interval=0.01,
                       what="the probers' chassis to send M's traffic to the destination")
            os.kill(lagging, signal.SIGSTOP)
            try:
                wait_until(lambda: (cloud.nb("get", "lport", port_id(cloud)).migration or _NONE).state != "requested",
                           10, interval=0.01, what="the source unplug")
                time.sleep(0.2)  # the lag: ~600 probes sent while the source has switched
            finally:
                os.kill(lagging, signal.SIGCONT)
        finally:
            migration.join(30)
        time.sleep(0.3)
        figures = assert_recovered(senders, started)
    finally:
        sb.ovs(dest).ofctl("del-flows", INT_BRIDGE, "cookie=0x7e57/-1")
        cloud.call("delete_vm", "S2")
    result = moved["result"]
    assert "activated" not in result["states"] and "switched" in result["states"], result["states"]
    assert [f["duplicates"] for f in figures] == [0, 0, 0], figures
    assert_everyone_places_m_on(cloud, dest)


STRESS_RUNS = 40


@pytest.mark.stress
def test_repeated_announce_migrations_answer_no_probe_twice(cloud):
    """While an `announce` migration is in flight a packet for the port exists in one copy: every
    sender sends it to the destination alone, whose datapath sends it back to the source until the
    VM's announcement there, and delivers it from then on. No probe is answered twice, whatever the
    destination's vswitchd holds in its queue across the VM's switchover (with a copy to the source as
    well, about one run in 100 had probes in flight on both paths answered twice)."""
    from vm_sniffer import VmSniffer
    sb = cloud.sb
    sources = {"P": P_IP, "Q": Q_IP, "E": E_IP}
    twice = []
    for run in range(STRESS_RUNS):
        dest = other(cloud)
        with VmSniffer(sb, "M") as sniffer:
            senders = probes(cloud)
            time.sleep(0.2)
            started = time.time()
            result = migrate(cloud, "M", dest, strategy="announce", memory_copy=0.3, unplug_delay=0.2,
                             update_port_delay=0.3)
            time.sleep(0.2)
            raw = {s.vm: s.stop() for s in senders}
        for vm, run_raw in raw.items():
            seqs = [seq for seq, sent, _ in run_raw["replies"] if sent >= started]
            for seq in sorted({s for s in seqs if seqs.count(s) > 1}):
                got = sorted((ifname, at) for at, ifname, src, q in sniffer.received
                             if q == seq and src == sources[vm])
                twice.append((run, vm, seq, got, result["steps"]))
    assert twice == [], f"{len(twice)} probes answered twice in {STRESS_RUNS} runs: {twice[:5]}"
