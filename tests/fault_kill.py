"""Helpers of the controller fault-injection tests: kill a chassis' controller (`kill -9`) at a chosen
step of a live migration driven by the sandbox's Nova, and audit what every chassis is left with.

Fault injection lives here, around the callers (Nova's Neutron client, a watcher of the NB db), never
in the controller: the controller only meets what a real crash does to it."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from dfflow.sandbox import nova, procs
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.topology import INT_BRIDGE, Sandbox
from controller.templates import APP_COOKIE_SHIFT, object_hash
from controller_fixtures import SyncCloud, controller_status, dump_flows, flow_cookies
from dfflow.models import MODELS, LogicalPort, PortStatus

# A step of the migration -> (Nova's path that has it, where it is seen: "nb" (the migration record's
# state, as the controllers wrote it) or "before"/"after" a call of Nova's to Neutron)
POINTS: dict[str, tuple[str, str, str]] = {
    "recorded": ("extended", "nb", "requested"),          # the destination's plug recorded (step 1)
    "activated": ("extended", "nb", "activated"),         # announce: the VM's announcement activated it
    "before_activation": ("extended", "before", "activate_port_binding"),
    "after_activation": ("extended", "after", "activate_port_binding"),
    "switched": ("legacy", "nb", "switched"),             # the source's unplug (step 2)
    "before_update_port": ("legacy", "before", "update_port"),
    "after_update_port": ("legacy", "after", "update_port"),
    # Nova's rollback at the destination (its binding deleted, then its VIF unplugged): aborted
    "rollback_before_unbind": ("extended", "before", "delete_port_binding"),
    "rollback_after_unbind": ("extended", "after", "delete_port_binding"),
}
ROLLBACKS = {"rollback_before_unbind", "rollback_after_unbind"}
VICTIMS = ("source", "destination", "third")


@dataclass
class Kill:
    """SIGKILL of one chassis' controller, once; its supervisor starts it again a second later
    (`hold=True`: the supervisor is stopped first, so that it stays dead until `release()`)."""

    sb: Sandbox
    chassis: str
    hold: bool = False
    at: float | None = None
    pid: int | None = None
    restarts_before: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.restarts_before = self.sb.chassis(self.chassis).supervised().get("restarts", 0)

    def __call__(self) -> None:
        with self._lock:
            if self.at is not None:
                return
            ch = self.sb.chassis(self.chassis)
            self.pid, _ = ch.controller_now()
            if self.hold:
                os.kill(ch.supervisor_pid, signal.SIGSTOP)
            os.kill(self.pid, signal.SIGKILL)
            self.at = time.time()

    def release(self) -> None:
        if self.hold:
            os.kill(self.sb.chassis(self.chassis).supervisor_pid, signal.SIGCONT)

    def wait_back(self, timeout: float = 30.0) -> float:
        """When the controller started again is healthy: running, answering, connected to br-int,
        a tunnel to every other chassis (health.problem's, less its limit on restarts: we kill often)."""
        deadline = time.monotonic() + timeout
        peers = len(self.sb.chassis_list()) - 1
        while time.monotonic() < deadline:
            pid, start = self.sb.chassis(self.chassis).controller_now()
            if pid not in (None, self.pid) and procs.same_process(pid, start):
                try:
                    status = controller_status(self.sb, self.chassis)
                except (OSError, ValueError):
                    status = {}
                if status.get("switch_connected") and len(status.get("tunnels") or {}) == peers:
                    return time.time()
            time.sleep(0.05)
        raise AssertionError(f"{self.chassis}: controller not back within {timeout}s")


class KillingCloud(Cloud):
    """The sandbox's cloud whose Neutron client (Nova's) runs `kill` before or after one call."""

    def __init__(self, sb: Sandbox, nb: Any, call: str, when: str, kill: Callable[[], None]):
        super().__init__(sb, nb)
        self.kill_call, self.kill_when, self.kill = call, when, kill

    def _matches(self, call: str, args: tuple) -> bool:
        if call != self.kill_call:
            return False
        # Nova's update_port of the binding (legacy step 3), not its binding:profile updates
        return call != "update_port" or "binding:host_id" in args[1].get("port", {})

    async def neutron(self, call: str, *args: Any) -> Any:
        hit = self._matches(call, args)
        if hit and self.kill_when == "before":
            self.kill()
        result = await super().neutron(call, *args)
        if hit and self.kill_when == "after":
            self.kill()
        return result


def watch_migration_state(url: str, port_id: str, state: str, dest: str, kill: Callable[[], None],
                          stop: threading.Event) -> threading.Thread:
    """A thread that runs `kill` as soon as the port's migration record (to `dest`) is in `state`."""
    client = redis.Redis.from_url(url)
    key = f"dfflow:obj:{LogicalPort.table}:{port_id}"

    def run() -> None:
        try:
            while not stop.is_set():
                raw = client.get(key)
                mig = json.loads(raw).get("migration") if raw else None
                if mig and mig.get("chassis") == dest and mig.get("state") == state:
                    kill()
                    return
                time.sleep(0.001)
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def migrate_with_kill(cloud: SyncCloud, vm: str, dest: str, point: str, kill: Kill, **kwargs: Any) -> dict:
    """Nova's live migration of `vm` to `dest`, with `kill` at `point` (see POINTS)."""
    path, how, what = POINTS[point]
    kwargs.update(nova_path=path, rollback=point in ROLLBACKS)
    port_id = cloud.sb.vm(vm).vifs[0].port_id
    stop = threading.Event()
    watcher = None
    if how == "nb":
        watcher = watch_migration_state(cloud.url, port_id, what, dest, kill, stop)
    try:
        def body(nb: Any) -> Any:
            sb_cloud = Cloud(cloud.sb, nb) if how == "nb" else KillingCloud(cloud.sb, nb, what, how, kill)
            return nova.migrate(sb_cloud, vm, dest, **kwargs)
        return cloud.with_nb(body)
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(5)


# -- what every chassis is left with -------------------------------------------------------------
def flow_audit(cloud: SyncCloud) -> list[str]:
    """Per chassis, what Open vSwitch holds against what its controller wants, cookie by cookie, and
    any flow whose cookie names an object the NB no longer has; empty when all agree."""
    alive = {object_hash("pipeline")} | {object_hash(obj.id) for table in MODELS
                                         for obj in cloud.nb("list", table)}
    mask = (1 << APP_COOKIE_SHIFT) - 1
    problems = []
    for ch in cloud.sb.chassis_list():
        lines = dump_flows(cloud.sb, ch.name)
        held = Counter(f"{c:#x}" for c in flow_cookies(lines))
        wanted = Counter(controller_status(cloud.sb, ch.name)["flows_by_cookie"])
        if held != wanted:
            problems.append(f"{ch.name}: OVS holds {dict(held - wanted)} more and {dict(wanted - held)} fewer "
                            f"flows than its controller wants")
        stale = [line for line, cookie in zip(lines, flow_cookies(lines)) if cookie & mask not in alive]
        if stale:
            problems.append(f"{ch.name}: flows of objects the NB no longer has: {stale}")
    return problems


def ovs_port_audit(cloud: SyncCloud) -> list[str]:
    """Per chassis, the VIFs (iface-ids) plugged in br-int against the VIFs the sandbox has there."""
    problems = []
    for ch in cloud.sb.chassis_list():
        out = cloud.sb.ovs(ch.name).vsctl("--columns=external_ids", "list", "Interface")
        plugged = sorted(re.findall(r'iface-id="?([^",}\s]+)', out))
        expected = sorted(v.port_id for vm in cloud.sb.vms() for v in vm.vifs if v.chassis == ch.name)
        if plugged != expected:
            problems.append(f"{ch.name}: br-int has VIFs {plugged}, the sandbox {expected}")
        ports = cloud.sb.ovs(ch.name).vsctl("list-ports", INT_BRIDGE).split()
        if len(ports) != len(expected) + len(cloud.sb.chassis_list()) - 1:
            problems.append(f"{ch.name}: br-int ports {ports}")
    return problems


def nb_audit(cloud: SyncCloud, port_id: str, host: str) -> list[str]:
    """No migration record left anywhere; the port bound to `host` alone, as Nova's writes left it;
    its VIF reported up on `host` only."""
    problems = [f"lport {p.id}: migration record left: {p.migration}" for p in cloud.nb("list", LogicalPort.table)
                if p.migration is not None]
    port = cloud.nb("get", LogicalPort.table, port_id)
    if (port.binding_chassis, port.inactive_bindings, port.migrating_to) != (host, [], None):
        problems.append(f"lport {port_id}: bound {port.binding_chassis}, inactive {port.inactive_bindings}, "
                        f"migrating_to {port.migrating_to}; Nova's writes say {host} alone")
    status = cloud.nb("get", PortStatus.table, port_id)
    if status is None or set(status.up) != {host}:
        problems.append(f"lport_status {port_id}: {status.up if status else None}, not up on {host} alone")
    return problems


def converged(cloud: SyncCloud, port_id: str, host: str) -> list[str]:
    return nb_audit(cloud, port_id, host) + ovs_port_audit(cloud) + flow_audit(cloud)


def wait_converged(cloud: SyncCloud, port_id: str, host: str, timeout: float = 30.0) -> float:
    """Wait until `converged` finds nothing; returns when, or fails with what is left."""
    deadline = time.monotonic() + timeout
    while True:
        problems = converged(cloud, port_id, host)
        if not problems:
            return time.time()
        if time.monotonic() > deadline:
            raise AssertionError("not converged within %ss:\n  %s" % (timeout, "\n  ".join(problems)))
        time.sleep(0.2)
