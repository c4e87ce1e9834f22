"""`dfflow-bench migration --peer ovn`: the same migration (or evacuation) with OVN as the network, in
the same run as dfflow's, printed side by side with the ratio dfflow/OVN.

One system at a time on the sandbox's br-int: dfflow's sandbox is brought up, measured and torn
down first (dfflow.sandbox.scenario / benchmarks.evacuation, unchanged), then a fresh sandbox of the
same topology (3 userspace-OVS chassis, the same VM namespaces, the same probes) is brought up
without dfflow's controllers, OVN runs on it (dfflow.sandbox.ovn: NB/SB ovsdb-servers,
ovn-northd, one ovn-controller per chassis) and the same Nova sequence is driven with what
Neutron's OVN driver writes (dfflow.sandbox.ovn_cloud: requested-chassis "src,dst" and
activation-strategy=rarp at the destination's plug, requested-chassis=dst at the binding's
activation). Same figures, computed by the same code: the reply gap (headline), the lost-probe
window beside it, duplicates, the machine's quiet gap; for an evacuation the last VM back.

One VM: M moves between chassis-1 and chassis-2; its L2 peer P on chassis-3 probes it, and so does
the external host E on chassis-3 through M's floating IP, on both systems: dfflow's topology as
dfflow.sandbox.scenario builds it (net1, net2, router R with its gateway on `public`), OVN's the same
networks, VMs and router as Neutron's OVN driver writes them (dfflow.sandbox.ovn_router: R pinned to
the gateway chassis, chassis-3, and a centralized floating IP, Neutron's default). Evacuation:
V1..VN on net1, P on chassis-3 probing all of them from one prober, as benchmarks.evacuation.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import statistics
import tempfile
from typing import Any, Awaitable, Callable

from benchmarks import evacuation
from dfflow.sandbox import nova, scenario
from dfflow.sandbox.evacuate import evacuate
from dfflow.sandbox.netns import SandboxError
from dfflow.sandbox.ovn import Ovn
from dfflow.sandbox.ovn_cloud import STRATEGY, OvnCloud, migrate
from dfflow.sandbox.ovn_router import create_floating_ip, create_router
from dfflow.sandbox.probe import Echo, Sender
from dfflow.sandbox.gap_phases import format_runs, phase_counts, quiet_seconds
from dfflow.sandbox.priorities import EMULATED_CLOUD_NICENESS, emulated_nova, lower_emulated_cloud
from dfflow.sandbox.scenario import FIP_PROBE, L2_PROBE, WINDOW_AFTER, WINDOW_BEFORE, _wait_reachable, load_line, percentile
from dfflow.sandbox.topology import Sandbox

PEER = "ovn"
GATEWAY_CHASSIS = "chassis-3"  # the routers' gateway chassis on OVN's side (where E is, as a network node)
SHORT = {L2_PROBE: "L2 peer", FIP_PROBE: "floating IP"}  # the probes' names in a plot's title
OVN_LABEL = "OVN rarp"  # OVN's runs in the combined report (dfflow's: "dfflow <strategy>")


def _up(workdir: str | None, prefix: str) -> tuple[Sandbox, Ovn, str]:
    workdir = workdir or tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    sb = Sandbox(workdir)
    sb.up(chassis=3, controllers=False)
    ovn = Ovn(sb, gateways=[GATEWAY_CHASSIS])
    try:
        ovn.start()
        for ch in sb.chassis_list():  # nova-compute's os-vif runs on every host from the start (as dfflow's)
            sb.osvif_socket(ch.name)
    except BaseException:
        sb.down()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return sb, ovn, workdir


def _down(sb: Sandbox, ovn: Ovn, workdir: str) -> None:
    try:
        ovn.stop()
    finally:
        sb.down()
        shutil.rmtree(workdir, ignore_errors=True)


def run_single(runs: int = 5, memory_copy: float = nova.MEMORY_COPY, unplug_delay: float = 0.2,
               update_port_delay: float = 0.3, interval: float = 0.001,
               progress: Callable[[str], None] | None = None, keep_samples: bool = True,
               workdir: str | None = None, cloud_niceness: int = EMULATED_CLOUD_NICENESS) -> dict[str, Any]:
    """One VM migrated `runs` times on OVN, probed from its L2 peer and through its floating IP;
    dfflow.sandbox.scenario's report shape (strategy `ovn-rarp`). `cloud_niceness`: as dfflow's run
    (Nova's calls and Neutron's OVN driver in this process, the Nova API and the os-vif agents)."""
    load_before = os.getloadavg()
    sb, ovn, workdir = _up(workdir, "dfbench-ovn-")
    try:
        cloud = OvnCloud(sb, ovn)
        try:
            fip = _build_single(cloud)
            echo = Echo(sb, "M")
            try:
                _wait_reachable(sb, [("P", scenario.M_IP), ("E", fip)])
                def move(dest: str) -> Awaitable[dict[str, Any]]:
                    return migrate(cloud, "M", dest, memory_copy=memory_copy, unplug_delay=unplug_delay,
                                   update_port_delay=update_port_delay)
                quiet = quiet_seconds(WINDOW_BEFORE, memory_copy, unplug_delay, update_port_delay, WINDOW_AFTER)
                lower_emulated_cloud(sb, cloud_niceness)
                with emulated_nova(cloud_niceness):
                    results, stopped = asyncio.run(_alternating(cloud, runs, scenario.M_IP, interval, move,
                                                       _migration_figures(keep_samples, update_port_delay),
                                                       progress, also={FIP_PROBE: ("E", fip)}, quiet=quiet))
            finally:
                echo.stop()
        finally:
            cloud.close()
    finally:
        _down(sb, ovn, workdir)
    return {"runs": results, "stopped": stopped, "summary": scenario.summarise(results), "interval_ms": interval * 1e3,
            "memory_copy_ms": memory_copy * 1e3, "unplug_delay_ms": unplug_delay * 1e3, "nova_path": "extended",
            "update_port_delay_ms": update_port_delay * 1e3, "probes": [L2_PROBE, FIP_PROBE],
            "load_before": load_before, "load_after": os.getloadavg(), "cloud_niceness": cloud_niceness}


def _build_single(cloud: OvnCloud) -> str:
    """dfflow.sandbox.scenario's topology on OVN: net1 and net2 behind router R with its gateway on
    `public`, M (with a floating IP) on chassis-1, P and Q on chassis-3, the external host E on
    `public` on chassis-3 (no port security, as on dfflow's side), the probes let in by the same rules.
    Returns M's floating IP."""
    cloud.create_network("net1", "10.1.0.0/24")
    cloud.create_network("net2", "10.2.0.0/24")
    cloud.create_network("public", "172.24.4.0/24", external=True)
    router = create_router(cloud, "R", ["net1", "net2"], "public")
    cloud.create_vm("M", "chassis-1", "net1", scenario.M_IP)
    cloud.create_vm("P", "chassis-3", "net1", scenario.P_IP)
    cloud.create_vm("Q", "chassis-3", "net2", scenario.Q_IP)
    cloud.create_vm("E", "chassis-3", "public", scenario.E_IP, port_security=False)
    cloud.allow_probes()
    return create_floating_ip(cloud, router, "M")


async def _alternating(cloud: OvnCloud, runs: int, targets: str | list[str], interval: float,
                       move: Callable[[str], Awaitable[Any]],
                       figures: Callable[[int, Any, dict[str, Any], float, float], dict[str, Any]],
                       progress: Callable[[str], None] | None,
                       also: dict[str, tuple[str, str]] | None = None,
                       quiet: float = evacuation.QUIET) -> tuple[list[dict[str, Any]], str | None]:
    """`runs` probed moves, chassis-1 -> chassis-2 and back (`move(dest)`), P probing `targets`; with
    `also` ({probe name: (VM, address)}) those VMs probe too, each with its own prober, and `figures`
    gets every probe's raw result by name ({L2_PROBE: P's, ...}). Returns the runs' figures and, when
    a migration on OVN failed after the first run, why the runs stopped there (the runs before it stand;
    the sandbox is not trusted for more)."""
    results: list[dict[str, Any]] = []
    here = "chassis-1"
    for i in range(runs):
        try:
            results.append(await _one_run(cloud, i, here, targets, interval, move, figures, also, quiet))
        except (OvnRunFailed, SandboxError) as exc:
            if not results:
                raise
            logging.getLogger(__name__).exception("OVN run %d failed", i + 1)
            return results, f"run {i + 1} of {runs} failed: {exc}"
        here = "chassis-2" if here == "chassis-1" else "chassis-1"
        if progress is not None:
            back = results[-1].get("last_back_ms")
            progress(f"{STRATEGY} run {i + 1}/{runs}" + (f": last VM back {evacuation._ms(back)}" if back else ""))
    return results, None


class OvnRunFailed(RuntimeError):
    """A migration of an OVN run failed (the run has no figures)."""


async def _one_run(cloud: OvnCloud, i: int, here: str, targets: str | list[str], interval: float,
                   move: Callable[[str], Awaitable[Any]],
                   figures: Callable[[int, Any, dict[str, Any], float, float], dict[str, Any]],
                   also: dict[str, tuple[str, str]] | None, quiet: float = evacuation.QUIET) -> dict[str, Any]:
    dest = "chassis-2" if here == "chassis-1" else "chassis-1"
    others = {name: Sender(cloud.sandbox, vm, ip, interval=interval) for name, (vm, ip) in (also or {}).items()}
    try:
        outcome, raw, quiet_from, started = await evacuation.probed(cloud.sandbox, "P", targets, interval,
                                                                    lambda: move(dest), quiet=quiet)
    finally:
        raws = {name: sender.stop() for name, sender in others.items()}
    if also:
        raw = {L2_PROBE: raw, **raws}
    return figures(i, outcome, raw, quiet_from, started)


def _migration_figures(keep_samples: bool, update_port_delay: float | None = None) -> Callable[..., dict[str, Any]]:
    def figures(i: int, timeline: dict[str, Any], raw: dict[str, Any], quiet_from: float, started: float):
        # the figures of an announce migration (its trigger is the VM's announcement); OVN reports no
        # per-chassis apply times, so no convergence
        return scenario._figures("announce", i, started, timeline, raw, keep_samples,
                                  quiet_from, update_port_delay) | {"strategy": STRATEGY}
    return figures


def _evacuation_figures(ips: dict[str, str], keep_samples: bool) -> Callable[..., dict[str, Any]]:
    def figures(i: int, result: dict[str, Any], raw: dict[str, Any], quiet_from: float, started: float):
        if result["failed"]:
            raise OvnRunFailed(f"migrations failed: {result['failed']}")
        return evacuation._figures(STRATEGY, i, ips, result, raw, quiet_from, started, keep_samples)
    return figures


def run_evacuation(vms: int, runs: int = 5, interval: float | None = None, memory_copy: float = nova.MEMORY_COPY,
                   unplug_delay: float = 0.2, update_port_delay: float = 0.3,
                   progress: Callable[[str], None] | None = None, keep_samples: bool = True,
                   workdir: str | None = None) -> dict[str, Any]:
    """`vms` VMs evacuated together `runs` times on OVN; benchmarks.evacuation's report shape."""
    interval = interval or evacuation.default_interval(vms)
    load_before = os.getloadavg()
    sb, ovn, workdir = _up(workdir, "dfbench-ovnevac-")
    echoes: list[Echo] = []
    try:
        cloud = OvnCloud(sb, ovn)
        try:
            ips = evacuation.vm_ips(vms)
            cloud.create_network("net1", "10.1.0.0/24")
            cloud.create_vm("P", "chassis-3", "net1", evacuation.P_IP)
            for name, ip in ips.items():
                cloud.create_vm(name, "chassis-1", "net1", ip)
                echoes.append(Echo(sb, name))
            if progress:
                progress(f"OVN: {vms} VMs up on chassis-1")
            _wait_reachable(sb, [("P", ip) for ip in ips.values()])
            def move(dest: str) -> Awaitable[dict[str, Any]]:
                return evacuate(cloud, list(ips), dest, migrate=migrate, memory_copy=memory_copy,
                                unplug_delay=unplug_delay, update_port_delay=update_port_delay)
            results, stopped = asyncio.run(_alternating(cloud, runs, list(ips.values()), interval, move,
                                               _evacuation_figures(ips, keep_samples), progress))
        finally:
            for echo in echoes:
                echo.stop()
            cloud.close()
    finally:
        _down(sb, ovn, workdir)
    return {"vms": vms, "runs": results, "stopped": stopped, "summary": evacuation.summarise(results),
            "interval_ms": interval * 1e3,
            "memory_copy_ms": memory_copy * 1e3, "unplug_delay_ms": unplug_delay * 1e3,
            "update_port_delay_ms": update_port_delay * 1e3, "nova_path": "extended",
            "load_before": load_before, "load_after": os.getloadavg()}


# --- both systems in one report ------------------------------------------------------------------
def combine(dfflow: dict[str, Any], ovn: dict[str, Any], summarise: Callable[[list], dict[str, Any]]) -> dict[str, Any]:
    """One report with both systems' runs, labelled `dfflow <strategy>` and `OVN rarp`, as the benchmark's
    own plot and JSON take it; `systems` keeps each system's load averages, `ratios` dfflow/OVN."""
    runs = [r | {"strategy": f"dfflow {r['strategy']}"} for r in dfflow["runs"]]
    runs += [r | {"strategy": OVN_LABEL} for r in ovn["runs"]]
    header = {k: v for k, v in dfflow.items() if k not in ("runs", "summary", "load_before", "load_after")}
    summary = summarise(runs)
    key = "last_back_median_ms" if "vms" in dfflow else "downtime_median_ms"
    ratios = {label: _ratio(s[key], summary[OVN_LABEL][key]) for label, s in summary.items() if label != OVN_LABEL}
    report = header | {"runs": runs, "summary": summary, "peer": PEER, "ratios": {"figure": key, **ratios},
                       "systems": {"dfflow": _loads(dfflow), PEER: _loads(ovn)}}
    if "vms" in dfflow:
        report["title"] = "last VM back, median: " + "; ".join(
            f"{label} {_fmt(summary[label][key])} ms / OVN {_fmt(summary[OVN_LABEL][key])} ms = {ratio}"
            for label, ratio in ratios.items())
        return report
    # one VM: each probe's reply gap on its own (the L2 peer's and the floating IP's paths differ)
    per_probe = {label: per_probe_stats([r for r in runs if r["strategy"] == label]) for label in summary}
    theirs = per_probe[OVN_LABEL]
    report["per_probe"] = per_probe
    report["probe_ratios"] = {label: {probe: _ratio(s["gap_median_ms"], theirs.get(probe, {}).get("gap_median_ms"))
                                      for probe, s in stats.items()}
                              for label, stats in per_probe.items() if label != OVN_LABEL}
    report["title"] = "reply gap median, dfflow / OVN: " + "; ".join(
        f"{label[len('dfflow '):]}, {SHORT.get(probe, probe)} {_fmt(per_probe[label][probe]['gap_median_ms'])} / "
        f"{_fmt(theirs.get(probe, {}).get('gap_median_ms'))} ms = {ratio}"
        for label, by_probe in report["probe_ratios"].items() for probe, ratio in by_probe.items())
    return report


def per_probe_stats(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per probe (by name) over `runs`: the reply gap's median/p95/min/max (gap_*), the lost window's
    (lost_*), the duplicates and the quiet gap's p95."""
    stats = {}
    for name in dict.fromkeys(n for r in runs for n in r["probes"]):
        probes = [r["probes"][name] for r in runs if name in r["probes"]]
        gaps = [p["downtime_ms"] for p in probes if p["downtime_ms"] is not None]
        lost = [p["lost_window_ms"] for p in probes if p["lost_window_ms"] is not None]
        quiet = [p["baseline_gap_ms"] for p in probes if p.get("baseline_gap_ms") is not None]
        stats[name] = {"runs": len(probes), **scenario._stats(gaps, "gap"), **scenario._stats(lost, "lost"),
                       "duplicates": sum(p["duplicates"] for p in probes),
                       "unrecovered": sum(not p["recovered"] for p in probes),
                       "quiet_median_ms": statistics.median(quiet) if quiet else None,
                       "quiet_p95_ms": percentile(quiet, 0.95) if quiet else None,
                       "gap_phases": phase_counts([{"probes": {name: p}} for p in probes])}
    return stats


def _loads(report: dict[str, Any]) -> dict[str, Any]:
    loads = {"load_before": report["load_before"], "load_after": report["load_after"]}
    if "cloud_niceness" in report:
        loads["cloud_niceness"] = report["cloud_niceness"]
    return loads | ({"stopped": report["stopped"]} if report.get("stopped") else {})


def _fmt(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours is not None and theirs else "-"


def format_single(report: dict[str, Any]) -> str:
    """Both systems' one-VM migrations in one table: a row per system and probe (the L2 peer, the
    floating IP), with dfflow/OVN of that probe's reply gap."""
    per_probe = report["per_probe"]
    theirs = per_probe[OVN_LABEL]
    lines = [f"one VM, chassis-1 <-> chassis-2, probed every {report['interval_ms']:g} ms from its L2 peer on chassis-3 "
             f"and through its floating IP from the external host on chassis-3; memory copy "
             f"{report['memory_copy_ms']:g} ms, unplug {report['unplug_delay_ms']:g} ms after the switchover, clean-up "
             f"{report['update_port_delay_ms']:g} ms after it; Nova's binding-extended calls",
             f"{'system, strategy':16} {'probe':28} {'runs':>4} {'reply gap median':>16} {'p95':>7} {'max':>7} "
             f"{'lost median':>11} {'p95':>6} {'dups':>5} {'quiet median':>12} {'p95':>6}  "
             f"{'reply gap dfflow/OVN (median, p95)':>34}"]
    for label, by_probe in per_probe.items():
        for probe, s in by_probe.items():
            other = theirs.get(probe, {})
            ratio = "" if label == OVN_LABEL else (f"{_ratio(s['gap_median_ms'], other.get('gap_median_ms'))}, "
                                                   f"{_ratio(s['gap_p95_ms'], other.get('gap_p95_ms'))}")
            lines.append(f"{label:16} {probe:28} {s['runs']:>4} {_fmt(s['gap_median_ms']):>13} ms "
                         f"{_fmt(s['gap_p95_ms']):>7} {_fmt(s['gap_max_ms']):>7} "
                         f"{_fmt(s['lost_median_ms']):>11} {_fmt(s['lost_p95_ms']):>6} {s['duplicates']:>5} "
                         f"{_fmt(s.get('quiet_median_ms')):>12} {_fmt(s['quiet_p95_ms']):>6}  {ratio:>34}")
    for label, by_probe in per_probe.items():
        for probe, s in by_probe.items():
            if s.get("gap_phases"):
                lines.append(f"{label}, {SHORT.get(probe, probe)}: longest gap began in "
                             + ", ".join(f"{phase} {n}" for phase, n in s["gap_phases"].items()))
    lines.append("per run: each probe's longest gap (the phase it began in, ms from the switchover), and its "
                 "longest gap over as long a window right before the migration (quiet):")
    lines.append(format_runs(report["runs"], SHORT))
    lines += _load_lines(report)
    lines.append("reply gap: the longest gap between reply arrivals (the downtime), from 50 ms before the "
                 f"destination's plug to the migration's last step + {WINDOW_AFTER * 1e3:.0f} ms; lost: the longest run "
                 "of lost replies x interval; quiet: the longest gap over a window as long as the migration's, right "
                 "before it (the machine's own); ms. "
                 "A ratio below 1: dfflow's outage is shorter. OVN's floating IP: centralized on the router's "
                 f"gateway chassis ({GATEWAY_CHASSIS}), Neutron's default.")
    return "\n".join(lines)


def format_evacuation(report: dict[str, Any]) -> str:
    """Both systems' evacuations in one table, with dfflow/OVN per dfflow strategy."""
    summary = report["summary"]
    ovn = summary[OVN_LABEL]
    lines = [f"{report['vms']} VMs evacuated at once, chassis-1 <-> chassis-2; one prober on chassis-3, one probe to each "
             f"VM every {report['interval_ms']:g} ms; memory copy {report['memory_copy_ms']:g} ms, unplug "
             f"{report['unplug_delay_ms']:g} ms after the switchover, clean-up {report['update_port_delay_ms']:g} ms "
             "after it",
             f"{'system, strategy':16} {'runs':>4} {'last VM back median':>19} {'p95':>7} "
             f"{'reply gap from switchover median':>32} {'p95':>7} {'max':>7} {'lost median':>11} {'dups':>5} "
             f"{'quiet p95':>9}  {'dfflow/OVN: last back, gap (medians)':>36}"]
    for strategy, s in summary.items():
        ratio = "" if strategy == OVN_LABEL else (
            f"{_ratio(s['last_back_median_ms'], ovn['last_back_median_ms'])}, "
            f"{_ratio(s['switchover_gap_median_ms'], ovn['switchover_gap_median_ms'])}")
        lines.append(f"{strategy:16} {s['runs']:>4} {_fmt(s['last_back_median_ms']):>16} ms "
                     f"{_fmt(s['last_back_p95_ms']):>7} {_fmt(s['switchover_gap_median_ms']):>29} ms "
                     f"{_fmt(s['switchover_gap_p95_ms']):>7} {_fmt(s['switchover_gap_max_ms']):>7} "
                     f"{_fmt(s['lost_window_median_ms']):>11} {s['duplicates']:>5} {_fmt(s['baseline_gap_p95_ms']):>9}  "
                     f"{ratio:>36}")
    lines += _load_lines(report)
    lines.append("last VM back: from the switchover to the last VM's first reply from its destination (one figure "
                 "per run); reply gap: each VM's longest gap between reply arrivals from 50 ms before the switchover "
                 f"to the evacuation's last step + {WINDOW_AFTER * 1e3:.0f} ms, over every VM and run; lost: the "
                 "longest run of lost replies x interval; quiet: the longest gap in the second before; ms. A ratio "
                 "below 1: dfflow is faster.")
    return "\n".join(lines)


def _load_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{system}: {load_line(loads)}" + (f"; emulated cloud at niceness {loads['cloud_niceness']}"
                                                if "cloud_niceness" in loads else "")
             for system, loads in report["systems"].items()]
    return lines + [f"{system} STOPPED EARLY, {loads['stopped']}" for system, loads in report["systems"].items()
                    if loads.get("stopped")]
