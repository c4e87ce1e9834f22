"""Where a migration's longest reply gap lies, and what the machine does in a quiet window as long.

A one-VM run's headline is the longest gap between reply arrivals over the whole migration window
(from just before the destination's plug to the migration's last step + a margin). Two things tell
what that figure is made of:

* the phase of the migration's timeline (Nova's steps, seconds since the plug) in which the gap
  began: the destination's plug, its pre-programming, the memory copy, the switchover, the binding's
  activation, the source's unplug, Nova's clean-up;
* the same prober's longest gap over a window of the same length with nothing migrating, right
  before: the longest gap in a window grows with the window, so the baseline is compared over as
  many seconds as the migration's figure was.
"""
from __future__ import annotations

from typing import Any

# The phases in timeline order; each begins at the first of its steps present in the timeline.
PHASES = ("plug", "pre-programming", "memory copy", "switchover", "binding activation", "unplug", "clean-up")
_PLUGGED = ("plugged",)
_READY = ("preprogrammed", "recorded", "vif_plugged", "migrating_to")  # the last one present ends pre-programming
_SWITCHED = ("vm_source_down",)
_ACTIVATION = ("activate",)
_UNPLUG = ("unplug",)
# How long before the plug a quiet window starts beyond the migration's own steps: the plug and the
# destination's pre-programming before the memory copy (their seconds are not known in advance).
PREPARATION_ALLOWANCE = 0.3  # s


def boundaries(steps: dict[str, float], update_port_delay: float | None) -> list[tuple[str, float]]:
    """(phase, when it begins, in the timeline's seconds since the plug) for the phases the timeline
    has, in order. Pre-programming ends at the last readiness step (dfflow's `preprogrammed`, OVN's
    `vif_plugged`), the clean-up begins `update_port_delay` after the unplug (Nova's post-migration at
    the destination)."""
    starts: list[tuple[str, float | None]] = [
        ("plug", float("-inf")),
        ("pre-programming", _first(steps, _PLUGGED)),
        ("memory copy", max((steps[s] for s in _READY if s in steps), default=None)),
        ("switchover", _first(steps, _SWITCHED)),
        ("binding activation", _first(steps, _ACTIVATION)),
        ("unplug", _first(steps, _UNPLUG)),
        ("clean-up", steps["unplug"] + update_port_delay if "unplug" in steps and update_port_delay is not None
         else None),
    ]
    return [(phase, at) for phase, at in starts if at is not None]


def _first(steps: dict[str, float], names: tuple[str, ...]) -> float | None:
    return next((steps[n] for n in names if n in steps), None)


def phase_at(at: float, steps: dict[str, float], update_port_delay: float | None) -> str:
    """The phase of the migration at `at` (seconds since the plug)."""
    current = "plug"
    for phase, begins in boundaries(steps, update_port_delay):
        if at >= begins:
            current = phase
    return current


def locate(gap_start: float | None, gap_end: float | None, timeline: dict[str, Any],
           update_port_delay: float | None) -> dict[str, Any]:
    """Where the gap between the reply arrivals `gap_start` and `gap_end` (absolute times) lies: the
    phase it began in -- or, if a phase began while no reply came (the switchover a few ms after the
    last reply from the source), the last phase that began inside it -- and its start in ms from the
    switchover (the VM stopping on the source). Nothing for a run without a gap."""
    if gap_start is None:
        return {"gap_phase": None, "gap_from_switchover_ms": None}
    steps = timeline["steps"]
    at = gap_start - timeline["origin"]
    until = at if gap_end is None else gap_end - timeline["origin"]
    phase = phase_at(at, steps, update_port_delay)
    for name, begins in boundaries(steps, update_port_delay):
        if at < begins <= until:
            phase = name
    switched = steps.get("vm_source_down")
    return {"gap_phase": phase,
            "gap_from_switchover_ms": round((at - switched) * 1e3, 1) if switched is not None else None}


def quiet_seconds(window_before: float, memory_copy: float, unplug_delay: float, update_port_delay: float | None,
                  window_after: float) -> float:
    """How long to probe with nothing migrating before a migration so that a window as long as the
    migration's (the plug and pre-programming, the memory copy, the unplug and clean-up delays, the
    margins) fits in it."""
    return (window_before + PREPARATION_ALLOWANCE + memory_copy + unplug_delay + (update_port_delay or 0.0)
            + window_after)


def quiet_window(quiet_from: float, started: float, length: float) -> tuple[float, float]:
    """The last `length` seconds before `started` (or all of [quiet_from, started) if shorter)."""
    return max(quiet_from, started - length), started


def phase_counts(runs: list[dict[str, Any]]) -> dict[str, int]:
    """How many probe runs had their longest gap in each phase, in timeline order."""
    counts = {phase: 0 for phase in PHASES}
    for run in runs:
        for probe in run["probes"].values():
            if probe.get("gap_phase") in counts:
                counts[probe["gap_phase"]] += 1
    return {phase: n for phase, n in counts.items() if n}


def format_runs(runs: list[dict[str, Any]], short: dict[str, str] | None = None) -> str:
    """One line per run: each probe's longest gap, the phase it began in (and ms from the switchover),
    and the same prober's longest gap in the quiet window of the same length before the migration."""
    short = short or {}
    lines = []
    for index, run in enumerate(runs):
        cells = []
        for name, p in run["probes"].items():
            if p.get("downtime_ms") is None:
                cells.append(f"{short.get(name, name)} -")
                continue
            where = p.get("gap_phase") or "?"
            if p.get("gap_from_switchover_ms") is not None:
                where += f" {p['gap_from_switchover_ms']:+.0f}"
            quiet = p.get("baseline_gap_ms")
            cells.append(f"{short.get(name, name)} {p['downtime_ms']:.1f} ms ({where}) quiet "
                         + (f"{quiet:.1f}" if quiet is not None else "-"))
        lines.append(f"  {run['strategy']:16} run {run.get('run', index) + 1:>2} {run.get('from', '?')}->{run.get('to', '?')}: "
                     + "; ".join(cells))
    return "\n".join(lines)
