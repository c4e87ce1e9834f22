"""A controller killed (`kill -9`) at each step of a live migration -- on its source, its destination
or a third chassis, with each strategy, also while Nova rolls the migration back -- is started again
by its supervisor and converges: the migration ends (aborted when Nova rolled it back), traffic
reaches the VM where it ended, every chassis holds exactly the flows its controller wants (no stale
flow), no migration record, VIF or status is left behind, and no write of Nova's or of the
controllers' is lost. Probes every 5 ms from a third chassis measure the outage.

The default run takes a representative case per kind of step; `pytest -m stress` runs the matrix."""
from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Any

import pytest

from dfflow.sandbox import nova
from dfflow.sandbox.probe import Echo, Sender, analyse
from controller_fixtures import TEST_FAILED, controller_status, dump_flows, migrate, pings, running_cloud, wait_until
from controller.apps.l2 import L2App
from dfflow.sandbox.topology import INT_BRIDGE
from fault_kill import POINTS, ROLLBACKS, VICTIMS, Kill, converged, flow_audit, migrate_with_kill, wait_converged

pytestmark = pytest.mark.ovs
M_IP = "10.3.0.10"
PEERS = {"P1": ("chassis-1", "10.3.0.11"), "P2": ("chassis-2", "10.3.0.12"), "P3": ("chassis-3", "10.3.0.13")}
HOSTS, THIRD = ("chassis-1", "chassis-2"), "chassis-3"  # M migrates between these; P3's chassis is the third
NOVA_WAIT = 60.0  # s Nova waits for an event (its vif_plugging_timeout is 300): a controller restarts meanwhile

DEFAULT_CASES = [  # one per kind of step, each victim and strategy at least once
    ("announce", "recorded", "destination"),  # the VM announces itself while its destination's controller is away
    ("unplug", "switched", "source"),
    ("announce", "after_activation", "third"),
    ("unplug", "before_update_port", "destination"),
    ("announce", "rollback_before_unbind", "source"),  # Nova rolls the migration back: it ends aborted
]
MATRIX = [(strategy, point, victim) for strategy in ("announce", "unplug") for point in POINTS
          for victim in VICTIMS if point != "activated" or strategy == "announce"]


def start_cloud(stack: contextlib.ExitStack):
    """M (migrating) on chassis-1; a peer on each chassis; M answers probes."""
    c = stack.enter_context(running_cloud(3))
    c.call("create_network", "net1", "10.3.0.0/24")
    c.call("create_vm", "M", "chassis-1", "net1", M_IP)
    for name, (host, ip) in PEERS.items():
        c.call("create_vm", name, host, "net1", ip)
    for name in PEERS:
        wait_until(lambda: pings(c.sb, name, M_IP), 20, what=f"{name} -> M before migrating")
    c.echo = Echo(c.sb, "M")
    stack.callback(c.echo.stop)
    return c


class ModuleCloud:
    """The module's cloud, started again for the next test when a test failed in it: a migration a
    failure left half done must not fail every later case too."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.current = None
        self.recoveries: list[str] = []

    def get(self):
        if self.current is None:
            self.current = start_cloud(self.stack)
            self.current.recoveries = self.recoveries
        return self.current

    def discard(self) -> None:
        self.stack.close()
        self.current = None


@pytest.fixture(scope="module")
def clouds():
    module_cloud = ModuleCloud()
    yield module_cloud
    module_cloud.discard()
    for line in module_cloud.recoveries:
        print(line)


@pytest.fixture
def cloud(clouds, request):
    yield clouds.get()
    if request.node.stash.get(TEST_FAILED, False):
        clouds.discard()


def where(cloud) -> str:
    return next(v for v in cloud.sb.vm("M").vifs if v.up).chassis


def run_case(cloud, strategy: str, point: str, victim: str, monkeypatch) -> None:
    sb = cloud.sb
    monkeypatch.setattr(nova, "READY_TIMEOUT", NOVA_WAIT)
    source = where(cloud)
    dest = next(h for h in HOSTS if h != source)
    final = source if point in ROLLBACKS else dest
    port_id = sb.vm("M").vifs[0].port_id
    killed = {"source": source, "destination": dest, "third": THIRD}[victim]
    kill = Kill(sb, killed)
    others = {ch.name: controller_status(sb, ch.name)["pid"] for ch in sb.chassis_list() if ch.name != killed}
    sender = Sender(sb, "P3", M_IP, interval=0.005)
    started = time.time()
    try:
        migrate_with_kill(cloud, "M", dest, point, kill, strategy=strategy, memory_copy=0.3)
    finally:
        probes = sender.stop()
    assert kill.at is not None, f"the kill at {point} did not happen"
    back = kill.wait_back()
    done = wait_converged(cloud, port_id, final)
    for name in PEERS:
        wait_until(lambda: pings(sb, name, M_IP), 15, what=f"{name} -> M at {final}")
    assert converged(cloud, port_id, final) == []
    for ch in sb.chassis_list():
        status = controller_status(sb, ch.name)
        assert status["stats"].get("handler_errors", 0) == 0, (ch.name, status["errors"])
        assert status["port_status"]["stats"].get("write_errors", 0) == 0, (ch.name, status["port_status"])
        if ch.name != killed:
            assert status["pid"] == others[ch.name], f"{ch.name}'s controller restarted too"
    assert sb.chassis(killed).supervised()["restarts"] == kill.restarts_before + 1
    figures = analyse(probes, after=started)
    assert figures["recovered"], figures
    cloud.recoveries.append(
        f"RECOVERY {strategy:8} {point:18} {victim:11}: respawned+healthy {back - kill.at:5.2f} s, "
        f"converged {done - kill.at:5.2f} s after the kill; P3->M longest reply gap "
        f"{figures['downtime_ms']:7.1f} ms, lost window {figures['lost_window_ms']:7.1f} ms")


def test_the_audit_finds_a_stray_flow_and_a_missing_one(cloud):
    sb, port_id = cloud.sb, cloud.sb.vm("M").vifs[0].port_id
    host = where(cloud)
    assert converged(cloud, port_id, host) == []
    stray = L2App().cookie("no-such-port")
    sb.ovs(host).ofctl("add-flow", INT_BRIDGE, f"cookie={stray:#x},table=50,priority=7,dl_dst=fa:16:3e:99:99:99,"
                                               "actions=drop")
    try:
        problems = flow_audit(cloud)
        assert len(problems) == 2 and all(host in p for p in problems), problems  # not wanted; no such object
    finally:
        sb.ovs(host).ofctl("del-flows", "--strict", INT_BRIDGE, "table=50,priority=7,dl_dst=fa:16:3e:99:99:99")
    wanted = next(line for line in dump_flows(sb, THIRD) if "table=50" in line and "priority=100" in line)
    sb.ovs(THIRD).ofctl("del-flows", "--strict", INT_BRIDGE, wanted.split(" actions=")[0].split(", ", 1)[1]
                        .replace(" ", ""))
    assert any(THIRD in p and "fewer" in p for p in flow_audit(cloud))
    sb.ovs(THIRD).ofctl("add-flow", INT_BRIDGE, wanted)  # put back as it was
    assert flow_audit(cloud) == []


@pytest.mark.parametrize("strategy,point,victim", DEFAULT_CASES)
def test_a_controller_killed_mid_migration_converges(cloud, strategy, point, victim, monkeypatch):
    run_case(cloud, strategy, point, victim, monkeypatch)


@pytest.mark.stress
@pytest.mark.parametrize("strategy,point,victim", [c for c in MATRIX if c not in DEFAULT_CASES])
def test_a_controller_killed_at_any_step_of_a_migration_converges(cloud, strategy, point, victim, monkeypatch):
    run_case(cloud, strategy, point, victim, monkeypatch)


def destination_held_dead(cloud, monkeypatch) -> tuple[str, str, Kill]:
    """(M's port, its next destination, a Kill of that destination's controller that keeps it dead)."""
    monkeypatch.setattr(nova, "READY_TIMEOUT", NOVA_WAIT)
    dest = next(h for h in HOSTS if h != where(cloud))
    return cloud.sb.vm("M").vifs[0].port_id, dest, Kill(cloud.sb, dest, hold=True)


def kill_once_preprogrammed(cloud, port_id: str, dest: str, kill: Kill) -> None:
    """Kill the destination's controller once it has pre-programmed M and reported its VIF up, before
    the switchover (the tests give Nova a long memory copy)."""
    sb = cloud.sb
    wait_until(lambda: any("learn(" in f for f in dump_flows(sb, dest)), 20,
               what=f"{dest} pre-programmed M (its announcement flows learn the gates open)")
    wait_until(lambda: (s := cloud.nb("get", "lport_status", port_id)) and dest in s.up, 20,
               what=f"{dest} reported M's VIF")
    time.sleep(0.3)  # the destination's timeline stamp, which Nova waits for, follows its flows
    kill()


def gate_flows(sb, chassis: str) -> list[str]:
    """The chassis' flows in activation_gate (table 5) and delivery_gate (table 46): not the learn
    actions that write there."""
    return [f for f in dump_flows(sb, chassis) if re.match(r"(cookie=\S+ )?table=(5|46),", f)]


def assert_gate_open_for_good(sb, chassis: str) -> None:
    """The VM's announcement opened its gates in the datapath, egress and delivery, with no timeout to
    close them again."""
    wait_until(lambda: all(any(load in f for f in gate_flows(sb, chassis))
                           for load in ("load:0x1->NXM_NX_REG5", "load:0x1->NXM_NX_REG9")), 10,
               what="the VM's announcement opening its gates in the datapath")
    gates = gate_flows(sb, chassis)
    assert all("timeout" not in g for g in gates), gates


@pytest.mark.stress
def test_the_learned_activation_never_lapses_while_the_destination_controller_is_away(cloud, monkeypatch):
    """`announce`: the destination's controller dies once it has pre-programmed the port and stays
    dead for longer than the learned gate's old hard timeout (60 s); the VM's announcement opened the
    port in the datapath alone, and it stays open throughout, with no timeout on the learned gate."""
    away = 65.0
    sb = cloud.sb
    port_id, dest, kill = destination_held_dead(cloud, monkeypatch)
    killer = threading.Thread(target=kill_once_preprogrammed, args=(cloud, port_id, dest, kill), daemon=True)
    killer.start()
    sender = Sender(sb, "P3", M_IP, interval=0.005)
    try:
        # Nova's legacy path with its step 3 late: the source unplug (step 2) moves M everywhere else
        migrate(cloud, "M", dest, strategy="announce", nova_path="legacy", memory_copy=2.0,
                update_port_delay=None)
        killer.join(5)
        assert kill.at is not None, "the destination's controller was not killed before the switchover"
        assert cloud.nb("get", "lport", port_id).migration.state in ("requested", "switched")
        assert_gate_open_for_good(sb, dest)
        time.sleep(max(0.0, kill.at + away - time.time()))
        for name in PEERS:
            assert pings(sb, name, M_IP, count=2), f"{name} -> M on {dest}, its controller away {away:.0f} s"
    finally:
        kill.release()
        figures = analyse(sender.stop(), after=kill.at)
    cloud.recoveries.append(f"GATE     destination away {away:.0f} s: P3->M longest reply gap "
                            f"{figures['downtime_ms']:7.1f} ms, lost window {figures['lost_window_ms']:.1f} ms")
    assert figures["lost_window_ms"] < 1000, figures  # the old gate's hard timeout: a 5 s+ outage
    kill.wait_back()
    # Nova's step 3, late: update_port(binding:host_id) without migrating_to
    cloud.call("neutron", "update_port", port_id, {"port": {"binding:host_id": dest, "binding:profile": {}}})
    wait_converged(cloud, port_id, dest)
    # the controller's open gates, written over the learned ones with their keys: as every local port's
    assert gate_flows(sb, dest) and all("0x1->" in g or "load:0x1" in g for g in gate_flows(sb, dest))


def test_a_restarted_destination_activates_a_vm_that_announced_itself_while_it_was_away(cloud, monkeypatch):
    """`announce`: the destination's controller is dead when the VM announces itself there (the
    datapath opens the port; the packet-in is lost). Started again before Nova's next step, it finds
    the gate open in OVS and activates the port -- rather than closing it again until Nova's unplug."""
    sb = cloud.sb
    port_id, dest, kill = destination_held_dead(cloud, monkeypatch)
    unplug_delay = 20.0  # Nova's post-live-migration on the source comes late
    done: dict = {}

    def run() -> None:
        try:
            done["timeline"] = migrate(cloud, "M", dest, strategy="announce", nova_path="legacy",
                                       memory_copy=2.0, unplug_delay=unplug_delay, update_port_delay=0.3)
        except BaseException as exc:
            done["error"] = exc

    migration = threading.Thread(target=run, daemon=True)
    migration.start()
    try:
        kill_once_preprogrammed(cloud, port_id, dest, kill)
        assert_gate_open_for_good(sb, dest)
        announced = time.time()
        assert cloud.nb("get", "lport", port_id).migration.state == "requested"  # nobody heard it
    finally:
        kill.release()
    kill.wait_back()
    wait_until(lambda: cloud.nb("get", "lport", port_id).migration.state == "activated", 10,
               what="the restarted destination activating M")
    activated = time.time()
    assert pings(sb, "P3", M_IP, count=2) and pings(sb, "P1", M_IP, count=2)
    assert time.time() < announced + unplug_delay, "Nova's unplug came first: the test proved nothing"
    assert controller_status(sb, dest)["stats"]["announcements_found_open"] == 1
    migration.join(60)
    assert "error" not in done, done.get("error")
    wait_converged(cloud, port_id, dest)
    cloud.recoveries.append(f"ANNOUNCED WHILE AWAY: the restarted destination activated M {activated - announced:.2f} s "
                            f"after its announcement (its controller was released at once)")


def test_a_restarted_destination_stamps_the_pre_programming_it_finds_in_place(cloud, monkeypatch):
    """`announce`: a destination's controller killed between its pre-programming bundle's commit and
    its timeline stamp (here: the stamp deleted, then the kill) leaves the flows in OVS and no stamp.
    Its successor sends nothing for them, yet stamps the step -- which Nova's side waits for before
    the memory copy -- once its reconcile found them in place."""
    sb = cloud.sb
    monkeypatch.setattr(nova, "READY_TIMEOUT", NOVA_WAIT)
    dest = next(h for h in HOSTS if h != where(cloud))
    port_id = sb.vm("M").vifs[0].port_id
    kill = Kill(sb, dest)
    done: dict = {}

    def run() -> None:
        try:
            done["timeline"] = migrate(cloud, "M", dest, strategy="announce", memory_copy=8.0)
        except BaseException as exc:
            done["error"] = exc

    def stamp(field: str) -> Any:
        async def get(nb: Any) -> Any:
            port = await nb.get("lport", port_id)
            if port.migration is None:
                return None
            return port.migration.id, await nb.redis.hget(nb.keys.migration(port.migration.id), field)
        return cloud.with_nb(get)

    def drop_stamp(field: str) -> None:
        async def hdel(nb: Any) -> int:
            return await nb.redis.hdel(nb.keys.migration((await nb.get("lport", port_id)).migration.id), field)
        assert cloud.with_nb(hdel) == 1

    field = f"applied:{dest}:requested"
    migration = threading.Thread(target=run, daemon=True)
    migration.start()
    try:
        wait_until(lambda: (s := stamp(field)) and s[1], 30, what=f"{dest} stamping M's pre-programming")
        migration_id = stamp(field)[0]
        drop_stamp(field)
        kill()
        kill.wait_back()
        wait_until(lambda: (s := stamp(field)) and s[1], 10, what=f"{dest}'s successor stamping the step")
        again = stamp(field)
        assert again[0] == migration_id and float(again[1]) > kill.at, again
    finally:
        migration.join(90)
    assert "error" not in done, done.get("error")
    wait_converged(cloud, port_id, dest)
