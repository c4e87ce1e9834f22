"""End-to-end flow-update latency on real Open vSwitch, per controller flow path.

One 3-chassis sandbox; the controllers are restarted with each path's benchmark switches
(`dfflow-controller --flow-path compiled|osken [--no-bundle]`):

* compiled+bundle     the compiled packer, one atomic bundle per plan (the default path)
* osken+bundle        os-ken OFPFlowMod objects, one atomic bundle per plan
* compiled+flow-mods  the compiled packer, plain flow mods followed by a barrier
* osken+flow-mods     os-ken objects, plain flow mods followed by a barrier

Two updates are timed, `runs` times per path:

* migration: VM M live-migrates between chassis-1 and chassis-2 (strategy unplug). From the
  step-2 publish (the NB event's `ts`, written by the source controller) to the last chassis'
  commit/barrier reply of the plan stamped `switched` (the source applies before it publishes).
* evacuation: K NB ports (no VIFs) bound to one chassis get `binding_chassis` rewritten to
  another in one burst of concurrent NB writes. From the client's `time.time()` right before
  the burst to the last chassis' commit/barrier reply of a plan caused by one of those writes.

Every chassis reports `applied_at` (time.time() after the switch's reply) and the event's
`ts` with each apply (its status socket); all processes share one clock.
"""
from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable

from dfflow.status import read_status
from dfflow.sandbox import nova
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.topology import Sandbox
from dfflow.models import LogicalPort
from dfflow.nb.store import NbApi

PATHS: dict[str, list[str]] = {
    "compiled+bundle": [],
    "osken+bundle": ["--flow-path", "osken"],
    "compiled+flow-mods": ["--no-bundle"],
    "osken+flow-mods": ["--flow-path", "osken", "--no-bundle"],
}
REFERENCE = "osken+bundle"
PORT_EVENTS = f"nb_events.{LogicalPort.table}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(ports: int = 50, runs: int = 5, chassis: int = 3, paths: tuple[str, ...] = tuple(PATHS),
        progress: Callable[[str], None] | None = None, workdir: str | None = None) -> dict[str, Any]:
    """Bring a sandbox up, time every path, tear down; return the figures."""
    workdir = workdir or tempfile.mkdtemp(prefix="dfbench-", dir="/tmp")
    sb = Sandbox(workdir)
    try:
        sb.up(chassis=chassis, controllers=True, controller_args=PATHS[paths[0]])
        _wait_ready(sb)
        return asyncio.run(_run(sb, ports, runs, paths, progress))
    finally:
        sb.down()
        shutil.rmtree(workdir, ignore_errors=True)


def _statuses(sb: Sandbox) -> dict[str, dict[str, Any]]:
    return {ch.name: read_status(ch.status_socket, timeout=5.0) for ch in sb.chassis_list()}


def _poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)


def _idle(st: dict[str, Any], n_chassis: int) -> bool:
    return (st["switch_connected"] and len(st["tunnels"]) == n_chassis - 1 and not st["outbox"]
            and not st["sending"])


def _wait_ready(sb: Sandbox, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    n = len(sb.chassis_list())

    def ready() -> dict[str, dict[str, Any]] | None:
        statuses = _statuses(sb)
        return statuses if all(_idle(st, n) for st in statuses.values()) else None
    return _poll(ready, timeout, "controllers connected, full tunnel mesh, nothing to apply")


def _restart_controllers(sb: Sandbox, args: list[str]) -> None:
    sb.set_controller_args(args)
    names = [c.name for c in sb.chassis_list()]
    for name in names:  # all down first: no controller sees a peer come back before it is up itself
        sb.stop_controller(name)
    for name in names:
        sb.start_controller(name)
    _wait_ready(sb)


async def _run(sb: Sandbox, ports: int, runs: int, paths: tuple[str, ...],
               progress: Callable[[str], None] | None) -> dict[str, Any]:
    nb = NbApi(sb.status()["nb_url"])
    cloud = Cloud(sb, nb)
    try:
        await cloud.create_network("net1", "10.1.0.0/16")
        await cloud.create_vm("M", "chassis-1", "net1", "10.1.0.10")
        # a VM of the network on every chassis: each follows the network's topic all along
        for i, ch in enumerate(c.name for c in sb.chassis_list()):
            await cloud.create_vm(f"V{i + 1}", ch, "net1", f"10.1.0.{20 + i}")
        port_ids = [(await cloud.create_port("net1", "chassis-1", name=f"evac-{i}")).id for i in range(ports)]
        results: list[dict[str, Any]] = []
        m_here, evac_here = "chassis-1", "chassis-1"
        for index, path in enumerate(paths):
            if index > 0 or sb.controller_args != PATHS[path]:
                await asyncio.to_thread(_restart_controllers, sb, PATHS[path])
            statuses = await asyncio.to_thread(_wait_ready, sb)
            for name, st in statuses.items():
                expected = ("osken" if "osken" in path else "compiled", "bundle" in path)
                if (st["flow_path"], st["bundle"]) != expected:
                    raise RuntimeError(f"{name} runs {st['flow_path']}/bundle={st['bundle']}, not {path}")
            await asyncio.sleep(0.5)
            for i in range(runs):
                dest = "chassis-2" if m_here == "chassis-1" else "chassis-1"
                results.append(await _migration(sb, cloud, path, i, dest))
                m_here = dest
                if progress:
                    progress(f"{path} migration {i + 1}/{runs}")
                dest = "chassis-2" if evac_here == "chassis-1" else "chassis-1"
                results.append(await _evacuation(sb, nb, path, i, port_ids, dest))
                evac_here = dest
                if progress:
                    progress(f"{path} evacuation {i + 1}/{runs}")
        return {"ports": ports, "runs": runs, "chassis": len(sb.chassis_list()), "paths": list(paths),
                "results": results, "summary": summarise(results, paths)}
    finally:
        await nb.close()


async def _migration(sb: Sandbox, cloud: Cloud, path: str, index: int, dest: str) -> dict[str, Any]:
    timeline = await nova.migrate(cloud, "M", dest, memory_copy=0.0, unplug_delay=0.05, update_port_delay=0.1,
                                  strategy="unplug", nova_path="legacy")  # step 2 (the unplug) moves it
    statuses = await asyncio.to_thread(_wait_ready, sb)
    stamp = [timeline["migration"], "switched"]
    applied: dict[str, float] = {}
    published: list[float] = []
    for name, st in statuses.items():
        for entry in st["apply_timings"]:
            if stamp in entry.get("stamps", []):
                applied[name] = max(applied.get(name, 0.0), entry["applied_at"])
                if "event_ts" in entry:
                    published.append(entry["event_ts"])
    if not published or not applied:
        raise RuntimeError(f"{path}: no apply of migration {timeline['migration']} found: {applied}")
    publish = min(published)
    return {"path": path, "update": "migration", "run": index, "to": dest,
            "latency_ms": (max(applied.values()) - publish) * 1e3,
            "per_chassis_ms": {ch: round((t - publish) * 1e3, 3) for ch, t in sorted(applied.items())}}


async def _evacuation(sb: Sandbox, nb: NbApi, path: str, index: int, port_ids: list[str],
                      dest: str) -> dict[str, Any]:
    before = await asyncio.to_thread(_statuses, sb)
    n = len(before)
    started = time.time()
    await asyncio.gather(*(nb.modify(LogicalPort.table, pid, lambda p: p.replace(binding_chassis=dest))
                           for pid in port_ids))
    written = time.time()

    def done() -> dict[str, dict[str, Any]] | None:
        now = _statuses(sb)
        if all(now[ch]["stats"].get(PORT_EVENTS, 0) - before[ch]["stats"].get(PORT_EVENTS, 0) >= len(port_ids)
               and _idle(now[ch], n) for ch in now):
            return now
        return None

    statuses = await asyncio.to_thread(_poll, done, 60.0, f"{path}: evacuation of {len(port_ids)} ports applied")
    causes = {f"{LogicalPort.table}:{pid}" for pid in port_ids}
    applied: dict[str, float] = {}
    plans: dict[str, int] = {}
    flow_mods: dict[str, int] = {}
    send_ms: dict[str, float] = {}
    first_event = None
    for name, st in statuses.items():
        for entry in st["apply_timings"]:
            if entry.get("cause") in causes and entry.get("event_ts", 0) >= started:
                applied[name] = max(applied.get(name, 0.0), entry["applied_at"])
                plans[name] = plans.get(name, 0) + 1
                flow_mods[name] = flow_mods.get(name, 0) + entry["flow_mods"]
                send_ms[name] = send_ms.get(name, 0.0) + entry["bundle_ms"]
                first_event = min(first_event or entry["event_ts"], entry["event_ts"])
    if not applied:
        raise RuntimeError(f"{path}: no apply caused by the evacuation found")
    last = max(applied.values())
    return {"path": path, "update": "evacuation", "run": index, "to": dest, "ports": len(port_ids),
            "latency_ms": (last - started) * 1e3, "from_first_event_ms": (last - first_event) * 1e3,
            "write_ms": (written - started) * 1e3,
            "per_chassis_ms": {ch: round((t - started) * 1e3, 3) for ch, t in sorted(applied.items())},
            "plans": plans, "flow_mods": flow_mods,
            "send_ms": {ch: round(v, 3) for ch, v in send_ms.items()}}


def summarise(results: list[dict[str, Any]], paths: tuple[str, ...] | list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for update in ("migration", "evacuation"):
        per: dict[str, Any] = {}
        for path in paths:
            values = [r["latency_ms"] for r in results if r["path"] == path and r["update"] == update]
            if not values:
                continue
            row = {"runs": len(values), "median_ms": statistics.median(values),
                   "p95_ms": percentile(values, 0.95), "min_ms": min(values), "max_ms": max(values)}
            if update == "evacuation":
                runs = [r for r in results if r["path"] == path and r["update"] == update]
                row["send_ms_median"] = statistics.median(sum(r["send_ms"].values()) / len(r["send_ms"])
                                                          for r in runs)
                row["flow_mods_per_chassis"] = statistics.median(
                    sum(r["flow_mods"].values()) / len(r["flow_mods"]) for r in runs)
                row["plans_per_chassis"] = statistics.median(
                    sum(r["plans"].values()) / len(r["plans"]) for r in runs)
            per[path] = row
        reference = per.get(REFERENCE)
        for row in per.values():
            row["vs_osken_bundle"] = (row["median_ms"] / reference["median_ms"]
                                      if reference and reference["median_ms"] else None)
        summary[update] = per
    return summary


def format_summary(report: dict[str, Any]) -> str:
    lines = [f"{report['chassis']} chassis, {report['runs']} runs per path; evacuation of {report['ports']} ports"]
    for update, title in (("migration", "single-port migration (step-2 publish -> last chassis applied)"),
                          ("evacuation", f"evacuation of {report['ports']} ports (first NB write -> "
                                         "last chassis applied)")):
        lines.append(title)
        lines.append(f"  {'path':20} {'median':>10} {'p95':>10} {'min':>9} {'max':>9} {'vs osken+bundle':>16}"
                     + ("  send/chassis  flow mods/chassis" if update == "evacuation" else ""))
        for path, s in report["summary"][update].items():
            ratio = f"{s['vs_osken_bundle']:.2f}x" if s["vs_osken_bundle"] is not None else "-"
            line = (f"  {path:20} {s['median_ms']:7.1f} ms {s['p95_ms']:7.1f} ms {s['min_ms']:6.1f} ms "
                    f"{s['max_ms']:6.1f} ms {ratio:>16}")
            if update == "evacuation":
                line += f"  {s['send_ms_median']:9.1f} ms  {s['flow_mods_per_chassis']:10.0f}"
            lines.append(line)
    lines.append("latency: max over chassis of (time.time() after the switch's commit/barrier reply) - NB event; "
                 "send: sum of the controller's send-to-reply times for the evacuation's plans (median "
                 "over runs of the mean over chassis).")
    return "\n".join(lines)
