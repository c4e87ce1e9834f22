"""What every fault test asserts once the fault is over: nothing stale on any chassis, nothing left
over, no acknowledged NB write lost. Import what you use::

    from fault_audit import AckedWrites, PatientCloud, assert_clean
"""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable

from dfflow.sandbox.topology import INT_BRIDGE, Sandbox
from controller_fixtures import SyncCloud, controller_status, dump_flows, wait_until
from dfflow.models import LogicalSwitch
from dfflow.nb.store import NbApi
from neutron_fixtures import stale_flows

WRITES_TOPIC = "fault-writes"  # followed by no controller: the writes cost the data plane nothing


class PatientCloud(SyncCloud):
    """The sandbox's cloud whose direct NB reads ride out an outage. Nova never reads the NB: it waits
    for Neutron's events, which come late during an outage but come; the sandbox's Nova emulation reads
    the NB for them, and with this it waits as Nova would instead of failing at once."""

    OUTAGE_WAIT = 30.0

    def with_nb(self, body: Callable[[NbApi], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            nb = NbApi(self.url, outage_wait=self.OUTAGE_WAIT)
            try:
                return await body(nb)
            finally:
                await nb.close()
        return asyncio.run(run())


class AckedWrites:
    """A writer creating one NB object every `interval` s in a thread while a fault goes on, and the
    ids of those whose write returned (acknowledged). A write that fails is not acknowledged: it may
    be retried by its caller, and it is not counted as lost."""

    def __init__(self, url: str, interval: float = 0.1, first_vni: int = 50_000):
        self.url, self.interval, self.next_vni = url, interval, first_vni
        self.acked: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._write()), name="acked-writes")

    def __enter__(self) -> "AckedWrites":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _write(self) -> None:
        nb = NbApi(self.url)
        try:
            while not self._stop.is_set():
                name = f"w{self.next_vni}"
                try:
                    await nb.create(LogicalSwitch(id=name, topic=WRITES_TOPIC, name=name,
                                                  segmentation_id=self.next_vni))
                    self.acked.append(name)
                except Exception:  # the NB away: not acknowledged, tried again under a new name
                    self.failed += 1
                self.next_vni += 1
                await asyncio.sleep(self.interval)
        finally:
            await nb.close()

    def lost(self, cloud: SyncCloud) -> list[str]:
        """The acknowledged writes the NB does not hold (after the fault)."""
        held = {s.id for s in cloud.nb("list", LogicalSwitch.table, topic=WRITES_TOPIC)}
        return [name for name in self.acked if name not in held]


def ovs_vif_ports(sb: Sandbox, chassis: str) -> set[str]:
    """The iface-ids of the VIFs plugged into the chassis' br-int."""
    ovs = sb.ovs(chassis)
    found = set()
    for port in ovs.vsctl("list-ports", INT_BRIDGE).split():
        iface_id = ovs.vsctl("--if-exists", "get", "Interface", port, "external_ids:iface-id", check=False)
        if iface_id.strip():
            found.add(iface_id.strip().strip('"'))
    return found


def leftover_ports(sb: Sandbox) -> dict[str, set[str]]:
    """Per chassis, the VIFs in OVS that no VM of the sandbox has there (a source VIF not unplugged)."""
    expected: dict[str, set[str]] = {ch.name: set() for ch in sb.chassis_list()}
    for vm in sb.vms():
        for vif in vm.vifs:
            expected[vif.chassis].add(vif.port_id)
    return {name: extra for name in expected if (extra := ovs_vif_ports(sb, name) - expected[name])}


def migration_records(cloud: SyncCloud) -> dict[str, Any]:
    return {p.id: p.migration for p in cloud.nb("list", "lport") if p.migration is not None}


def flow_drift(sb: Sandbox, chassis: str) -> tuple[int, int] | None:
    """(installed, wanted) when the flows OVS holds (an activation gate the datapath learns replaces
    the controller's flow of its key: it adds none) are not as many as the controller wants: a stale
    or a missing flow."""
    installed = len(dump_flows(sb, chassis))
    wanted = controller_status(sb, chassis)["flows"]
    return None if installed == wanted else (installed, wanted)


def problems(cloud: SyncCloud) -> dict[str, Any]:
    """What is wrong now (empty when clean): migration records, VIFs left in OVS where no VM runs,
    chassis whose flows are not exactly the controller's, flows whose cookie names an object the NB
    does not hold, controllers with a crashed task."""
    sb = cloud.sb
    found: dict[str, Any] = {}
    if records := migration_records(cloud):
        found["migration_records"] = records
    if ports := leftover_ports(sb):
        found["leftover_ports"] = ports
    if drift := {ch.name: d for ch in sb.chassis_list() if (d := flow_drift(sb, ch.name))}:
        found["flow_drift"] = drift
    if stale := stale_flows(sb, cloud.url):
        found["stale_flows"] = stale
    if crashed := [ch.name for ch in sb.chassis_list()
                   if controller_status(sb, ch.name)["stats"].get("task_crashes", 0)]:
        found["task_crashes"] = crashed
    return found


def audit(cloud: SyncCloud, timeout: float = 20.0) -> dict[str, Any]:
    """`problems()` once converged: what is still wrong after up to `timeout` s (empty: clean)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = problems(cloud)
        except (OSError, ValueError) as exc:  # a controller restarting: its status socket not up yet
            found = {"unreachable": repr(exc)}
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def assert_clean(cloud: SyncCloud, timeout: float = 20.0) -> None:
    """No stale or missing flow on any chassis (cookies and counts), no migration record, no VIF left
    in OVS where no VM runs, no controller task crashed."""
    found = audit(cloud, timeout)
    assert not found, found


def wait_nb_back(cloud: SyncCloud, timeout: float = 20.0) -> None:
    """Every controller connected to the NB again."""
    for ch in cloud.sb.chassis_list():
        wait_until(lambda: controller_status(cloud.sb, ch.name)["nb_connected"], timeout,
                   what=f"{ch.name} back on the NB")
