"""Live migration on a real 3-chassis sandbox: the blueprint's steps, the announce strategy,
and the edge cases, with L2, routed and floating-IP traffic probed every millisecond."""
from __future__ import annotations

import re
import threading
import time

import pytest

from controller.apps.l2 import L2App
from benchmarks import faulty_controller
from dfflow.sandbox.faults import DROP_PUBLISH, IGNORE_ANNOUNCEMENTS
from dfflow.sandbox.probe import Echo, Sender, analyse
from dfflow.sandbox.topology import INT_BRIDGE
from controller_fixtures import (running_cloud, controller_status, dump_flows, gates_open, migrate, pings, fault,
                                 update_binding, wait_arrival_windows_closed, wait_until)

pytestmark = pytest.mark.ovs

M_IP, P_IP, Q_IP, E_IP = "10.1.0.10", "10.1.0.20", "10.2.0.30", "172.24.4.100"


@pytest.fixture(scope="module")
def cloud():
    """M (migrating, floating IP) on net1/chassis-1; its L2 peer P on net1/chassis-3; routed peer Q
    on net2/chassis-3; external host E on public/chassis-3."""
    with running_cloud(3, controller_cmd=faulty_controller.controller_cmd()) as c:
        sb = c.sb
        c.call("create_network", "net1", "10.1.0.0/24")
        c.call("create_network", "net2", "10.2.0.0/24")
        c.call("create_network", "public", "172.24.4.0/24", external=True)
        c.call("create_router", "R", ["net1", "net2"], external="public")
        c.call("create_vm", "M", "chassis-1", "net1", M_IP)
        c.call("create_vm", "P", "chassis-3", "net1", P_IP)
        c.call("create_vm", "Q", "chassis-3", "net2", Q_IP)
        c.call("create_vm", "E", "chassis-3", "public", E_IP)
        c.fip = c.call("create_floating_ip", "M").floating_ip
        c.echo = Echo(sb, "M")
        for src, dst in (("P", M_IP), ("Q", M_IP), ("E", c.fip)):
            wait_until(lambda: pings(sb, src, dst), 20, what=f"{src} -> M before migrating")
        yield c
        c.echo.stop()


def where(cloud) -> str:
    return next(v for v in cloud.sb.vm("M").vifs if v.up).chassis


def other(cloud, avoid: str = "chassis-3") -> str:
    here = where(cloud)
    return next(c.name for c in cloud.sb.chassis_list() if c.name not in (here, avoid))


def port_id(cloud) -> str:
    return cloud.sb.vm("M").vifs[0].port_id


def probes(cloud):
    return [Sender(cloud.sb, "P", M_IP), Sender(cloud.sb, "Q", M_IP), Sender(cloud.sb, "E", cloud.fip)]


def tunnel_ofports(sb, chassis: str) -> dict[str, int]:
    out = sb.ovs(chassis).vsctl("--columns=ofport,external_ids", "find", "Interface", "type=geneve")
    found = {}
    for block in out.strip().split("\n\n"):
        ofport = int(re.search(r"ofport\s*:\s*(\d+)", block).group(1))
        peer = re.search(r'dfflow-peer="?([^",\s}]+)', block).group(1)
        found[peer] = ofport
    return found


def assert_everyone_places_m_on(cloud, dest: str) -> None:
    """Every chassis' L2 lookup for M's MAC and its floating IP's MAC points at `dest` (chassis that
    need no path to M have none), and only `dest` has M's local (classification) flows."""
    sb = cloud.sb
    port = cloud.nb("get", "lport", port_id(cloud))
    fip = next(f for f in cloud.nb("list", "floatingip") if f.port == port.id)
    cookie = L2App().cookie(port.id)
    for ch in sb.chassis_list():
        lines = dump_flows(sb, ch.name)
        lookups = [l for l in lines if "table=50" in l and f"dl_dst={port.mac}" in l]
        assert len(lookups) == (1 if ch.name == dest else len(lookups[:1])), (ch.name, lookups)
        classify = [l for l in lines if f"cookie={hex(cookie)}," in l and "table=" not in l.split("priority")[0]]
        if ch.name == dest:
            ofport = int(sb.ovs(dest).vsctl("get", "Interface", sb.vm("M").vifs[0].tap, "ofport"))
            assert lookups[0].endswith(f"actions=output:{ofport}"), lookups
            assert any(f"in_port={ofport}" in l for l in classify), classify
        elif lookups:
            assert lookups[0].endswith(f"output:{tunnel_ofports(sb, ch.name)[dest]}"), (ch.name, lookups)
        if ch.name != dest:
            assert not classify, (ch.name, classify)
            fip_lookups = [l for l in lines if "table=50" in l and f"dl_dst={fip.mac}" in l]
            assert all(l.endswith(f"output:{tunnel_ofports(sb, ch.name)[dest]}") for l in fip_lookups), fip_lookups


def assert_recovered(senders, started: float) -> list[dict]:
    results = [analyse(s.stop(), after=started) for s in senders]
    for sender, figures in zip(senders, results):
        if not figures["recovered"]:
            sb = senders[0].sandbox
            lookups = {ch.name: [f for f in dump_flows(sb, ch.name) if "table=50" in f] for ch in sb.chassis_list()}
            raise AssertionError(f"{sender.vm} -> {sender.target} did not recover: {figures}; L2 lookups: {lookups}")
    return results


@pytest.mark.parametrize("nova_path", ["extended", "legacy"])
@pytest.mark.parametrize("strategy", ["unplug", "announce"])
def test_migration_keeps_l2_routed_and_floating_ip_traffic_with_each_strategy(cloud, strategy, nova_path):
    """Nova's binding-extended calls activate the destination's binding before the source unplug (step
    3 first: the port moves at the activation); its legacy calls update the binding after it."""
    dest = other(cloud)
    senders = probes(cloud)
    time.sleep(0.3)
    started = time.time()
    result = migrate(cloud, "M", dest, strategy=strategy, unplug_delay=0.2, update_port_delay=0.3,
                     nova_path=nova_path)
    time.sleep(0.5)
    assert_recovered(senders, started)
    assert result["strategy"] == strategy and result["nova_path"] == nova_path
    expected = {"requested", "done"} | ({"activated"} if strategy == "announce" else set())
    expected |= {"switched"} if nova_path == "legacy" else set()
    assert expected <= set(result["states"]), (result["states"], result["steps"], {
        ch.name: (st["migrations"], st["stats"].get("packet_in"), st["errors"][-2:])
        for ch in cloud.sb.chassis_list() for st in [controller_status(cloud.sb, ch.name)]})
    if nova_path == "extended":
        assert "switched" not in result["states"] and result["steps"]["activated"] < result["steps"]["unplug"]
        port = cloud.nb("get", "lport", port_id(cloud))
        assert port.binding_chassis == dest and port.inactive_bindings == [] and port.migrating_to is None
    assert cloud.nb("get", "lport", port_id(cloud)).migration is None
    assert_everyone_places_m_on(cloud, dest)
    assert_the_compiled_core_moved_m(cloud, result)


def assert_the_compiled_core_moved_m(cloud, result) -> None:
    """Every chassis applied its part of the migration with flow mods the compiled core made (a sender's
    part of an `announce` one comes at its start: from then on it sends the port's traffic to the
    destination alone, and the activation changes none of its port flows)."""
    port = result["migration"].split("@")[0]
    for ch in cloud.sb.chassis_list():
        timings = controller_status(cloud.sb, ch.name)["apply_timings"]
        moves = [t for t in timings if any(stamp[0] == result["migration"] for stamp in t["stamps"])
                 or (port in t["cause"] and t["applied_at"] >= result["origin"])]
        assert any(t["compiled_flow_mods"] > 0 for t in moves), (ch.name, moves)


def test_the_vms_announcement_opens_its_egress_in_the_datapath_without_the_controller(cloud):
    """With the controller deaf to announcements, the destination still serves the VM from its
    first RARP on: the gate it learned in the datapath, and traffic sent to both chassis."""
    dest = other(cloud)
    with fault(cloud, IGNORE_ANNOUNCEMENTS):
        senders = probes(cloud)
        started = time.time()
        result = migrate(cloud, "M", dest, strategy="announce", unplug_delay=1.0, update_port_delay=0.2)
        time.sleep(0.3)
        figures = assert_recovered(senders, started)
    assert "activated" not in result["states"]  # the controller never activated the port...
    assert all(f["downtime_ms"] < 500 for f in figures), figures  # ...yet M answered long before the unplug
    assert_everyone_places_m_on(cloud, dest)


def datapath_flows_of(sb, chassis: str, mac: str) -> dict[str, str]:
    """The chassis' datapath flows (its userspace datapath's megaflows) of packets from or to `mac`:
    key -> actions, the statistics left out."""
    flows = {}
    for line in sb.ovs(chassis).appctl("dpctl/dump-flows").splitlines():
        key, _, actions = line.partition(" actions:")
        if mac in key:
            flows[re.sub(r", (packets|bytes|used|flags):[^,]*", "", key)] = actions.strip()
    return flows


def test_the_destinations_activation_changes_no_datapath_flow_the_vms_announcement_made(cloud):
    """The VM's announcement opens the destination's gates in the datapath (the controller, deaf to it
    here, does not activate the port); the destination's change once the VM left the source (the source
    unplug, which gives it the activated port's flows) replaces the learned gates with its own same flows:
    the datapath flows of the probes to M and of M's replies keep their actions (nothing is upcalled
    again: same registers at the connection tracker, same recirculation)."""
    sb, dest = cloud.sb, other(cloud)
    mac = cloud.nb("get", "lport", port_id(cloud)).mac
    sender = Sender(sb, "P", M_IP, interval=0.005)
    done: dict = {}

    def run() -> None:
        try:
            done["result"] = migrate(cloud, "M", dest, strategy="announce", nova_path="legacy", unplug_delay=2.0,
                                     update_port_delay=0.3)
        except BaseException as exc:
            done["error"] = exc
    try:
        with fault(cloud, IGNORE_ANNOUNCEMENTS):
            migration = threading.Thread(target=run, daemon=True)
            migration.start()
            wait_until(lambda: sum("ct(" in a for a in datapath_flows_of(sb, dest, mac).values()) >= 2, 20,
                       what=f"M answering P through {dest}'s datapath, its gates learned open")
            time.sleep(0.3)
            announced = datapath_flows_of(sb, dest, mac)
            migration.join(30)
        assert "error" not in done and "activated" not in done["result"]["states"], done
        time.sleep(0.5)  # the destination's change applied, its revalidation over, the probes going on
        after = datapath_flows_of(sb, dest, mac)
    finally:
        figures = analyse(sender.stop())
    assert figures["recovered"], figures
    kept = announced.keys() & after.keys()
    assert kept and {k: announced[k] for k in kept} == {k: after[k] for k in kept}, (announced, after)
    assert any("ct(" in a for a in announced.values()), announced  # M's security groups: through conntrack


def test_step_two_alone_moves_the_flows_when_update_port_never_comes(cloud):
    source, dest = where(cloud), other(cloud)
    senders = probes(cloud)
    started = time.time()
    result = migrate(cloud, "M", dest, strategy="unplug", update_port_delay=None, nova_path="legacy")
    time.sleep(0.5)
    assert_recovered(senders, started)
    port = cloud.nb("get", "lport", port_id(cloud))
    assert port.binding_chassis == source  # step 3 never happened...
    assert port.migration.state == "switched"  # ...step 2 did, and it moved everyone
    assert set(result["applied"]["switched"]) == {"chassis-1", "chassis-2", "chassis-3"}
    assert_everyone_places_m_on(cloud, dest)
    update_binding(cloud, port.id, dest)  # step 3 at last: the record ends
    wait_until(lambda: cloud.nb("get", "lport", port.id).migration is None, 10, what="record cleared")


def test_the_sources_migration_event_moves_every_chassis_ahead_of_the_nb_write(cloud):
    """Step 2 reaches the other chassis as a migration event published before the NB write: each
    applies the switch from it (its plan's cause is the event, not the NB update); the NB event that
    follows changes no flow."""
    source, dest = where(cloud), other(cloud)
    before = {ch.name: controller_status(cloud.sb, ch.name)["migrations"].get("events_applied", 0)
              for ch in cloud.sb.chassis_list()}
    result = migrate(cloud, "M", dest, strategy="unplug", unplug_delay=0.1, update_port_delay=0.3,
                     nova_path="legacy")
    assert set(result["applied"]["switched"]) == {"chassis-1", "chassis-2", "chassis-3"}
    port = port_id(cloud)
    for ch in cloud.sb.chassis_list():
        status = controller_status(cloud.sb, ch.name)
        switched = [t for t in status["apply_timings"] if [result["migration"], "switched"] in t["stamps"]]
        assert [t["cause"] for t in switched] == [f"source_unplugged:{port}"], (ch.name, switched)
        applied = status["migrations"].get("events_applied", 0) - before[ch.name]
        assert applied == (0 if ch.name == source else 1), (ch.name, status["migrations"])
        assert status["stats"].get("handler_errors", 0) == 0, status["errors"]
    assert_everyone_places_m_on(cloud, dest)


def test_step_three_moves_the_flows_when_the_step_two_publish_is_lost(cloud):
    dest = other(cloud)
    with fault(cloud, DROP_PUBLISH):
        senders = probes(cloud)
        started = time.time()
        result = migrate(cloud, "M", dest, strategy="unplug", unplug_delay=0.1, update_port_delay=1.0,
                         nova_path="legacy")
        time.sleep(0.5)
        figures = assert_recovered(senders, started)
    assert "switched" not in result["states"]  # no step 2...
    assert "bound" in result["applied"]  # ...chassis moved on the binding (step 3)
    # the outage lasted until update_port, a second after the unplug
    assert all(f["downtime_ms"] > 800 for f in figures), figures
    assert_everyone_places_m_on(cloud, dest)


def test_destination_unplugged_before_the_source_aborts_with_no_loss(cloud):
    sb, source, dest = cloud.sb, where(cloud), other(cloud)
    port = cloud.nb("get", "lport", port_id(cloud))
    senders = probes(cloud)
    started = time.time()
    sb.plug_vif("M", dest, port.id, port.mac, "eth9", up=False)
    wait_until(lambda: (cloud.nb("get", "lport", port.id).migration or port).chassis if
               cloud.nb("get", "lport", port.id).migration else None, 10, what="step 1 recorded")
    sb.unplug_vif("M", "eth9")
    wait_until(lambda: cloud.nb("get", "lport", port.id).migration is None, 10, what="record cleared")
    time.sleep(0.3)
    results = assert_recovered(senders, started)
    assert all(r["lost_window_ms"] <= 2 for r in results), results  # no loss: the source kept serving
    assert_everyone_places_m_on(cloud, source)


def test_controller_restarted_mid_migration_recovers_the_step_it_missed(cloud):
    sb, source, dest = cloud.sb, where(cloud), other(cloud)
    port = cloud.nb("get", "lport", port_id(cloud))
    old_if = next(v for v in sb.vm("M").vifs if v.up).ifname
    sb.plug_vif("M", dest, port.id, port.mac, "eth8", up=False, ip=f"{M_IP}/24")
    wait_until(lambda: cloud.nb("get", "lport", port.id).migration is not None, 10, what="step 1")
    sb.stop_controller(source)
    sb.set_vif_up("M", old_if, False)
    sb.set_vif_up("M", "eth8", True)
    sb.unplug_vif("M", old_if)  # the source unplug happens while its controller is away
    sb.start_controller(source)
    wait_until(lambda: (cloud.nb("get", "lport", port.id).migration or port).state == "switched"
               if cloud.nb("get", "lport", port.id).migration else False, 15, what="step 2 after restart")
    wait_until(lambda: pings(sb, "P", M_IP), 15, what="P -> M at its destination")
    assert_everyone_places_m_on(cloud, dest)
    update_binding(cloud, port.id, dest)  # Nova's step 3 ends it (the next tests start from a bound VM)
    wait_until(lambda: cloud.nb("get", "lport", port.id).migration is None, 10, what="record cleared")


def test_a_port_deleted_during_migration_leaves_nothing_behind(cloud):
    sb = cloud.sb
    cloud.call("create_vm", "T", "chassis-1", "net1", "10.1.0.77")
    t_port = cloud.nb("get", "lport", sb.vm("T").vifs[0].port_id)
    sb.plug_vif("T", "chassis-2", t_port.id, t_port.mac, "eth1", up=False)
    wait_until(lambda: cloud.nb("get", "lport", t_port.id).migration is not None, 10, what="step 1")
    cloud.call("delete_vm", "T")
    cookie = L2App().cookie(t_port.id)

    def gone() -> bool:
        return not any(cookie in [int(m, 16) for m in re.findall(r"cookie=0x([0-9a-f]+)", "\n".join(
            dump_flows(sb, ch.name)))] for ch in sb.chassis_list())

    wait_until(gone, 10, what="every flow of the deleted port removed")
    for ch in sb.chassis_list():
        assert t_port.mac not in sb.ovs(ch.name).vsctl("--columns=external_ids", "list", "Interface")


def test_migrating_back_and_forth_twenty_times_leaves_no_stale_state(cloud):
    sb = cloud.sb
    wait_arrival_windows_closed(sb)  # earlier tests' migrations: their admissions end by themselves
    baseline = {ch.name: len(dump_flows(sb, ch.name)) for ch in sb.chassis_list()}
    ports_before = {ch.name: sb.ovs(ch.name).vsctl("list-ports", INT_BRIDGE).split() for ch in sb.chassis_list()}
    for i in range(20):
        migrate(cloud, "M", other(cloud), strategy="announce" if i % 2 else "unplug",
                nova_path="legacy" if i % 4 >= 2 else "extended", unplug_delay=0.05, update_port_delay=0.05)
    wait_until(lambda: pings(sb, "P", M_IP) and pings(sb, "E", cloud.fip), 15, what="M reachable after 20")
    assert cloud.nb("get", "lport", port_id(cloud)).migration is None
    assert_everyone_places_m_on(cloud, where(cloud))
    # every local port's activation gate open (the activation wrote the controller's over the learned one)
    wait_until(lambda: all(gates_open(sb, ch.name) for ch in sb.chassis_list()), 20,
               what="every activation gate open: no pending destination left")
    wait_arrival_windows_closed(sb)  # and so do the destinations' admissions of M's connections
    after = {ch.name: len(dump_flows(sb, ch.name)) for ch in sb.chassis_list()}
    assert after == baseline or sum(after.values()) == sum(baseline.values()), (baseline, after)
    ports_after = {ch.name: sb.ovs(ch.name).vsctl("list-ports", INT_BRIDGE).split() for ch in sb.chassis_list()}
    assert sum(map(len, ports_after.values())) == sum(map(len, ports_before.values()))
    for ch in sb.chassis_list():
        assert controller_status(sb, ch.name)["stats"].get("handler_errors", 0) == 0
