"""Fan-out: from an NB binding change to the last chassis' flows applied, at many stand-in chassis.

`benchmarks.standin_fleet.Fleet` runs the real controller per chassis (in-process, spread
over worker processes) against a stand-in Open vSwitch. A run moves K ports' binding
(`binding_chassis`, Nova's activation) between chassis-1 and chassis-2 in one burst of concurrent NB
writes and measures, from the client's `time.time()` before the first write, to the last chassis'
bundle commit acknowledged (the controller's `applied_at`). All processes share one clock.
Where the time goes is reported from the controllers' own apply timings: the bus delivery (NB
publish -> handler), the engine's compute, the wait in the outbox and the bundle round trip.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

from benchmarks.standin_fleet import Fleet


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(chassis: int, ports: int, evacuate: int = 0, runs: int = 5, workers: int | None = None,
        progress: Callable[[str], None] | None = None, settle: float = 0.0) -> dict[str, Any]:
    """`settle`: seconds the fleet runs idle between start-up and the first move, so that the moves meet
    controllers as they are after a while up (start-up's arrival windows closed, heartbeats heard, the
    heap past its first collections), not fresh from start-up."""
    movers = max(1, evacuate)
    with Fleet(chassis, ports, movers, workers=workers) as fleet:
        starting = time.monotonic()
        fleet.up(timeout=max(600.0, 1.5 * chassis), progress=progress)
        startup = {"wall_s": time.monotonic() - starting, "workers": fleet.ask_all({"op": "resources"})}
        time.sleep(settle)
        results = []
        here = "chassis-1"
        for i in range(runs + 1):  # the first move warms every chassis' paths up and is not counted
            dest = "chassis-2" if here == "chassis-1" else "chassis-1"
            if evacuate == 0 or i % 2 == 0:
                results.append(("move", i, _figures(fleet.move([fleet.mover_ids[0]], dest))))
            if evacuate:
                results.append(("evacuation", i, _figures(fleet.move(fleet.mover_ids, dest))))
            here = dest
            if progress:
                progress(f"run {i}/{runs}")
        return {"chassis": chassis, "ports": fleet.ports, "evacuate": evacuate, "runs": runs, "settle_s": settle,
                "workers": fleet.workers, "startup": startup, "after_runs": fleet.ask_all({"op": "resources"}),
                "load_average": os.getloadavg(),
                "results": [{"update": kind, "run": i, **r} for kind, i, r in results if i > 0]}


def _figures(move: dict[str, Any]) -> dict[str, Any]:
    started = move["started"]
    last: dict[str, float] = {}
    parts: dict[str, list[float]] = {"bus_ms": [], "compute_ms": [], "queued_ms": [], "bundle_ms": []}
    flow_mods = bundles = 0
    for name, entries in move["timings"].items():
        if not entries:
            continue
        last[name] = max(e["applied_at"] for e in entries)
        seen_bundles = set()
        for e in entries:
            for key in parts:
                if key in e:
                    parts[key].append(e[key])
            flow_mods += e["flow_mods"]
            seen_bundles.add(e["applied_at"])
        bundles += len(seen_bundles)
    if not last:
        raise RuntimeError("no chassis applied anything for the move")
    per = sorted((t - started) * 1e3 for t in last.values())
    published = [e["event_ts"] for entries in move["timings"].values() for e in entries if "event_ts" in e]
    final = max(last.values())
    return {"latency_ms": per[-1], "median_chassis_ms": statistics.median(per),
            "from_first_event_ms": (final - min(published)) * 1e3,
            "publish_span_ms": (max(published) - min(published)) * 1e3,
            "after_last_event_ms": (final - max(published)) * 1e3,
            "write_ms": (move["written"] - started) * 1e3, "chassis_applied": len(last),
            # the workers' CPU time for the move over chassis x events: what one chassis spends on one
            # event (its bus, engine, sender, and its stand-in switch's share)
            "cpu_per_chassis_event_us": move["cpu_s"] * 1e6 / (len(move["timings"]) * move["events"]),
            "flow_mods": flow_mods, "bundles": bundles,
            "parts_max_ms": {k: round(max(v), 3) for k, v in parts.items() if v},
            "parts_median_ms": {k: round(statistics.median(v), 3) for k, v in parts.items() if v}}


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for update in ("move", "evacuation"):
        rows = [r for r in report["results"] if r["update"] == update]
        if not rows:
            continue
        lat = [r["latency_ms"] for r in rows]
        out[update] = {"runs": len(rows), "median_ms": statistics.median(lat), "p95_ms": percentile(lat, 0.95),
                       **{k: statistics.median(r[k] for r in rows) for k in
                          ("write_ms", "from_first_event_ms", "publish_span_ms", "after_last_event_ms",
                           "cpu_per_chassis_event_us")},
                       "min_ms": min(lat), "max_ms": max(lat),
                       "median_chassis_ms": statistics.median(r["median_chassis_ms"] for r in rows),
                       "flow_mods": statistics.median(r["flow_mods"] for r in rows),
                       "bundles": statistics.median(r["bundles"] for r in rows),
                       "parts_max_ms": {k: statistics.median(r["parts_max_ms"].get(k, 0) for r in rows)
                                        for k in rows[0]["parts_max_ms"]}}
    return out


def format_summary(report: dict[str, Any]) -> str:
    summary = summarise(report)
    lines = [f"{report['chassis']} stand-in chassis in {report['workers']} processes, {report['ports']} VIF ports, "
             f"{report['runs']} runs" + (f", evacuation of {report['evacuate']} ports" if report["evacuate"] else "")
             + (f", after {report['settle_s']:g} s idle" if report.get("settle_s") else "")]
    lines.append(f"  {'update':11} {'median':>10} {'p95':>10} {'min':>9} {'max':>9} {'chassis median':>15} "
                 f"{'flow mods':>10} {'bundles':>8}  slowest parts (bus/compute/queued/bundle)")
    for update, s in summary.items():
        parts = "/".join(f"{s['parts_max_ms'].get(k, 0):.1f}" for k in ("bus_ms", "compute_ms", "queued_ms",
                                                                           "bundle_ms"))
        lines.append(f"  {update:11} {s['median_ms']:7.1f} ms {s['p95_ms']:7.1f} ms {s['min_ms']:6.1f} ms "
                     f"{s['max_ms']:6.1f} ms {s['median_chassis_ms']:12.1f} ms {s['flow_mods']:10.0f} "
                     f"{s['bundles']:8.0f}  {parts} ms")
    for update, s in summary.items():
        lines.append(f"  {update}: medians: NB writes {s['write_ms']:.1f} ms, first publish -> last applied "
                     f"{s['from_first_event_ms']:.1f} ms, publishes spread over {s['publish_span_ms']:.1f} ms, "
                     f"last publish -> last applied {s['after_last_event_ms']:.1f} ms, "
                     f"CPU {s['cpu_per_chassis_event_us']:.0f} us per chassis per event")
    if "startup" in report:
        workers = report["startup"]["workers"].values()
        lines.append(f"  start-up: {report['startup']['wall_s']:.0f} s until every chassis was ready; CPU "
                     f"{sum(w['cpu_s'] for w in workers) / report['chassis'] * 1e3:.0f} ms per chassis (the workers' "
                     f"CPU time over the chassis); RSS {sum(w['rss_mb'] for w in workers) / 1024:.2f} GiB "
                     f"({sum(w['rss_mb'] for w in workers) / report['chassis']:.1f} MB per chassis); "
                     f"load average at the end {', '.join(f'{x:.1f}' for x in report['load_average'])}")
    lines.append("latency: client time before the first NB write -> the last chassis' bundle commit acknowledged.")
    return "\n".join(lines)


def plot(reports: list[dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for update, marker in (("move", "o"), ("evacuation", "s")):
        points = sorted((r["chassis"], summarise(r)[update]["median_ms"], summarise(r)[update]["p95_ms"],
                         r["evacuate"]) for r in reports if update in summarise(r))
        if points:
            label = "one port move" if update == "move" else f"evacuation of {points[0][3]} ports"
            ax.errorbar([p[0] for p in points], [p[1] for p in points],
                        yerr=[[0] * len(points), [p[2] - p[1] for p in points]], marker=marker, label=label,
                        capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("stand-in chassis")
    ax.set_ylabel("NB write -> last chassis applied (ms, median; bar to p95)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
