"""Where an `announce` switchover's first milliseconds go on the destination's userspace datapath.

Runs one-VM `announce` migrations on the benchmark's own sandbox (dfflow.sandbox.scenario) with every
chassis' `dpif_netdev` debug log on (upcalls, datapath flows installed, and the revalidator's
modifications of them, with millisecond timestamps) and, per run, puts on one time line, in ms from the
emulated QEMU sending the VM's RARP: the destination's upcall of that RARP (its learn action opens the
delivery gate), the revalidator rewriting the hairpin datapath flow (back to the source -> deliver
here), the first probe's upcall past the port's conntrack (delivered to the VIF), the VM's first reply
upcalled at its VIF, the activation bundle's revalidation, and how late each prober sent around the
RARP (its send time minus its deadline) and when its first replies came back. The other chassis'
datapath events in the same window are kept beside the destination's (`other_events` in the JSON).

    python -m benchmarks.switchover_trace --runs 10 [--other-config n-revalidator-threads=2 ...]

The first migration only warms the sandbox up (the log is switched on after it). Debug logging costs
the vswitchds some CPU: use it to place events, and `dfflow-bench migration` for the reply gap.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Iterable, Iterator

from dfflow.sandbox import probe, scenario

CHASSIS = ("chassis-1", "chassis-2", "chassis-3")
LOG_PATTERN = "%d{%s.###}|%c|%m"  # epoch seconds with ms: comparable with the sandbox's time.time() stamps
WINDOW_MS = (-20.0, 80.0)  # the activation lands ~30 ms after the RARP (--activation-settle-ms)
MILESTONES = ("rarp_upcall", "hairpin_modified", "first_delivery_upcall", "first_vif_egress_upcall",
              "activation_revalidation")


def datapath_events(lines: Iterable[str], rarp: float) -> list[tuple[float, str]]:
    """(ms from `rarp`, text) of each datapath flow installed (`flow_add`) or modified by the
    revalidator (`flow_mod`) in a vswitchd log written with LOG_PATTERN, inside WINDOW_MS."""
    events = []
    for line in lines:
        stamp, _, rest = line.partition("|")
        try:
            at = (float(stamp) - rarp) * 1e3
        except ValueError:
            continue
        if WINDOW_MS[0] < at < WINDOW_MS[1] and ("flow_add:" in rest or "flow_mod:" in rest):
            events.append((round(at, 1), re.sub(r"ufid:\S+ mega_ufid:\S+ |packet_type\(ns=0,id=0\),", "", rest)))
    return events


def _first(events: list[tuple[float, str]], after: float | None, wanted: Any) -> float | None:
    if after is None:
        return None
    return next((at for at, text in events if at >= after and wanted(text)), None)


def milestones(events: list[tuple[float, str]]) -> dict[str, Any]:
    """The destination's switchover, from its datapath events (datapath_events)."""
    rarp = _first(events, WINDOW_MS[0], lambda t: "flow_add:" in t and "eth_type(0x8035)" in t)
    # the datapath flow that sent the port's packets back to the source (a tunnel push) rewritten
    hairpin = _first(events, rarp, lambda t: "flow_mod:" in t and "old_actions:tnl_push" in t)
    return {
        "rarp_upcall": rarp,
        "hairpin_modified": hairpin,
        "first_delivery_upcall": _first(events, hairpin, lambda t: "flow_add:" in t and "tunnel(" in t
                                        and "ct_state(+new" in t),
        "first_vif_egress_upcall": _first(events, rarp, lambda t: "flow_add:" in t and "tunnel(" not in t
                                          and "recirc_id(0)," in t and "eth_type(0x0800)" in t),
        "activation_revalidation": _first(events, None if hairpin is None else hairpin + 3.0,
                                          lambda t: "flow_mod:" in t),
        "upcalls_first_30ms": sum(1 for at, text in events if 0 <= at < 30 and "flow_add:" in text),
    }


def after_activation(events: list[tuple[float, str]], applied: float | None) -> dict[str, Any]:
    """What the destination's datapath did in the 20 ms after its controller applied the activation
    (`applied`: ms from the announcement, the benchmark's convergence stamp): datapath flows installed
    anew (upcalls) and rewritten by the revalidator."""
    if applied is None:
        return {"upcalls_after_activation": None, "rewrites_after_activation": None}
    window = [text for at, text in events if applied <= at < applied + 20.0]
    return {"upcalls_after_activation": sum("flow_add:" in t for t in window),
            "rewrites_after_activation": sum("flow_mod:" in t for t in window)}


def prober_timing(result: dict[str, Any], rarp: float) -> dict[str, Any]:
    """How late one prober sent around the RARP (-5..+15 ms; deadline = start + seq x interval, the
    start taken from its least late send) and the (sent, received) of its first three probes sent
    after the RARP that were answered, in ms from it."""
    replies = result["replies"]
    if not replies:
        return {"max_late_ms": None, "first_replies": []}
    interval = result["interval"]
    start = min(sent - seq * interval for seq, sent, _ in replies)
    late = [(sent - start - seq * interval) * 1e3 for seq, sent, _ in replies
            if -5e-3 < start + seq * interval - rarp < 15e-3]
    after = [(round((s - rarp) * 1e3, 2), round((r - rarp) * 1e3, 2)) for _, s, r in replies if s > rarp][:3]
    return {"max_late_ms": round(max(late, default=0.0), 2), "first_replies": after}


@contextlib.contextmanager
def _kept_prober_results(kept: list[dict[str, Any]]) -> Iterator[None]:
    """The scenario's probers, keeping each run's raw result (sequence numbers and send times)."""
    class Kept(probe.Sender):
        def stop(self) -> dict[str, Any]:
            result = super().stop()
            kept.append(result)
            return result
    original, scenario.Sender = scenario.Sender, Kept
    try:
        yield
    finally:
        scenario.Sender = original


class Tracer:
    def __init__(self, workdir: str, other_config: list[str]) -> None:
        self.workdir, self.other_config = workdir, other_config
        self.on, self.raw, self.runs = False, [], []  # type: bool, list[dict[str, Any]], list[dict[str, Any]]

    def _ovs(self, chassis: str, tool: str, *args: str) -> str:
        rundir = os.path.join(self.workdir, chassis, "ovs")
        argv = (["ovs-appctl", "-t", os.path.join(rundir, "ovs-vswitchd.ctl")] if tool == "appctl"
                else ["ovs-vsctl", f"--db=unix:{os.path.join(rundir, 'db.sock')}"])
        return subprocess.run(argv + list(args), capture_output=True, text=True, check=True).stdout

    def _take_log(self, chassis: str, rarp: float) -> list[tuple[float, str]]:
        path = os.path.join(self.workdir, chassis, "ovs", "ovs-vswitchd.log")
        with open(path, errors="replace") as f:
            events = datapath_events(f, rarp)
        open(path, "w").close()
        self._ovs(chassis, "appctl", "vlog/reopen")
        return events

    def _switch_on(self) -> None:
        for ch in CHASSIS:
            self._take_log(ch, 0.0)
            self._ovs(ch, "appctl", "vlog/set", f"PATTERN:file:{LOG_PATTERN}")
            self._ovs(ch, "appctl", "vlog/set", "dpif_netdev:file:dbg")
            if self.other_config:
                self._ovs(ch, "vsctl", "set", "Open_vSwitch", ".", *(f"other_config:{c}" for c in self.other_config))
        self.on = True

    def __call__(self, result: dict[str, Any]) -> None:
        raw, self.raw[:] = list(self.raw), []
        if not self.on:
            self._switch_on()
            return
        timeline = result["timeline"]
        steps = timeline["steps"]
        rarp = timeline["origin"] + steps["vm_announced"]
        events = self._take_log(result["to"], rarp)
        others = {ch: self._take_log(ch, rarp) for ch in CHASSIS if ch != result["to"]}
        self.runs.append({
            "to": result["to"], "routed": round((steps["vm_routed"] - steps["vm_announced"]) * 1e3, 2),
            **milestones(events), **after_activation(events, result["applied_ms"].get(result["to"])),
            "applied_ms": result["applied_ms"],
            "reply_gap_ms": {name: round(p["downtime_ms"], 2) for name, p in result["probes"].items()},
            "probers": [prober_timing(r, rarp) for r in raw], "destination_events": events,
            "other_events": others})


def summary(runs: list[dict[str, Any]]) -> str:
    def spread(values: list[float]) -> str:
        return (f"{statistics.median(values):5.1f} ({min(values):.1f}-{max(values):.1f}, n={len(values)})"
                if values else "-")
    lines = [f"{k:26} {spread([r[k] for r in runs if r[k] is not None])}"
             for k in ("routed", *MILESTONES, "upcalls_first_30ms", "upcalls_after_activation",
                       "rewrites_after_activation")]
    first_reply = [p["first_replies"][0][1] for r in runs for p in r["probers"] if p["first_replies"]]
    first_sent = [p["first_replies"][0][0] for r in runs for p in r["probers"] if p["first_replies"]]
    lines.append(f"{'first answered, sent at':26} {spread(first_sent)}")
    lines.append(f"{'first answered, reply at':26} {spread(first_reply)}")
    lines.append(f"{'prober max lateness':26} {spread([p['max_late_ms'] for r in runs for p in r['probers']])}")
    lines.append(f"{'reply gap':26} {spread([g for r in runs for g in r['reply_gap_ms'].values()])}")
    return "ms from the RARP's send, median (min-max):\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--other-config", action="append", default=[], metavar="KEY=VALUE",
                        help="set on every chassis' Open_vSwitch row before the traced runs")
    parser.add_argument("--json", metavar="PATH", help="every run's milestones and destination events")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="dftrace-", dir="/tmp")
    tracer = Tracer(workdir, args.other_config)
    with _kept_prober_results(tracer.raw):
        report = scenario.run(runs=args.runs + 1, strategies=("announce",), workdir=workdir,
                              on_migration=tracer, keep_samples=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": tracer.runs, "other_config": args.other_config,
                       "load_before": report["load_before"], "load_after": report["load_after"]}, f, indent=1)
    print(summary(tracer.runs))
    print(scenario.load_line(report), file=sys.stderr)


if __name__ == "__main__":
    main()
