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

One VM: M moves between chassis-1 and chassis-2, its L2 peer P on chassis-3 probes it (dfflow's
run probes through the L2 peer only too, so both carry the same probe load; OVN's run has no
router or floating IP). Evacuation: V1..VN on net1, P on chassis-3 probing all of them from one
prober, as benchmarks.evacuation.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any, Awaitable, Callable

from benchmarks import evacuation
from dfflow.sandbox import nova, scenario
from dfflow.sandbox.evacuate import evacuate
from dfflow.sandbox.ovn import Ovn
from dfflow.sandbox.ovn_cloud import STRATEGY, OvnCloud, migrate
from dfflow.sandbox.probe import Echo
from dfflow.sandbox.scenario import WINDOW_AFTER, _wait_reachable, load_line
from dfflow.sandbox.topology import Sandbox

L2_PROBE = "peer (L2, chassis-3)"
PEER = "ovn"
OVN_LABEL = "OVN rarp"  # OVN's runs in the combined report (dfflow's: "dfflow <strategy>")


def _up(workdir: str | None, prefix: str) -> tuple[Sandbox, Ovn, str]:
    workdir = workdir or tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    sb = Sandbox(workdir)
    sb.up(chassis=3, controllers=False)
    ovn = Ovn(sb)
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
               workdir: str | None = None) -> dict[str, Any]:
    """One VM migrated `runs` times on OVN; dfflow.sandbox.scenario's report shape (strategy `ovn-rarp`)."""
    load_before = os.getloadavg()
    sb, ovn, workdir = _up(workdir, "dfbench-ovn-")
    try:
        cloud = OvnCloud(sb, ovn)
        try:
            cloud.create_network("net1", "10.1.0.0/24")
            cloud.create_vm("M", "chassis-1", "net1", scenario.M_IP)
            cloud.create_vm("P", "chassis-3", "net1", scenario.P_IP)
            echo = Echo(sb, "M")
            try:
                _wait_reachable(sb, [("P", scenario.M_IP)])
                def move(dest: str) -> Awaitable[dict[str, Any]]:
                    return migrate(cloud, "M", dest, memory_copy=memory_copy, unplug_delay=unplug_delay,
                                   update_port_delay=update_port_delay)
                results = asyncio.run(_alternating(cloud, runs, scenario.M_IP, interval, move,
                                                   _migration_figures(keep_samples), progress))
            finally:
                echo.stop()
        finally:
            cloud.close()
    finally:
        _down(sb, ovn, workdir)
    return {"runs": results, "summary": scenario.summarise(results), "interval_ms": interval * 1e3,
            "memory_copy_ms": memory_copy * 1e3, "unplug_delay_ms": unplug_delay * 1e3, "nova_path": "extended",
            "update_port_delay_ms": update_port_delay * 1e3, "probes": [L2_PROBE],
            "load_before": load_before, "load_after": os.getloadavg()}


async def _alternating(cloud: OvnCloud, runs: int, targets: str | list[str], interval: float,
                       move: Callable[[str], Awaitable[Any]],
                       figures: Callable[[int, Any, dict[str, Any], float, float], dict[str, Any]],
                       progress: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """`runs` probed moves, chassis-1 -> chassis-2 and back (`move(dest)`), P probing `targets`."""
    results = []
    here = "chassis-1"
    for i in range(runs):
        dest = "chassis-2" if here == "chassis-1" else "chassis-1"
        outcome, raw, quiet_from, started = await evacuation.probed(cloud.sandbox, "P", targets, interval,
                                                                    lambda: move(dest))
        here = dest
        results.append(figures(i, outcome, raw, quiet_from, started))
        if progress is not None:
            back = results[-1].get("last_back_ms")
            progress(f"{STRATEGY} run {i + 1}/{runs}" + (f": last VM back {evacuation._ms(back)}" if back else ""))
    return results


def _migration_figures(keep_samples: bool) -> Callable[..., dict[str, Any]]:
    def figures(i: int, timeline: dict[str, Any], raw: dict[str, Any], quiet_from: float, started: float):
        # the figures of an announce migration (its trigger is the VM's announcement); OVN reports no
        # per-chassis apply times, so no convergence
        return scenario._figures("announce", i, started, timeline, {L2_PROBE: raw}, keep_samples,
                                  quiet_from) | {"strategy": STRATEGY}
    return figures


def _evacuation_figures(ips: dict[str, str], keep_samples: bool) -> Callable[..., dict[str, Any]]:
    def figures(i: int, result: dict[str, Any], raw: dict[str, Any], quiet_from: float, started: float):
        if result["failed"]:
            raise RuntimeError(f"OVN run {i + 1}: migrations failed: {result['failed']}")
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
            results = asyncio.run(_alternating(cloud, runs, list(ips.values()), interval, move,
                                               _evacuation_figures(ips, keep_samples), progress))
        finally:
            for echo in echoes:
                echo.stop()
            cloud.close()
    finally:
        _down(sb, ovn, workdir)
    return {"vms": vms, "runs": results, "summary": evacuation.summarise(results), "interval_ms": interval * 1e3,
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
    what = "last VM back" if "vms" in dfflow else "reply gap"
    title = f"{what}, median: " + "; ".join(
        f"{label} {_fmt(summary[label][key])} ms / OVN {_fmt(summary[OVN_LABEL][key])} ms = {ratio}"
        for label, ratio in ratios.items())
    return header | {"runs": runs, "summary": summary, "peer": PEER, "ratios": {"figure": key, **ratios},
                     "title": title, "systems": {"dfflow": _loads(dfflow), PEER: _loads(ovn)}}


def _loads(report: dict[str, Any]) -> dict[str, Any]:
    return {"load_before": report["load_before"], "load_after": report["load_after"]}


def _fmt(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours is not None and theirs else "-"


def format_single(report: dict[str, Any]) -> str:
    """Both systems' one-VM migrations in one table, with dfflow/OVN per dfflow strategy."""
    summary = report["summary"]
    ovn = summary[OVN_LABEL]
    lines = [f"one VM, chassis-1 <-> chassis-2, probed from its L2 peer on chassis-3 every {report['interval_ms']:g} ms; "
             f"memory copy {report['memory_copy_ms']:g} ms, unplug {report['unplug_delay_ms']:g} ms after the "
             f"switchover, clean-up {report['update_port_delay_ms']:g} ms after it; Nova's binding-extended calls",
             f"{'system, strategy':16} {'runs':>4} {'reply gap median':>16} {'p95':>7} {'max':>7} "
             f"{'lost median':>11} {'p95':>6} {'dups':>5} {'quiet p95':>9}  {'reply gap dfflow/OVN (median, p95)':>34}"]
    for strategy, s in summary.items():
        ratio = "" if strategy == OVN_LABEL else (f"{_ratio(s['downtime_median_ms'], ovn['downtime_median_ms'])}, "
                                                 f"{_ratio(s['downtime_p95_ms'], ovn['downtime_p95_ms'])}")
        lines.append(f"{strategy:16} {s['runs']:>4} {_fmt(s['downtime_median_ms']):>13} ms "
                     f"{_fmt(s['downtime_p95_ms']):>7} {_fmt(s['downtime_max_ms']):>7} "
                     f"{_fmt(s['lost_window_median_ms']):>11} {_fmt(s['lost_window_p95_ms']):>6} {s['duplicates']:>5} "
                     f"{_fmt(s['baseline_gap_p95_ms']):>9}  {ratio:>34}")
    lines += _load_lines(report)
    lines.append("reply gap: the longest gap between reply arrivals (the downtime), from 50 ms before the "
                 f"destination's plug to the migration's last step + {WINDOW_AFTER * 1e3:.0f} ms; lost: the longest run "
                 "of lost replies x interval; quiet: the longest gap in the second before (the machine's own); ms. "
                 "A ratio below 1: dfflow's outage is shorter.")
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
    return [f"{system}: {load_line(loads)}" for system, loads in report["systems"].items()]
