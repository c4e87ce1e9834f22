"""Host evacuation downtime on a real sandbox: N VMs live-migrated at once, per activation strategy.

Topology: N VMs V1..VN on net1 start on chassis-1 and are evacuated together to chassis-2, then
back, once per run (dfflow.sandbox.evacuate: Nova's migrations run together, every VM switches
over at once from one helper process). Their L2 peer P on chassis-3 probes all of them from one
non-spinning prober (dfflow.sandbox.probe, one probe to each VM per interval, kernel receive
timestamps). Per run:

- each VM's reply gap: the longest gap between the arrivals of its replies, from just before the
  switchover until just after the last migration's last step; and the same from just before the
  plugs (as `dfflow-bench migration` for one VM), which adds the stalls of the destination's
  vswitchd while os-vif plugs N ports into it;
- back: per VM, from the switchover (the first VM stopping on its source) to the first reply to
  a probe sent after the VM itself stopped there (so answered by the destination); the run's
  figure is the last VM's;
- converge: from the switchover to the last chassis' bundle that moved a VM (the last of all).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from typing import Any, Awaitable, Callable

from dfflow.sandbox.scenario import QUIET, WINDOW_AFTER, WINDOW_BEFORE, _stats, _wait_reachable, load_line
from dfflow.sandbox import nova
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.evacuate import evacuate
from dfflow.sandbox.probe import Echo, Sender, analyse, per_target
from dfflow.sandbox.topology import Sandbox
from dfflow.nb.store import NbApi

STRATEGIES = ("announce", "unplug")
P_IP = "10.1.0.2"
FIRST_VM_HOST = 10  # V1 is 10.1.0.10


def vm_ips(count: int) -> dict[str, str]:
    return {f"V{i + 1}": f"10.1.0.{FIRST_VM_HOST + i}" for i in range(count)}


def default_interval(vms: int) -> float:
    """One probe per VM every N x 0.2 ms: the prober and the vswitchds carry ~5,000 probes a second
    whatever N is (10 VMs: every 2 ms, 25: every 5 ms)."""
    return max(0.001, vms * 0.0002)


def run(vms: int, runs: int = 5, strategies: tuple[str, ...] = STRATEGIES, interval: float | None = None,
        memory_copy: float = nova.MEMORY_COPY, unplug_delay: float = 0.2, update_port_delay: float = 0.3,
        nova_path: str = "extended", progress: Callable[[str], None] | None = None,
        keep_samples: bool = True, workdir: str | None = None) -> dict[str, Any]:
    """Bring a 3-chassis sandbox with `vms` VMs up, evacuate them `runs` times per strategy, tear down."""
    interval = interval or default_interval(vms)
    workdir = workdir or tempfile.mkdtemp(prefix="dfbench-evac-", dir="/tmp")
    sb = Sandbox(workdir)
    load_before = os.getloadavg()
    try:
        sb.up(chassis=3, controllers=True)
        time.sleep(1.0)
        report = asyncio.run(_run(sb, vms, runs, strategies, interval, memory_copy, unplug_delay,
                                  update_port_delay, nova_path, progress, keep_samples))
        return report | {"load_before": load_before, "load_after": os.getloadavg()}
    finally:
        sb.down()
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(sb: Sandbox, count: int, runs: int, strategies: tuple[str, ...], interval: float,
               memory_copy: float, unplug_delay: float, update_port_delay: float, nova_path: str,
               progress: Callable[[str], None] | None, keep_samples: bool) -> dict[str, Any]:
    nb = NbApi(sb.status()["nb_url"])
    cloud = Cloud(sb, nb)
    ips = vm_ips(count)
    echoes: list[Echo] = []
    try:
        await cloud.create_network("net1", "10.1.0.0/24")
        await cloud.create_vm("P", "chassis-3", "net1", P_IP)
        for name, ip in ips.items():
            await cloud.create_vm(name, "chassis-1", "net1", ip)
            echoes.append(Echo(sb, name))
        if progress:
            progress(f"{count} VMs up on chassis-1")
        await asyncio.to_thread(_wait_reachable, sb, [("P", ip) for ip in ips.values()])
        results: list[dict[str, Any]] = []
        here = "chassis-1"
        for strategy in strategies:
            for i in range(runs):
                dest = "chassis-2" if here == "chassis-1" else "chassis-1"
                evacuation, raw, quiet_from, started = await probed(
                    sb, "P", list(ips.values()), interval,
                    lambda: evacuate(cloud, list(ips), dest, memory_copy=memory_copy, unplug_delay=unplug_delay,
                                     update_port_delay=update_port_delay, strategy=strategy, nova_path=nova_path))
                if evacuation["failed"]:
                    raise RuntimeError(f"{strategy} run {i + 1}: migrations failed: {evacuation['failed']}")
                here = dest
                results.append(_figures(strategy, i, ips, evacuation, raw, quiet_from, started, keep_samples))
                if progress:
                    r = results[-1]
                    progress(f"{strategy} run {i + 1}/{runs}: last VM back {_ms(r['last_back_ms'])}, "
                             f"longest reply gap from the switchover "
                             f"{_ms(max(f['switchover_gap_ms'] or 0 for f in r['per_vm'].values()))}")
        return {"vms": count, "runs": results, "summary": summarise(results), "interval_ms": interval * 1e3,
                "memory_copy_ms": memory_copy * 1e3, "unplug_delay_ms": unplug_delay * 1e3,
                "update_port_delay_ms": update_port_delay * 1e3, "nova_path": nova_path}
    finally:
        for echo in echoes:
            echo.stop()
        await nb.close()


async def probed(sandbox: Any, prober: str, targets: list[str] | str, interval: float,
                 work: Callable[[], Awaitable[Any]], quiet: float = QUIET) -> tuple[Any, dict[str, Any], float, float]:
    """One probed run: the prober started in VM `prober`, `quiet` s of it alone (the machine's own gaps),
    then `work()`, then WINDOW_AFTER s more; returns (what `work` returned, the prober's raw result,
    when the quiet window began, when `work` began)."""
    sender = Sender(sandbox, prober, targets, interval=interval)
    try:
        await asyncio.sleep(0.2)
        quiet_from = time.time()
        await asyncio.sleep(quiet)
        started = time.time()
        result = await work()
        await asyncio.sleep(WINDOW_AFTER)
    finally:
        raw = sender.stop()
    return result, raw, quiet_from, started


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "-"


def _figures(strategy: str, index: int, ips: dict[str, str], evacuation: dict[str, Any], raw: dict[str, Any],
             quiet_from: float, started: float, keep_samples: bool) -> dict[str, Any]:
    origin = evacuation["origin"]
    switchover = origin + evacuation["switchover"]["first_source_down"]
    timelines = {m["vm"]: m for m in evacuation["migrations"]}
    last_step = max(m["origin"] + max(m["steps"].values()) for m in timelines.values())
    per_ip = per_target(raw)
    per_vm: dict[str, dict[str, Any]] = {}
    moved_at: list[float] = []
    for vm, ip in ips.items():
        m = timelines[vm]
        stopped = m["origin"] + m["steps"]["vm_source_down"]
        replies = per_ip[ip]["replies"]
        figures = analyse(per_ip[ip], after=origin - WINDOW_BEFORE, until=last_step + WINDOW_AFTER)
        figures["baseline_gap_ms"] = analyse(per_ip[ip], after=quiet_from, until=started)["downtime_ms"]
        figures["switchover_gap_ms"] = analyse(per_ip[ip], after=switchover - WINDOW_BEFORE,
                                               until=last_step + WINDOW_AFTER)["downtime_ms"]
        answered = [received for _, sent, received in replies if sent >= stopped]
        figures["back_ms"] = (min(answered) - switchover) * 1e3 if answered else None
        figures["stopped_ms"] = (stopped - switchover) * 1e3
        figures["announced_ms"] = (m["origin"] + m["steps"]["vm_announced"] - switchover) * 1e3
        figures["applied_ms"] = {state: {ch: round((m["origin"] + t - switchover) * 1e3, 2) for ch, t in per.items()}
                                 for state, per in m["applied"].items() if state != "requested"}
        for edge in ("gap_start", "gap_end"):
            if figures[edge] is not None:
                figures[edge] = round((figures[edge] - switchover) * 1e3, 3)
        if keep_samples:  # reply arrivals, ms since the switchover, around it
            figures["arrivals_ms"] = [round((r - switchover) * 1e3, 2) for _, s, r in replies
                                      if -100e-3 <= r - switchover <= 400e-3]
        per_vm[vm] = figures
        moved_at += [m["origin"] + t for state, per in m["applied"].items() if state != "requested"
                     for t in per.values()]
    backs = [f["back_ms"] for f in per_vm.values()]
    return {"strategy": strategy, "run": index, "to": evacuation["destination"], "per_vm": per_vm,
            "gaps_ms": [f["downtime_ms"] for f in per_vm.values() if f["downtime_ms"] is not None],
            "last_back_ms": None if None in backs else max(backs),
            "switchover_ms": (origin + evacuation["switchover"]["last_routed"] - switchover) * 1e3,
            "converge_ms": (max(moved_at) - switchover) * 1e3 if moved_at else None,
            "timelines": evacuation["migrations"]}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy: the last VM back (one figure per run), every VM's reply gap and lost window
    (pooled over VMs and runs), duplicates, unrecovered VMs, the machine's quiet gap, convergence."""
    summary: dict[str, Any] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in results):
        runs = [r for r in results if r["strategy"] == strategy]
        vms = [f for r in runs for f in r["per_vm"].values()]
        summary[strategy] = {
            "runs": len(runs), "samples": len(vms),
            "unrecovered": sum(not f["recovered"] or f["back_ms"] is None for f in vms),
            **_stats([r["last_back_ms"] for r in runs if r["last_back_ms"] is not None], "last_back"),
            **_stats([f["back_ms"] for f in vms if f["back_ms"] is not None], "back"),
            **_stats([f["downtime_ms"] for f in vms if f["downtime_ms"] is not None], "gap"),
            **_stats([f["switchover_gap_ms"] for f in vms if f["switchover_gap_ms"] is not None], "switchover_gap"),
            **_stats([f["lost_window_ms"] for f in vms if f["lost_window_ms"] is not None], "lost_window"),
            **_stats([f["baseline_gap_ms"] for f in vms if f.get("baseline_gap_ms") is not None], "baseline_gap"),
            **_stats([r["converge_ms"] for r in runs if r["converge_ms"] is not None], "converge"),
            **_stats([r["switchover_ms"] for r in runs], "switchover"),
            "duplicates": sum(f["duplicates"] for f in vms),
        }
    return summary


def format_summary(report: dict[str, Any]) -> str:
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"
    lines = [f"{report['vms']} VMs evacuated at once, chassis-1 <-> chassis-2; one prober on chassis-3, one probe "
             f"to each VM every {report['interval_ms']:g} ms; memory copy {report['memory_copy_ms']:g} ms, unplug "
             f"delay {report['unplug_delay_ms']:g} ms, update_port delay {report['update_port_delay_ms']:g} ms, "
             f"Nova's {report['nova_path']} calls",
             f"{'':10} {'':>4} {'last VM back':^17} {'reply gap, every VM':^29} {'whole evacuation':^17} "
             f"{'lost':>6} {'quiet':>6} {'switch':>6} {'converge':>8}",
             f"{'strategy':10} {'runs':>4} {'median':>8} {'p95':>8} {'median':>9} {'p95':>9} {'max':>9} "
             f"{'median':>8} {'p95':>8} {'median':>6} {'p95':>6} {'median':>6} {'median':>8} dups unrecovered"]
    for strategy, s in report["summary"].items():
        lines.append(f"{strategy:10} {s['runs']:>4} {fmt(s['last_back_median_ms']):>5} ms {fmt(s['last_back_p95_ms']):>5} ms "
                     f"{fmt(s['switchover_gap_median_ms']):>6} ms {fmt(s['switchover_gap_p95_ms']):>6} ms "
                     f"{fmt(s['switchover_gap_max_ms']):>6} ms {fmt(s['gap_median_ms']):>5} ms {fmt(s['gap_p95_ms']):>5} ms "
                     f"{fmt(s['lost_window_median_ms']):>6} {fmt(s['baseline_gap_p95_ms']):>6} "
                     f"{fmt(s['switchover_median_ms']):>6} {fmt(s['converge_median_ms']):>8} {s['duplicates']:>4} "
                     f"{s['unrecovered']}")
    if "load_before" in report:
        lines.append(load_line(report))
    lines.append("last VM back: from the switchover (the first VM stopping on its source) to the last VM's first "
                 "reply to a probe sent after it stopped (one figure per run). reply gap: each VM's longest gap "
                 f"between reply arrivals from {WINDOW_BEFORE * 1e3:.0f} ms before the switchover until the "
                 f"evacuation's last step + {WINDOW_AFTER * 1e3:.0f} ms; whole evacuation: the same from its first "
                 "plug (the destination's N os-vif plugs included); over every VM and run. lost: the longest run of "
                 f"lost replies x interval (ms, median); quiet: the longest gap in the {QUIET:g} s before (ms, p95); "
                 "switch: the switchover helper's time for every VM (stop, resume, RARP, route, GARP; ms); "
                 "converge: from the switchover to the last chassis' bundle moving a VM (ms).")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """One panel per strategy, for its median run (by last VM back): every VM's reply arrivals
    around the switchover (one row per VM), its longest gap shaded, its first reply from the
    destination marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(report["summary"])
    fig, axes = plt.subplots(len(strategies), 1, figsize=(11, 1.5 + 0.22 * report["vms"] * len(strategies)),
                             squeeze=False)
    for ax, strategy in zip(axes[:, 0], strategies):
        runs = sorted((r for r in report["runs"] if r["strategy"] == strategy),
                      key=lambda r: r["last_back_ms"] if r["last_back_ms"] is not None else float("inf"))
        run_ = runs[len(runs) // 2]
        for row, (vm, f) in enumerate(run_["per_vm"].items()):
            xs = f.get("arrivals_ms", [])
            ax.plot(xs, [row] * len(xs), "|", markersize=4, color="tab:blue")
            if f["gap_start"] is not None and f["gap_end"] is not None:
                ax.axvspan(f["gap_start"], f["gap_end"], ymin=(row + 0.1) / len(run_["per_vm"]),
                           ymax=(row + 0.9) / len(run_["per_vm"]), color="tab:red", alpha=0.25)
            if f["back_ms"] is not None:
                ax.plot([f["back_ms"]], [row], "o", color="tab:green", markersize=3)
        ax.axvline(0, color="grey", linestyle=":", linewidth=1)
        ax.set_yticks(range(len(run_["per_vm"])), list(run_["per_vm"]), fontsize=6)
        ax.set_xlim(-100, 400)
        s = report["summary"][strategy]
        ax.set_title(f"{report['vms']} VMs, {strategy}: last VM back {_ms(run_['last_back_ms'])} in this (median) "
                     f"run; over {s['runs']} runs median {s['last_back_median_ms']:.0f} ms, p95 "
                     f"{s['last_back_p95_ms']:.0f} ms; reply gap from the switchover median "
                     f"{s['switchover_gap_median_ms']:.0f} ms, max {s['switchover_gap_max_ms']:.0f} ms", fontsize=9)
        ax.set_xlabel("ms since the switchover (reply arrivals; red: each VM's longest gap; green: first reply "
                      "from the destination)")
    if report.get("title"):  # e.g. the ratio to a peer run alongside (benchmarks.ovn_peer)
        fig.suptitle(report["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

