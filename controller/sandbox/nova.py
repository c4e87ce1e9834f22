"""Nova's part of a live migration, emulated faithfully on the sandbox.

In Nova's order: os-vif plugs the VM's VIF on the destination (a new veth whose
VM end sits in the VM's namespace, with carrier like QEMU's tap but unused by
the guest until it resumes) and Nova waits for the port to be ready there; the VM switches over (source interface down, destination up with
the same MAC and addresses, RARP + GARP, as QEMU announces); after the unplug
delay Nova unplugs the source VIF; after the update-port delay it calls
Neutron's update_port(binding:host_id=destination). Every step is timestamped,
and the chassis' apply times come from the migration's timeline.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from controller.ovsdb_jsonrpc import JsonRpc
from controller.sandbox.cloud import Cloud
from controller.sandbox.netns import SandboxError
from controller.sandbox.topology import INT_BRIDGE
from dfflow.models import LogicalPort
from dfflow.nb.timeline import Timelines

READY_TIMEOUT = 10.0
# libvirt's pre-copy: the VM's memory goes to the destination while the VM still runs on the source. For
# the smallest VMs on a fast network this takes about a second; half of that keeps the runs short.
MEMORY_COPY = 0.5  # s
HOUSEKEEPING_AFTER_UNPLUG = 0.05  # s


class OvsdbUnplug:
    """Nova's unplug of the source VIF: what os-vif's `del_port(bridge, name, if_exists)` sends, one
    OVSDB transaction (take the port off the bridge, delete it), on a connection opened beforehand
    with the rows it names already looked up. The transaction reaches ovsdb-server when the unplug
    delay is up: going through ovsdbapp (or `ovs-vsctl`) adds 2 ms (or ~10 ms) of client-side
    thread hops (or start-up) first, which is the emulation's cost, not the controller's."""

    def __init__(self, ovsdb_url: str, bridge: str):
        self.ovsdb_url, self.bridge = ovsdb_url, bridge
        self.rpc: JsonRpc | None = None
        self._ops: list[dict[str, Any]] = []

    async def connect(self, port_name: str) -> None:
        self.rpc = await JsonRpc.open(self.ovsdb_url)
        found = await self.rpc.transact("Open_vSwitch", {
            "op": "select", "table": "Port", "where": [["name", "==", port_name]], "columns": ["_uuid"]})
        rows = found[0]["rows"]
        if not rows:
            self._ops = []  # gone already: del_port with if_exists does nothing
            return
        port = ["uuid", rows[0]["_uuid"][1]]
        self._ops = [
            {"op": "mutate", "table": "Bridge", "where": [["name", "==", self.bridge]],
             "mutations": [["ports", "delete", ["set", [port]]]]},
            {"op": "delete", "table": "Port", "where": [["_uuid", "==", port]]},
        ]

    async def del_port(self) -> None:
        assert self.rpc is not None
        if self._ops:
            await self.rpc.transact("Open_vSwitch", *self._ops)

    async def close(self) -> None:
        if self.rpc is not None:
            await self.rpc.close()
            self.rpc = None


class Switchover:
    """The pre-started switchover process inside the VM's namespace (see switchover.py)."""

    def __init__(self, cloud: Cloud, vm: str, old: str, new: str, mac: str, ip: str, gateway: str | None):
        argv = [sys.executable, "-m", "controller.sandbox.switchover", "--old", old, "--new", new,
                "--mac", mac, "--ip", ip] + (["--gateway", gateway] if gateway else [])
        self.proc = cloud.sandbox.vm_popen(vm, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
        self._went = False
        self._expect("started")

    def _expect(self, word: str) -> None:
        if self.proc.stdout.readline().strip() != word:
            self.proc.kill()
            raise SandboxError(f"switchover helper failed: {self.proc.stderr.read()}")

    def prepare(self) -> None:
        """The destination interface exists now: give it what the guest will have after resuming."""
        self.proc.stdin.write("prepare\n")
        self.proc.stdin.flush()
        self._expect("ready")

    def go(self) -> dict[str, float]:
        self._went = True
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # printed before the helper exits: don't wait for its exit
        if not line:
            raise SandboxError(f"switchover failed: {self.proc.stderr.read()}")
        return json.loads(line)

    def cancel(self) -> None:
        """Reap the helper (it exits by itself after `go`; kill it if it never got there)."""
        if self.proc.poll() is None and not self._went:
            self.proc.kill()
        self.proc.wait(10)


async def _wait_for(predicate, timeout: float, what: str, interval: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def _sleep_until(deadline: float, spin: float = 0.002) -> None:
    """Wake at `deadline` (time.time()): the loop's timers wake up to a millisecond late, so the last
    two milliseconds are waited for on the clock."""
    await asyncio.sleep(max(0.0, deadline - spin - time.time()))
    while time.time() < deadline:
        pass


async def migrate(cloud: Cloud, vm: str, dest: str, unplug_delay: float = 0.2,
                  update_port_delay: float | None = 0.3, strategy: str | None = None,
                  memory_copy: float = MEMORY_COPY) -> dict[str, Any]:
    """Live-migrate `vm` to chassis `dest`; returns the timeline (seconds since the plug).

    `memory_copy`: from the destination being ready (Nova's vif-plugged) to the switchover; 0 makes the
    switchover follow the plug at once, which no real migration does."""
    sb, nb = cloud.sandbox, cloud.nb
    sb.chassis(dest)
    vmrec = sb.vm(vm)
    source_vif = next(v for v in vmrec.vifs if v.up)
    if source_vif.chassis == dest:
        raise SandboxError(f"{vm} is already on {dest}")
    port = await nb.get_or_raise(LogicalPort.table, source_vif.port_id)
    if strategy is not None and port.activation_strategy != strategy:
        port = await nb.modify(LogicalPort.table, port.id, lambda p: p.replace(activation_strategy=strategy))
    used = {v.ifname for v in vmrec.vifs}
    new_ifname = next(f"eth{i}" for i in range(10) if f"eth{i}" not in used)
    switchover = Switchover(cloud, vm, source_vif.ifname, new_ifname, port.mac, source_vif.ip,
                            vmrec.gateway)
    unplugger = OvsdbUnplug(sb.chassis(source_vif.chassis).ovs().ovsdb_url, INT_BRIDGE)
    steps: dict[str, float] = {}
    try:
        await unplugger.connect(source_vif.tap)
        steps["plug"] = time.time()
        # The destination tap has carrier from the start, as QEMU's tap does; the guest only starts
        # using it (addresses, routes) at the switchover.
        sb.plug_vif(vm, dest, port.id, port.mac, new_ifname, up=True, ip=source_vif.ip, configure_ip=False)
        steps["plugged"] = time.time()
        switchover.prepare()

        async def recorded() -> Any:
            current = await nb.get(LogicalPort.table, port.id)
            mig = current.migration if current is not None else None
            return mig if mig is not None and mig.chassis == dest else None

        mig = await _wait_for(recorded, READY_TIMEOUT, f"{dest} to record the migration (step 1)")
        steps["recorded"] = time.time()
        timelines = Timelines(nb.redis, nb.keys)
        if mig.strategy == "announce":
            async def preprogrammed() -> bool:
                entry = await timelines.get(mig.id)
                return bool(entry and dest in entry["applied"].get("requested", {}))
            await _wait_for(preprogrammed, READY_TIMEOUT, f"{dest} to pre-program the port")
            steps["preprogrammed"] = time.time()
        await asyncio.sleep(memory_copy)
        steps["memory_copied"] = time.time()
        steps.update({f"vm_{k}": v for k, v in switchover.go().items()})
        # The unplug delay counts from the switchover (the VM stopping on the source), not from when
        # the helper's report got here.
        await _sleep_until(steps["vm_source_down"] + unplug_delay)
        steps["unplug"] = time.time()
        await unplugger.del_port()
        steps["unplugged"] = time.time()  # OVSDB committed the removal
    except BaseException:
        switchover.cancel()
        raise
    finally:
        await unplugger.close()
    # The emulation's own housekeeping (the source veth, the switchover helper, the sandbox's record)
    # waits until the chassis have reacted to the unplug: it forks `ovs-vsctl` and `ip`, and on the
    # sandbox's shared cores their CPU would be taken from the chassis whose reaction is measured
    # (on a cloud it runs on the source host, apart from them).
    quiet = HOUSEKEEPING_AFTER_UNPLUG if update_port_delay is None else min(HOUSEKEEPING_AFTER_UNPLUG,
                                                                             update_port_delay)
    await _sleep_until(steps["unplug"] + quiet)
    sb.unplug_vif(vm, source_vif.ifname)  # the veth and the sandbox's record (the port is gone already)
    await asyncio.to_thread(switchover.cancel)  # reaped only now: its exit must not delay the unplug
    sb.set_vif_up(vm, new_ifname, True)
    if update_port_delay is not None:
        await _sleep_until(steps["unplug"] + update_port_delay)
        steps["update_port"] = time.time()
        await cloud.update_port_binding(port.id, dest)

        async def finished() -> bool:
            current = await nb.get(LogicalPort.table, port.id)
            return current is not None and current.migration is None
        await _wait_for(finished, READY_TIMEOUT, "the migration record to be cleared", interval=0.01)
        steps["done"] = time.time()
    async def both_moved() -> dict[str, Any] | None:
        entry = await timelines.get(mig.id) or {}
        moved = {ch for state, per in entry.get("applied", {}).items() if state != "requested" for ch in per}
        return entry if {source_vif.chassis, dest} <= moved else None
    try:  # the source and the destination always move; wait for their stamps
        entry = await _wait_for(both_moved, 2.0, "apply stamps", interval=0.01)
    except SandboxError:
        entry = await timelines.get(mig.id) or {}
    origin = steps["plug"]
    return {
        "vm": vm, "port": port.id, "migration": mig.id, "source": source_vif.chassis, "destination": dest,
        "strategy": mig.strategy, "origin": origin, "steps": {k: round(v - origin, 6) for k, v in steps.items()},
        "applied": {state: {ch: round(t - origin, 6) for ch, t in sorted(per.items())}
                    for state, per in entry.get("applied", {}).items()},
        "states": {k: round(entry[k] - origin, 6) for k in ("requested", "activated", "switched", "done",
                                                            "aborted") if k in entry},
    }


def format_timeline(result: dict[str, Any]) -> str:
    """The migration's steps, NB states and each chassis' apply time, in ms since the plug."""
    lines = [f"{result['vm']}: {result['source']} -> {result['destination']} "
             f"({result['strategy']}, migration {result['migration']})"]
    events = [(t, f"nova/vm: {step}") for step, t in result["steps"].items()]
    events += [(t, f"NB: {state}") for state, t in result["states"].items()]
    events += [(t, f"{ch}: flows applied ({state})") for state, per in result["applied"].items()
               for ch, t in per.items()]
    lines += [f"  {t * 1000:9.1f} ms  {what}" for t, what in sorted(events)]
    return "\n".join(lines)
