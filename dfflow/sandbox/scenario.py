"""Migration downtime on a real sandbox, per activation strategy, probed every millisecond.

Topology: net1 and net2 behind router R with a gateway on `public`. The migrating
VM M (net1, with a floating IP) moves back and forth between chassis-1 and
chassis-2; its L2 peer P (net1), the routed peer Q (net2) and the external host E
(reaching M through its floating IP) live on chassis-3. P and E (and Q with
`routed_probe`) probe M with sequence-numbered UDP every `interval`. Per run and
prober: the downtime (headline) = the longest gap between reply arrivals (kernel
receive times: replies held in a queue are an outage though none is lost); beside
it the lost window = the longest run of lost replies x interval; and the duplicate
replies (there should be none). Convergence = from the event that should move the
flows (the VM's announcement, the source unplug, or update_port) to the last
chassis' bundle applied.

Strategies: `announce` (the default: pre-programmed destination, activated by the VM's RARP),
`unplug` (the blueprint: flows move at the source unplug), `fallback` (the step-2
publish is dropped, so only update_port moves the flows).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable

from dfflow.sandbox import nova
from dfflow.sandbox.cloud import Cloud
from dfflow.sandbox.faults import DROP_PUBLISH, set_fault
from dfflow.sandbox.gap_phases import locate, phase_counts, quiet_seconds, quiet_window
from dfflow.sandbox.priorities import EMULATED_CLOUD_NICENESS, emulated_nova, lower_emulated_cloud
from dfflow.sandbox.probe import Echo, Sender, analyse
from dfflow.sandbox.secgroup_rules import allow_probes, default_group, external_host_attrs
from dfflow.sandbox.topology import Sandbox
from dfflow.nb.store import NbApi

STRATEGIES = ("announce", "unplug", "fallback")
# on: every VM of the cloud in its project's default group (and the rules the external host's probes
# need); off: port security off on them. The external host E has none either way.
SECGROUPS = ("on", "off")
CLOUD_VMS = ("M", "P", "Q")
M_IP, P_IP, Q_IP, E_IP = "10.1.0.10", "10.1.0.20", "10.2.0.30", "172.24.4.100"
L2_PROBE, FIP_PROBE = "peer (L2, chassis-3)", "external host (floating IP)"
TRIGGERS = {"announce": "vm_announced", "unplug": "unplug", "fallback": "update_port"}
# The figures of a run are those of the probes sent from just before the plug until just after the
# migration's last step (the destination's flows, the switchover, the unplug, update_port and
# every chassis' clean-up); the same probes sent before it, over a window as long as the migration's
# (gap_phases.quiet_seconds of probing with nothing migrating), show what the machine does with no
# migration at all (its baseline reply gap). QUIET: the evacuations' quiet second.
QUIET, WINDOW_BEFORE, WINDOW_AFTER = 1.0, 0.05, 0.3


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _build(sb: Sandbox, say: Callable[[str], None]) -> tuple[NbApi, Cloud, str]:
    nb = NbApi(sb.status()["nb_url"])
    cloud = Cloud.for_sandbox(sb, nb)
    await cloud.create_network("net1", "10.1.0.0/24")
    await cloud.create_network("net2", "10.2.0.0/24")
    await cloud.create_network("public", "172.24.4.0/24", external=True)
    await cloud.create_router("R", ["net1", "net2"], external="public")
    await cloud.create_vm("M", "chassis-1", "net1", M_IP)
    await cloud.create_vm("P", "chassis-3", "net1", P_IP)
    await cloud.create_vm("Q", "chassis-3", "net2", Q_IP)
    await cloud.create_vm("E", "chassis-3", "public", E_IP, port_attrs=await external_host_attrs(cloud, "public"))
    fip = await cloud.create_floating_ip("M")
    for added in await allow_probes(cloud):
        say(f"added {added}")
    return nb, cloud, fip.floating_ip


async def _set_secgroups(cloud: Cloud, mode: str) -> None:
    """The cloud's VMs with their project's default group (`on`), or with port security off (`off`)."""
    port = ({"port_security_enabled": True, "security_groups": [(await default_group(cloud))["id"]]}
            if mode == "on" else {"port_security_enabled": False, "security_groups": []})
    for vm in CLOUD_VMS:
        await cloud.neutron("update_port", cloud.sandbox.vm(vm).vifs[0].port_id, {"port": port})


def _wait_reachable(sb: Sandbox, sources: list[tuple[str, str]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for vm, ip in sources:
        while sb.vm_exec(vm, ["ping", "-c", "1", "-W", "1", ip], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{vm} cannot reach {ip}: the sandbox is not working")
            time.sleep(0.2)


def run(runs: int = 5, strategies: tuple[str, ...] = STRATEGIES, memory_copy: float = nova.MEMORY_COPY,
        unplug_delay: float = 0.2,
        update_port_delay: float = 0.3, interval: float = 0.001,
        progress: Callable[[str], None] | None = None, keep_samples: bool = True,
        routed_probe: bool = False, on_migration: Callable[[dict[str, Any]], None] | None = None,
        workdir: str | None = None, nova_path: str = "extended", neutron: bool = False,
        controller_cmd: list[str] | None = None, secgroups: tuple[str, ...] = ("on",),
        say: Callable[[str], None] = lambda _: None, cloud_niceness: int = EMULATED_CLOUD_NICENESS) -> dict[str, Any]:
    """Bring a 3-chassis sandbox up, migrate `runs` times per strategy, tear down; return figures.
    `secgroups`: each run of a strategy is made once per mode (SECGROUPS), interleaved; `say` hears
    what the set-up adds to the security groups.
    With `neutron`, neutron-server with the dfflow driver serves the cloud's API (not `dfflow api`).
    `cloud_niceness`: the niceness of the emulated cloud's control services while it migrates (Nova's
    calls, the API server, the Nova API, the os-vif agents: priorities.py; 0 = the guests').
    The `fallback` strategy needs controllers that obey the faults (`controller_cmd`: the command of
    `benchmarks.faulty_controller`)."""
    if "fallback" in strategies and controller_cmd is None:
        raise ValueError("strategy 'fallback' needs controller_cmd: controllers that obey the sandbox's faults")
    workdir = workdir or tempfile.mkdtemp(prefix="dfbench-", dir="/tmp")
    sb = Sandbox(workdir, controller_cmd=controller_cmd)
    load_before = os.getloadavg()  # the machine may be shared: the figures say how busy it was
    try:
        sb.up(chassis=3, controllers=True, neutron=neutron)
        time.sleep(1.0)
        report = asyncio.run(_run(sb, runs, strategies, unplug_delay, update_port_delay, interval, progress,
                                  keep_samples, routed_probe, on_migration, memory_copy, nova_path,
                                  secgroups, say, cloud_niceness))
        return report | {"load_before": load_before, "load_after": os.getloadavg(), "cloud_niceness": cloud_niceness}
    finally:
        sb.down()
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(sb: Sandbox, runs: int, strategies: tuple[str, ...], unplug_delay: float,
               update_port_delay: float, interval: float, progress: Callable[[str], None] | None,
               keep_samples: bool, routed_probe: bool,
               on_migration: Callable[[dict[str, Any]], None] | None,
               memory_copy: float = nova.MEMORY_COPY, nova_path: str = "extended",
               secgroups: tuple[str, ...] = ("on",),
               say: Callable[[str], None] = lambda _: None,
               cloud_niceness: int = EMULATED_CLOUD_NICENESS) -> dict[str, Any]:
    nb, cloud, fip = await _build(sb, say)
    echo = Echo(sb, "M")
    probes = {L2_PROBE: ("P", M_IP), FIP_PROBE: ("E", fip)}
    if routed_probe:
        probes["routed peer (net2, chassis-3)"] = ("Q", M_IP)
    lower_emulated_cloud(sb, cloud_niceness)  # Nova's and Neutron's services run on other hosts in a cloud
    try:
        with emulated_nova(cloud_niceness):
            return await _migrations(sb, cloud, nb, probes, runs, strategies, unplug_delay, update_port_delay,
                                     interval, progress, keep_samples, on_migration, memory_copy, nova_path,
                                     secgroups)
    finally:
        echo.stop()
        await nb.close()


async def _migrations(sb: Sandbox, cloud: Cloud, nb: NbApi, probes: dict[str, tuple[str, str]], runs: int,
                      strategies: tuple[str, ...], unplug_delay: float, update_port_delay: float, interval: float,
                      progress: Callable[[str], None] | None, keep_samples: bool,
                      on_migration: Callable[[dict[str, Any]], None] | None, memory_copy: float, nova_path: str,
                      secgroups: tuple[str, ...]) -> dict[str, Any]:
    await asyncio.to_thread(_wait_reachable, sb, list(probes.values()))
    results: list[dict[str, Any]] = []
    here, mode_now = "chassis-1", "on"
    quiet = quiet_seconds(WINDOW_BEFORE, memory_copy, unplug_delay, update_port_delay, WINDOW_AFTER)
    for strategy in strategies:
        for i, mode in ((i, m) for i in range(runs) for m in secgroups):
            if mode != mode_now:
                await _set_secgroups(cloud, mode)
                await asyncio.to_thread(_wait_reachable, sb, list(probes.values()))
                mode_now = mode
            dest = "chassis-2" if here == "chassis-1" else "chassis-1"
            if strategy == "fallback":
                await set_fault(nb, DROP_PUBLISH, True)
            senders = {name: Sender(sb, vm, ip, interval=interval) for name, (vm, ip) in probes.items()}
            await asyncio.sleep(0.2)
            quiet_from = time.time()
            await asyncio.sleep(quiet)
            started = time.time()
            try:
                timeline = await nova.migrate(cloud, "M", dest, memory_copy=memory_copy,
                                              unplug_delay=unplug_delay,
                                              update_port_delay=update_port_delay,
                                              strategy="announce" if strategy == "announce" else "unplug",
                                              nova_path=nova_path)
                await asyncio.sleep(0.3)
            finally:
                raw = {name: s.stop() for name, s in senders.items()}
                if strategy == "fallback":
                    await set_fault(nb, DROP_PUBLISH, False)
            here = dest
            results.append(_figures(strategy, i, started, timeline, raw, keep_samples, quiet_from,
                                    update_port_delay)
                           | ({"secgroups": mode, "row": f"{strategy}, sg {mode}"} if len(secgroups) > 1 else
                              {"secgroups": mode}))
            if on_migration is not None:
                on_migration(results[-1])
            if progress is not None:
                progress(f"{strategy} run {i + 1}/{runs}")
    return {"runs": results, "summary": summarise(results), "interval_ms": interval * 1e3,
            "memory_copy_ms": memory_copy * 1e3, "unplug_delay_ms": unplug_delay * 1e3,
            "nova_path": nova_path, "update_port_delay_ms": update_port_delay * 1e3,
            "probes": list(probes), "secgroups": list(secgroups)}


def _figures(strategy: str, index: int, started: float, timeline: dict[str, Any],
             raw: dict[str, dict[str, Any]], keep_samples: bool, quiet_from: float,
             update_port_delay: float | None = None) -> dict[str, Any]:
    """One run's figures per probe: the reply gap over the migration's window, the phase it began in
    (gap_phases), and the baseline: the longest gap over as long a window with nothing migrating."""
    probes = {}
    window = (timeline["origin"] - WINDOW_BEFORE,
              timeline["origin"] + max(timeline["steps"].values()) + WINDOW_AFTER)
    baseline = quiet_window(quiet_from, started, window[1] - window[0])
    for name, result in raw.items():
        figures = analyse(result, after=window[0], until=window[1])
        figures |= locate(figures["gap_start"], figures["gap_end"], timeline, update_port_delay)
        figures["baseline_gap_ms"] = analyse(result, after=baseline[0], until=baseline[1])["downtime_ms"]
        figures["window_s"], figures["baseline_window_s"] = (round(window[1] - window[0], 3),
                                                             round(baseline[1] - baseline[0], 3))
        if keep_samples:  # (arrival time since the migration started, RTT) of every reply
            figures["samples"] = [(round(r - started, 4), round((r - s) * 1e3, 3))
                                  for _, s, r in result["replies"] if s >= quiet_from]
        for edge in ("gap_start", "gap_end"):  # the reply gap, in s since the migration started
            if figures[edge] is not None:
                figures[edge] = round(figures[edge] - started, 6)
        probes[name] = figures
    steps = timeline["steps"]
    trigger_step = TRIGGERS[strategy]
    moving = {"announce": "activated", "unplug": "switched", "fallback": "bound"}[strategy]
    if timeline.get("nova_path") == "extended" and strategy != "announce":
        trigger_step, moving = "activate", "bound"  # Nova activates dest's binding before the unplug
    trigger = steps.get(trigger_step)
    applied = timeline["applied"].get(moving, {})
    convergence = (max(applied.values()) - trigger) * 1e3 if applied and trigger is not None else None
    unplug_at = ((steps["unplug"] - steps["vm_source_down"]) * 1e3
                 if "unplug" in steps and "vm_source_down" in steps else None)
    return {"strategy": strategy, "run": index, "from": timeline["source"], "to": timeline["destination"],
            "probes": probes, "trigger": trigger_step, "convergence_ms": convergence,
            "unplug_at_ms": unplug_at,  # when emulated Nova really unplugged, after the VM left the source
            "applied_ms": {ch: round((t - (trigger or 0)) * 1e3, 2) for ch, t in applied.items()},
            "timeline": timeline, "plug_offset_s": timeline["origin"] - started}


def load_line(report: dict[str, Any]) -> str:
    """The machine's load averages around a benchmark run, as its table prints them."""
    return ("load average (1, 5, 15 min) before: " + ", ".join(f"{v:.2f}" for v in report["load_before"])
            + "; after: " + ", ".join(f"{v:.2f}" for v in report["load_after"]))


def _stats(values: list[float], prefix: str) -> dict[str, float | None]:
    return {f"{prefix}_median_ms": statistics.median(values) if values else None,
            f"{prefix}_p95_ms": percentile(values, 0.95) if values else None,
            f"{prefix}_min_ms": min(values) if values else None,
            f"{prefix}_max_ms": max(values) if values else None}


def row(result: dict[str, Any]) -> str:
    """The summary row of a run: its strategy, and whether security groups were on when both were measured."""
    return result.get("row", result["strategy"])


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per strategy, over every probing peer and run: the reply gap (downtime_*), the lost window
    (lost_window_*), the duplicates, and the convergence."""
    summary: dict[str, Any] = {}
    for strategy in dict.fromkeys(map(row, results)):
        runs = [r for r in results if row(r) == strategy]
        probes = [p for r in runs for p in r["probes"].values()]
        downtimes = [p["downtime_ms"] for p in probes if p["downtime_ms"] is not None]
        lost_windows = [p["lost_window_ms"] for p in probes if p["lost_window_ms"] is not None]
        convergence = [r["convergence_ms"] for r in runs if r["convergence_ms"] is not None]
        unplug_at = [r["unplug_at_ms"] for r in runs if r.get("unplug_at_ms") is not None]
        summary[strategy] = {
            "runs": len(runs), "samples": len(downtimes), "unrecovered": sum(not p["recovered"] for p in probes),
            **_stats(downtimes, "downtime"), **_stats(lost_windows, "lost_window"),
            "duplicates": sum(p["duplicates"] for p in probes),
            **_stats([p["baseline_gap_ms"] for p in probes if p.get("baseline_gap_ms") is not None], "baseline_gap"),
            "gap_phases": phase_counts(runs),
            "convergence_median_ms": statistics.median(convergence) if convergence else None,
            "convergence_p95_ms": percentile(convergence, 0.95) if convergence else None,
            "unplug_at_median_ms": statistics.median(unplug_at) if unplug_at else None,
            "per_probe_median_ms": {
                name: statistics.median([r["probes"][name]["downtime_ms"] for r in runs
                                         if r["probes"][name]["downtime_ms"] is not None] or [float("nan")])
                for name in runs[0]["probes"]},
        }
    return summary


def plot(report: dict[str, Any], path: str) -> None:
    """One panel per strategy: each probe's replies (RTT by arrival time) for the median run, each
    probe's longest reply gap shaded, and the steps of the migration marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(report["summary"])
    fig, axes = plt.subplots(len(strategies), 1, figsize=(11, 3.2 * len(strategies)), squeeze=False)
    for ax, strategy in zip(axes[:, 0], strategies):
        runs = [r for r in report["runs"] if row(r) == strategy]
        worst = [max((p["downtime_ms"] or 0) for p in r["probes"].values()) for r in runs]
        run_ = runs[sorted(range(len(runs)), key=lambda i: worst[i])[len(runs) // 2]]
        for name, figures in run_["probes"].items():
            xs = [t * 1e3 for t, _ in figures.get("samples", [])]
            ys = [rtt for _, rtt in figures.get("samples", [])]
            dots = ax.plot(xs, ys, ".", markersize=2,
                           label=f"{name}: reply gap {figures['downtime_ms']:.0f} ms, lost window "
                           f"{figures['lost_window_ms']:.0f} ms" if figures["downtime_ms"] is not None else name)
            if figures.get("gap_end") is not None:
                ax.axvspan(figures["gap_start"] * 1e3, figures["gap_end"] * 1e3, color=dots[0].get_color(),
                           alpha=0.2)
        steps = run_["timeline"]["steps"]
        base = run_["plug_offset_s"] * 1e3
        for step in ("plugged", "vm_source_down", "vm_announced", "unplug", "update_port"):
            if step in steps:
                ax.axvline(steps[step] * 1e3 + base, color="grey", linestyle=":", linewidth=1)
                ax.text(steps[step] * 1e3 + base, ax.get_ylim()[1] * 0.9, step, rotation=90, fontsize=7,
                        color="grey", va="top")
        s = report["summary"][strategy]
        ax.set_title(f"{strategy}: reply gap (downtime) median {s['downtime_median_ms']:.0f} ms, "
                     f"p95 {s['downtime_p95_ms']:.0f} ms; lost window median {s['lost_window_median_ms']:.0f} ms, "
                     f"p95 {s['lost_window_p95_ms']:.0f} ms; {s['duplicates']} duplicates; "
                     f"{s['samples']} probe runs", fontsize=9)
        ax.set_xlabel("ms since the migration started (reply arrival time)")
        ax.set_ylabel("reply RTT (ms)")
        ax.legend(loc="upper right", fontsize=8)
    if report.get("title"):  # e.g. the ratio to a peer run alongside (benchmarks.ovn_peer)
        fig.suptitle(report["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def format_summary(report: dict[str, Any]) -> str:
    w = max([10, *map(len, report["summary"])])
    lines = [f"probes every {report['interval_ms']:g} ms; memory copy {report['memory_copy_ms']:g} ms, "
             f"unplug delay {report['unplug_delay_ms']:g} ms, update_port delay {report['update_port_delay_ms']:g} ms, "
             f"Nova's {report.get('nova_path', 'extended')} calls",
             f"{'':{w}} {'':>4} {'downtime (reply gap)':^29} {'lost window':^19} {'quiet':^19}",
             f"{'strategy':{w}} {'runs':>4} {'median':>9} {'p95':>9} {'max':>9} {'median':>9} {'p95':>9} "
             f"{'median':>9} {'p95':>9} {'dups':>5} {'converge':>9} {'(from)':14} unrecovered"]
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"
    for strategy, s in report["summary"].items():
        trigger = next(r["trigger"] for r in report["runs"] if row(r) == strategy)
        lines.append(f"{strategy:{w}} {s['runs']:>4} {fmt(s['downtime_median_ms']):>6} ms "
                     f"{fmt(s['downtime_p95_ms']):>6} ms {fmt(s['downtime_max_ms']):>6} ms "
                     f"{fmt(s['lost_window_median_ms']):>6} ms {fmt(s['lost_window_p95_ms']):>6} ms "
                     f"{fmt(s['baseline_gap_median_ms']):>6} ms {fmt(s['baseline_gap_p95_ms']):>6} ms {s['duplicates']:>5} {fmt(s['convergence_median_ms']):>6} ms {trigger:14} "
                     f"{s['unrecovered']}")
    for strategy, s in report["summary"].items():
        if s.get("gap_phases"):
            lines.append(f"{strategy}: longest gap began in " + ", ".join(f"{phase} {n}" for phase, n
                                                                         in s["gap_phases"].items()))
    unplug_at = [s["unplug_at_median_ms"] for s in report["summary"].values() if s.get("unplug_at_median_ms")]
    if unplug_at:
        lines.append(f"the source VIF was unplugged {statistics.median(unplug_at):.1f} ms (median) after the VM "
                     "left the source")
    if "load_before" in report:
        lines.append(load_line(report) + (f"; emulated cloud at niceness {report['cloud_niceness']}"
                                          if "cloud_niceness" in report else ""))
    if report.get("secgroups"):
        lines.append("security groups " + " and ".join(report["secgroups"]) + ": on, the VMs' ports have their "
                     "project's default group (the external host, no port security, is let in by rules for ICMP "
                     "and the probes); off, port security off" + (" (runs interleaved)" if len(report["secgroups"]) > 1
                                                                  else ""))
    lines.append("downtime: the longest gap between reply arrivals (kernel receive times; about one probe "
                 "interval when nothing is wrong), over the probes sent from the plug until the migration's last "
                 f"step + {WINDOW_AFTER * 1e3:.0f} ms; lost window: the longest run of lost replies x interval; "
                 "quiet: the longest reply gap over a window as long, right before the migration (the machine's "
                 "own stalls); dups: replies received twice; over every probing peer and run. converge: from the "
                 "trigger to the last chassis' bundle applied (median).")
    return "\n".join(lines)
