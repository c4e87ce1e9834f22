"""Host evacuation on the sandbox: many VMs live-migrated at once, as Nova runs them with
`max_concurrent_live_migrations = N`.

Every VM's migration is nova.migrate, all of them running together: each one's destination
binding, os-vif plug and wait for network-vif-plugged, then its memory copy. The VMs then switch
over together, from one helper process started before any of them (switchover.py `--many`): the
switchover happens once every migration still going is ready, and a migration that failed before
it is left out. After it each migration goes on by itself, timed from its own VM's switchover as
Nova's post-migration is: the binding activation, the source's unplug, the clean-up. Every
migration keeps its own timeline.
"""
from __future__ import annotations

import asyncio
import contextlib
import concurrent.futures
import json
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from dfflow.sandbox import nova
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.netns import SandboxError

HELPER_EXIT_TIMEOUT = 10.0  # s
# Threads for the blocking calls (neutronclient, os-vif) of the migrations running together: Nova makes
# each migration's calls from its own thread, and asyncio's default pool (6 threads on 2 cores) queued
# 10 VMs' activations behind one another, hundreds of ms past Nova's delays.
THREADS_PER_MIGRATION = 2


class SharedSwitchover:
    """The one pre-started switchover helper of an evacuation; `factory` gives each migration its
    VM's part (what nova.migrate takes as `switchover_factory`)."""

    def __init__(self, sandbox: Any, vms: list[str], progress: Callable[[str], None] | None = None):
        self.sandbox, self.progress = sandbox, progress
        self.waiting: set[str] = set(vms)  # neither arrived at the switchover nor withdrawn
        self.arrived: dict[str, asyncio.Future] = {}
        self.open: set[str] = set(vms)  # parts not cancelled yet (the helper is reaped after the last)
        self.prepared = 0
        self.stamps: dict[str, float] = {}  # the switchover's own: go, first source down, last announced
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([sys.executable, "-m", "dfflow.sandbox.switchover", "--many"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._expect("started")

    def factory(self, cloud: Cloud, vm: str, old: str, new: str, mac: str, ip: str,
                gateway: str | None) -> "VmSwitchover":
        return VmSwitchover(self, vm, self.sandbox.vm(vm).namespace, old, new, mac, ip, gateway)

    def _expect(self, word: str) -> str:
        line = self.proc.stdout.readline()
        if not line.startswith(word):
            self.proc.kill()
            raise SandboxError(f"switchover helper failed: {line.strip()} {self.proc.stderr.read()}")
        return line

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise SandboxError(f"switchover helper gone ({exc}): {self.proc.stderr.read()}") from None

    def prepare(self, vm: str, netns: str, old: str, new: str, mac: str, ip: str, gateway: str | None) -> None:
        self._send(" ".join(["prepare", vm, netns, old, new, mac, ip] + ([gateway] if gateway else [])))
        self._expect(f"ready {vm}")
        self.prepared += 1
        if self.progress:
            self.progress(f"{vm} ready at its destination ({self.prepared}/{len(self.open)})")

    def arrive(self, vm: str) -> asyncio.Future:
        """`vm` is ready to switch over: its future holds its stamps once every VM switched."""
        future = asyncio.get_running_loop().create_future()
        self.arrived[vm] = future
        self.waiting.discard(vm)
        self._go_if_all_there()
        return future

    def withdraw(self, vm: str) -> None:
        """`vm`'s migration ended before its switchover (failed or rolled back)."""
        self.waiting.discard(vm)
        self._go_if_all_there()

    def _go_if_all_there(self) -> None:
        if self.waiting or not self.arrived or self.stamps:
            return
        names = list(self.arrived)
        try:
            self._send("go " + " ".join(names))
            line = self.proc.stdout.readline()  # printed before the helper exits: not waiting for its exit
            if not line:
                raise SandboxError(f"switchover failed: {self.proc.stderr.read()}")
            per_vm = json.loads(line)
        except Exception as exc:
            for future in self.arrived.values():
                future.set_exception(exc)
            return
        self.stamps = {"go": min(s["go"] for s in per_vm.values()),
                       "first_source_down": min(s["source_down"] for s in per_vm.values()),
                       "last_announced": max(s["announced"] for s in per_vm.values()),
                       "last_routed": max(s["routed"] for s in per_vm.values())}
        for name, future in self.arrived.items():
            future.set_result(per_vm[name])
        if self.progress:
            self.progress(f"{len(names)} VMs switched over in "
                          f"{(self.stamps['last_routed'] - self.stamps['go']) * 1e3:.1f} ms")

    def release(self, vm: str) -> None:
        """`vm`'s part is done with the helper; the last one reaps it (it exits by itself after `go`)."""
        with self._lock:
            self.open.discard(vm)
            last = not self.open
        if last:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None and not self.stamps:
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # after `go` the helper exits once its stdin is closed
        try:
            self.proc.wait(HELPER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class VmSwitchover:
    """One VM's part of the shared switchover, with nova.Switchover's methods."""

    def __init__(self, shared: SharedSwitchover, vm: str, netns: str, old: str, new: str, mac: str, ip: str,
                 gateway: str | None):
        self.shared, self.vm = shared, vm
        self.args = (vm, netns, old, new, mac, ip, gateway)
        self._went = self._released = False

    def prepare(self) -> None:
        self.shared.prepare(*self.args)

    async def go(self) -> dict[str, float]:
        self._went = True
        return await self.shared.arrive(self.vm)

    def cancel(self) -> None:
        if not self._went:
            self.shared.withdraw(self.vm)
        if not self._released:
            self._released = True
            self.shared.release(self.vm)


async def evacuate(cloud: Cloud, vms: list[str], dest: str, progress: Callable[[str], None] | None = None,
                   migrate: Callable[..., Any] = nova.migrate, **migrate_options: Any) -> dict[str, Any]:
    """Live-migrate `vms` to chassis `dest` at once (nova.migrate's options apply to each); returns
    every migration's timeline (`migrations`), the failures (`failed`: VM -> error) and the shared
    switchover's stamps (`switchover`, seconds since the evacuation started). `migrate`: what
    migrates one VM (nova.migrate's arguments; ovn_cloud.migrate for a sandbox run by OVN)."""
    sb = cloud.sandbox
    if not vms:
        raise SandboxError("vms: no VM to migrate")
    if len(set(vms)) != len(vms):
        raise SandboxError(f"vms: named twice: {', '.join(sorted({v for v in vms if vms.count(v) > 1}))}")
    sb.chassis(dest)  # fails clearly for an unknown chassis, before anything moves
    for vm in vms:
        here = next((v.chassis for v in sb.vm(vm).vifs if v.up), None)
        if here is None:
            raise SandboxError(f"vms: {vm} has no VIF up")
        if here == dest:
            raise SandboxError(f"vms: {vm} is already on {dest}")
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=THREADS_PER_MIGRATION * len(vms) + 4,
                                              thread_name_prefix="nova"))
    started = time.time()
    shared = SharedSwitchover(sb, vms, progress)
    done: list[str] = []

    async def one(vm: str) -> dict[str, Any]:
        try:
            result = await migrate(cloud, vm, dest, switchover_factory=shared.factory, **migrate_options)
        except BaseException:
            shared.withdraw(vm)  # the others switch over without it
            shared.release(vm)
            raise
        done.append(vm)
        if progress:
            progress(f"{vm} migrated ({len(done)}/{len(vms)})")
        return result

    try:
        outcomes = await asyncio.gather(*(one(vm) for vm in vms), return_exceptions=True)
    finally:
        shared.close()
    migrations = [o for o in outcomes if isinstance(o, dict)]
    failed = {vm: f"{type(o).__name__}: {o}" for vm, o in zip(vms, outcomes) if isinstance(o, BaseException)}
    for vm, outcome in zip(vms, outcomes):
        if isinstance(outcome, (KeyboardInterrupt, asyncio.CancelledError)):
            raise outcome
    return {"destination": dest, "vms": vms, "origin": started, "migrations": migrations, "failed": failed,
            "switchover": {k: round(v - started, 6) for k, v in shared.stamps.items()}}


def format_evacuation(result: dict[str, Any], timelines: bool = True) -> str:
    """Each migration's timeline (nova.format_timeline), then one line per VM and the failures."""
    lines = [nova.format_timeline(m) for m in result["migrations"]] if timelines else []
    sw = result["switchover"]
    if sw:
        lines.append(f"{len(result['migrations'])} VMs to {result['destination']}: switched over together "
                     f"{sw['go'] * 1e3:.1f} ms after the evacuation started, the last announced "
                     f"{(sw['last_announced'] - sw['go']) * 1e3:.1f} ms after the first VM stopped")
    for m in result["migrations"]:
        moved = [t for state, per in m["applied"].items() if state != "requested" for t in per.values()]
        switched = m["steps"].get("vm_source_down")
        last = f"{(max(moved) - switched) * 1e3:.1f} ms" if moved and switched is not None else "-"
        lines.append(f"  {m['vm']:12} {m['source']} -> {m['destination']} ({m['strategy']}): last chassis moved "
                     f"{last} after its switchover, {m['states'].get('done', m['steps'].get('done', 0)) * 1e3:.0f} "
                     "ms in all")
    for vm, error in result["failed"].items():
        lines.append(f"  {vm}: FAILED: {error}")
    return "\n".join(lines)


def vms_on(sandbox: Any, chassis: str) -> list[str]:
    """The VMs running on `chassis` (their VIF that is up is plugged there)."""
    sandbox.chassis(chassis)
    return [vm.name for vm in sandbox.vms() if any(v.up and v.chassis == chassis for v in vm.vifs)]
