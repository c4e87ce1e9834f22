"""Nova's part of a live migration, emulated faithfully on the sandbox: Nova's own calls to
Neutron (python-neutronclient, in Nova's order) and to os-vif (the real library, on each chassis'
OVSDB), around the VM's switchover as QEMU does it.

Binding-extended (`nova_path="extended"`, Nova's path when Neutron lists the extension; see
nova/conductor/tasks/live_migrate.py, nova/compute/manager.py, nova/network/neutron.py):

  conductor       create_port_binding(port, {host: dest})              an INACTIVE binding for dest
  dest pre-live   os_vif.plug on dest (from that binding's vif_details); then setup_networks_on_host:
                  update_port(binding:profile.migrating_to = dest)
  source          waits for network-vif-plugged (Neutron's event to the sandbox's Nova API, see
                  nova_events.py, once the dest chassis reported the VIF up); memory copy;
                  switchover (the VM stops on the source, resumes on dest, announces itself)
  source post     migrate_instance_start: show_port_binding(dest), activate_port_binding(port, dest);
                  then os_vif.unplug of the source VIF
  dest post       migrate_instance_finish (the binding is dest's already: nothing); teardown of the
                  source: migrating_to cleared, delete_port_binding(port, source)
  rollback        at the destination: migrating_to cleared, delete_port_binding(port, dest), then
                  os_vif.unplug of the dest VIF

Legacy (`nova_path="legacy"`): no binding calls; dest's pre-live-migration sets migrating_to (Nova
waits for network-vif-plugged here too: live_migration_wait_for_vif_plug); at the end, migrate_instance_finish's
update_port(binding:host_id=dest, device_owner, binding:profile without migrating_to).

Timing: activation comes `activate_delay` after the switchover (default: right before the unplug,
as Nova activates first in _post_live_migration), the unplug `unplug_delay` after it, the
destination's post-migration `update_port_delay` after the unplug; `update_port_delay=None` means
Nova's step 3 never comes (neither activation nor update_port). Every step is timestamped, and
the chassis' apply times come from the migration's timeline.

os-vif runs in each chassis' agent, which the sandbox starts with the chassis (nova-compute runs on
a compute host all along) and which holds its OVSDB connection and privsep daemon: a call costs what
it costs on a running compute host. Measured
here, os_vif.unplug reaches OVSDB's commit in 5.2 ms median (2.9-11.3 ms, 10 runs; a single raw
OVSDB transaction on a held connection: 0.45 ms).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from typing import Any, Callable

from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.migration_side import finish_switchover, migration_side
from dfflow.sandbox.netns import SandboxError
from dfflow.sandbox.nova_events import VifPluggingFailed
from dfflow.sandbox.osvif import OsVifHost, port_binding, vif_spec
from dfflow.errors import DfflowError
from dfflow.models import LogicalPort, LogicalSwitch, PortStatus
from dfflow.nb.timeline import Timelines

READY_TIMEOUT = 10.0
# libvirt's pre-copy: the VM's memory goes to the destination while the VM still runs on the source. For
# the smallest VMs on a fast network this takes about a second; half of that keeps the runs short.
MEMORY_COPY = 0.5  # s
HOUSEKEEPING_AFTER_UNPLUG = 0.05  # s
NOVA_PATHS = ("extended", "legacy")
MIGRATING_TO = "migrating_to"


class Switchover:
    """The pre-started switchover process inside the VM's namespace (see switchover.py)."""

    def __init__(self, cloud: Cloud, vm: str, old: str, new: str, mac: str, ip: str, gateway: str | None):
        argv = [sys.executable, "-m", "dfflow.sandbox.switchover", "--old", old, "--new", new,
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

    async def go(self) -> dict[str, float]:
        self._went = True
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # printed before the helper exits: don't wait for its exit
        if not line:
            raise SandboxError(f"switchover failed: {self.proc.stderr.read()}")
        return json.loads(line)

    def cancel(self) -> None:
        """Reap the helper (after `go` it exits once its stdin is closed; kill it if it never got there)."""
        if self.proc.poll() is None and not self._went:
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
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


class NovaCalls:
    """Nova's calls to Neutron for one port's live migration (python-neutronclient, as Nova makes
    them); each is stamped in `steps` when it returned."""

    def __init__(self, cloud: Cloud, port_id: str, source: str, dest: str, steps: dict[str, float]):
        self.cloud, self.port_id, self.source, self.dest, self.steps = cloud, port_id, source, dest, steps

    async def _call(self, step: str, call: str, *args: Any) -> Any:
        result = await self.cloud.neutron(call, *args)
        self.steps[step] = time.time()
        return result

    async def port(self) -> dict[str, Any]:
        return (await self.cloud.neutron("show_port", self.port_id))["port"]

    async def bind_ports_to_host(self) -> dict[str, Any]:
        """The conductor's INACTIVE binding for the destination, from the port's vnic type and profile."""
        port = await self.port()
        body = {"binding": {"host": self.dest, "vnic_type": port.get("binding:vnic_type", "normal"),
                            "profile": port.get("binding:profile") or {}}}
        return (await self._call("inactive_binding", "create_port_binding", self.port_id, body))["binding"]

    async def setup_migration_profile(self) -> None:
        """setup_networks_on_host(dest) at the destination's pre-live-migration: migrating_to."""
        port = await self.port()
        profile = dict(port.get("binding:profile") or {})
        if port.get("binding:host_id") != self.dest and profile.get(MIGRATING_TO) != self.dest:
            profile[MIGRATING_TO] = self.dest
            await self._call("migrating_to", "update_port", self.port_id, {"port": {"binding:profile": profile}})

    async def clear_migration_profile(self, step: str) -> None:
        """The teardown of setup_networks_on_host: migrating_to removed from the profile."""
        port = await self.port()
        profile = dict(port.get("binding:profile") or {})
        if MIGRATING_TO in profile:
            del profile[MIGRATING_TO]
            await self._call(step, "update_port", self.port_id, {"port": {"binding:profile": profile}})

    async def migrate_instance_start(self) -> None:
        """The source's post-live-migration: activate the destination's binding unless it is active."""
        try:
            binding = (await self.cloud.neutron("show_port_binding", self.port_id, self.dest))["binding"]
        except DfflowError as exc:
            if getattr(exc, "status_code", None) == 404:
                return  # no binding for dest: the legacy path's update_port does it later
            raise
        if binding.get("status") == "ACTIVE":
            return
        self.steps["activate"] = time.time()
        try:
            await self._call("activated", "activate_port_binding", self.port_id, self.dest)
        except DfflowError as exc:
            if getattr(exc, "status_code", None) != 409:  # active already: Nova logs and goes on
                raise

    async def migrate_instance_finish(self) -> None:
        """_update_port_binding_for_instance: bind to dest (device_owner, migrating_to dropped) if it
        is not bound there yet."""
        port = await self.port()
        if port.get("binding:host_id") == self.dest and port.get("binding:vif_type") not in (
                "unbound", "binding_failed"):
            return
        updates: dict[str, Any] = {"binding:host_id": self.dest, "device_owner": "compute:nova"}
        profile = dict(port.get("binding:profile") or {})
        if profile.pop(MIGRATING_TO, None):
            updates["binding:profile"] = profile
        self.steps["update_port"] = time.time()
        await self._call("updated_port", "update_port", self.port_id, {"port": updates})

    async def delete_port_binding(self, host: str, step: str) -> None:
        try:
            await self._call(step, "delete_port_binding", self.port_id, host)
        except DfflowError as exc:
            if getattr(exc, "status_code", None) != 404:  # gone already: Nova ignores it
                raise


async def migrate(cloud: Cloud, vm: str, dest: str, unplug_delay: float = 0.2,
                  update_port_delay: float | None = 0.3, strategy: str | None = None,
                  memory_copy: float = MEMORY_COPY, nova_path: str = "extended",
                  activate_delay: float | None = None, rollback: bool = False,
                  vif_plugging_timeout: float | None = None,
                  switchover_factory: Callable[..., Any] = Switchover) -> dict[str, Any]:
    """Live-migrate `vm` to chassis `dest`; returns the timeline (seconds since the migration started).

    `memory_copy`: from the destination being ready (Nova's vif-plugged) to the switchover; 0 makes the
    switchover follow the plug at once, which no real migration does. `rollback`: the migration fails
    after the destination is ready, and Nova rolls it back there. `vif_plugging_timeout`: how long Nova
    waits for the destination's network-vif-plugged (default: the cloud's); without it the migration is
    rolled back and VifPluggingFailed raised. `switchover_factory`: what switches the VM over
    (Switchover's arguments and methods; evacuate.py's switches many VMs at once)."""
    if nova_path not in NOVA_PATHS:
        raise SandboxError(f"nova_path must be one of {', '.join(NOVA_PATHS)}, not {nova_path!r}")
    sb, nb = cloud.sandbox, cloud.nb
    dest_ch = sb.chassis(dest)
    vmrec = sb.vm(vm)
    source_vif = next(v for v in vmrec.vifs if v.up)
    if source_vif.chassis == dest:
        raise SandboxError(f"{vm} is already on {dest}")
    port = await nb.get_or_raise(LogicalPort.table, source_vif.port_id)
    if strategy is not None and port.activation_strategy != strategy:
        port = await nb.modify(LogicalPort.table, port.id, lambda p: p.replace(activation_strategy=strategy))
    switch = await nb.get_or_raise(LogicalSwitch.table, port.lswitch)
    extended = nova_path == "extended"
    activate_delay = unplug_delay if activate_delay is None else activate_delay
    steps: dict[str, float] = {}
    nova = NovaCalls(cloud, port.id, source_vif.chassis, dest, steps)
    instance = cloud.instance_info(vmrec)
    used = {v.ifname for v in vmrec.vifs}
    new_ifname = next(f"eth{i}" for i in range(10) if f"eth{i}" not in used)
    # nova-compute's os-vif on both hosts (running all along; the source's connected to its OVSDB)
    async with migration_side(sb, source_vif.chassis, dest_ch.name) as side:
        source_osvif, dest_osvif = side.source_osvif, side.dest_osvif
        source_vif_spec = vif_spec(port.id, port.mac, port.lswitch, port_binding(await nova.port()),
                                   mtu=switch.mtu)
        switchover = side.switchover = switchover_factory(cloud, vm, source_vif.ifname, new_ifname, port.mac,
                                                          source_vif.ip, vmrec.gateway)
        steps["plug"] = time.time()
        dest_binding = await nova.bind_ports_to_host() if extended else port_binding(await nova.port())
        # _do_live_migration prepares its wait for network-vif-plugged before pre_live_migration
        events = cloud.nova_events
        cursor = await events.cursor()
        # pre_live_migration on dest: QEMU's tap (with carrier; the guest uses it only from the
        # switchover), os-vif's plug from the binding Nova will activate there, then migrating_to.
        sb.plug_vif(vm, dest, port.id, port.mac, new_ifname, up=True, ip=source_vif.ip, configure_ip=False,
                    ovs_port=False)
        await dest_osvif.acall("plug", vif_spec(port.id, port.mac, port.lswitch, dest_binding, mtu=switch.mtu),
                               instance)
        steps["plugged"] = time.time()
        await nova.setup_migration_profile()
        switchover.prepare()
        # live_migration_wait_for_vif_plug (on by default, either path): the memory copy starts only
        # once Neutron said the destination's VIF is plugged; with vif_plugging_is_fatal, a timeout
        # rolls the migration back and fails it.
        try:
            plugged = await events.wait_vif_plugged(
                vmrec.uuid, port.id, dest, cursor,
                cloud.vif_plugging_timeout if vif_plugging_timeout is None else vif_plugging_timeout,
                f"live migration of {vm} from {source_vif.chassis} to {dest} (rolled back)")
        except VifPluggingFailed:
            await _roll_back(nova, dest_osvif, port, dest_binding, switch.mtu, instance, steps)
            switchover.cancel()
            sb.unplug_vif(vm, new_ifname)
            raise
        if plugged is not None:
            steps["vif_plugged_event"] = plugged["at"]  # when the sandbox's Nova received it
        steps["vif_plugged"] = time.time()
        status = await nb.get(PortStatus.table, port.id)
        if status is not None and dest in status.up:
            steps["dest_reported_up"] = status.up[dest]  # when dest's chassis reported the VIF up

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
        if rollback:
            await _roll_back(nova, dest_osvif, port, dest_binding, switch.mtu, instance, steps)
            switchover.cancel()
            sb.unplug_vif(vm, new_ifname)
            return await _result(cloud, vm, port.id, mig, source_vif.chassis, dest, steps, timelines,
                                 moved=set(), nova_path=nova_path, final="aborted")
        await asyncio.sleep(memory_copy)
        steps["memory_copied"] = time.time()
        steps.update({f"vm_{k}": v for k, v in (await switchover.go()).items()})
        # _post_live_migration on the source, timed from the switchover (the VM stopping on the
        # source), not from when the helper's report got here: activation, then the unplug (or, with
        # activate_delay > unplug_delay, the other way round).
        switched = steps["vm_source_down"]
        source_post = [(unplug_delay, "unplug")]
        if update_port_delay is not None and extended:
            source_post.append((activate_delay, "activate"))
        for delay, what in sorted(source_post, key=lambda d: (d[0], d[1] != "activate")):
            await _sleep_until(switched + delay)
            if what == "activate":
                await nova.migrate_instance_start()
            else:
                steps["unplug"] = time.time()
                reply = await source_osvif.acall("unplug", source_vif_spec, instance)
                steps["unplugged"] = time.time()
                steps["osvif_unplug_returned"] = reply["returned"]
    # The emulation's own housekeeping (the sandbox's record of the source VIF, the switchover helper)
    # waits until the chassis have reacted to the unplug: it forks `ip`, and on the sandbox's shared
    # cores its CPU would be taken from the chassis whose reaction is measured.
    quiet = HOUSEKEEPING_AFTER_UNPLUG if update_port_delay is None else min(HOUSEKEEPING_AFTER_UNPLUG,
                                                                             update_port_delay)
    await _sleep_until(steps["unplug"] + quiet)
    await finish_switchover(sb, vm, source_vif.ifname, new_ifname, switchover)
    if update_port_delay is not None:
        # post_live_migration_at_destination: bind there if not yet, then tear down the source's side
        await _sleep_until(steps["unplug"] + update_port_delay)
        await nova.migrate_instance_finish()
        await nova.clear_migration_profile("profile_cleared")
        if extended:
            await nova.delete_port_binding(source_vif.chassis, "source_binding_deleted")

        async def finished() -> bool:
            current = await nb.get(LogicalPort.table, port.id)
            return current is not None and current.migration is None
        await _wait_for(finished, READY_TIMEOUT, "the migration record to be cleared", interval=0.01)
        steps["done"] = time.time()
    return await _result(cloud, vm, port.id, mig, source_vif.chassis, dest, steps, timelines,
                         moved={source_vif.chassis, dest}, nova_path=nova_path,
                         final="done" if update_port_delay is not None else None)


async def _roll_back(nova: NovaCalls, dest_osvif: OsVifHost, port: LogicalPort, dest_binding: dict[str, Any],
                     mtu: int, instance: dict[str, Any], steps: dict[str, float]) -> None:
    """_rollback_live_migration -> rollback_live_migration_at_destination: setup_networks_on_host(dest,
    teardown) (migrating_to cleared, dest's binding deleted), then the driver's unplug at dest."""
    steps["rollback"] = time.time()
    await nova.clear_migration_profile("profile_cleared")
    await nova.delete_port_binding(nova.dest, "dest_binding_deleted")
    await dest_osvif.acall("unplug", vif_spec(port.id, port.mac, port.lswitch, dest_binding, mtu=mtu), instance)
    steps["dest_unplugged"] = time.time()

    async def cleared() -> bool:
        current = await nova.cloud.nb.get(LogicalPort.table, port.id)
        return current is not None and current.migration is None
    await _wait_for(cleared, READY_TIMEOUT, "the aborted migration's record to be cleared", interval=0.01)
    steps["done"] = time.time()


async def _result(cloud: Cloud, vm: str, port_id: str, mig: Any, source: str, dest: str,
                  steps: dict[str, float], timelines: Timelines, moved: set[str],
                  nova_path: str = "extended", final: str | None = None) -> dict[str, Any]:
    """The migration's timeline, once the chassis in `moved` stamped their move and the `final` state
    (written after the record is gone) is in it."""
    async def all_moved() -> dict[str, Any] | None:
        entry = await timelines.get(mig.id) or {}
        done = {ch for state, per in entry.get("applied", {}).items() if state != "requested" for ch in per}
        return entry if moved <= done and (final is None or final in entry) else None
    try:  # the source and the destination always move; wait for their stamps
        entry = await _wait_for(all_moved, 2.0, "apply stamps", interval=0.01)
    except SandboxError:
        entry = await timelines.get(mig.id) or {}
    origin = steps["plug"]
    return {
        "vm": vm, "port": port_id, "migration": mig.id, "source": source, "destination": dest,
        "strategy": mig.strategy, "nova_path": nova_path, "origin": origin,
        "steps": {k: round(v - origin, 6) for k, v in steps.items()},
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
