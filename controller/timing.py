"""The cause and timing an apply records: its NB event's bus delivery, or its OVSDB row's way here."""
from __future__ import annotations

import time
from typing import Any

from controller.flowstate import Plan


def event_timing(event: dict[str, Any], received: float, computed: float) -> tuple[str, dict[str, float]]:
    """An NB event's cause and timing in an apply, its durations rounded as an apply records them: its
    bus delivery (from the NB's publish, when the event says when that was) and the compute of the plan
    it is in."""
    timing = {"bus_ms": round((received - event.get("ts", received)) * 1e3, 3),
              "compute_ms": round((computed - received) * 1e3, 3)}
    if "ts" in event:
        timing["event_ts"] = event["ts"]  # when the NB write was published (absolute; a float's digits)
    return f"{event['table']}:{event.get('id', '')}", timing


def ovsdb_row_timing(update: Any, received: float) -> dict[str, float]:
    """When an OVSDB row change was seen by the IDL thread, and what reaching the agent's loop took."""
    if not update.seen:
        return {}
    return {"event_ts": update.seen, "received": received, "ovsdb_loop_ms": (received - update.seen) * 1e3}


def timed(plan: Plan, timing: dict[str, float], cause: str) -> Plan:
    """`plan` with an OVSDB row's timing and the compute since, and `cause` unless it has one."""
    if timing:
        timing = dict(timing)
        received = timing.pop("received")
        plan.timing.update(timing, compute_ms=(time.time() - received) * 1e3)
    plan.cause = plan.cause or cause
    return plan


def apply_entries(plan: Plan, sending: float, bundle_ms: float, applied: float, coalesced: int
                  ) -> list[dict[str, Any]]:
    """What an applied plan records: one entry per NB event it answers (a burst's flow mods are the
    first one's), with its queueing, its bundle's round trip and `applied`, the switch's reply (absolute)."""
    shared = {"queued_ms": round((sending - plan.timing["emitted"]) * 1e3, 3), "bundle_ms": bundle_ms,
              "coalesced": coalesced, "burst": 1 + len(plan.batched), "applied_at": round(applied, 6)}
    timing = {k: round(v, 6 if k == "event_ts" else 3) for k, v in plan.timing.items() if k != "emitted"}
    entries = [_entry(timing, shared, plan.cause, [list(s) for s in plan.stamps], plan.n_flow_mods,
                      plan.n_row_flow_mods)]
    # one per event of a burst (an evacuation's 100 on every chassis): their timings rounded already
    # (event_timing), the rest of them made once, above
    entries += [_entry(timing, shared, cause, [], 0, 0) for cause, timing in plan.batched]
    return entries


def _entry(timing: dict[str, float], shared: dict[str, Any], cause: str, stamps: list[list[Any]], flow_mods: int,
           compiled_flow_mods: int) -> dict[str, Any]:
    return {**timing, **shared, "cause": cause, "stamps": stamps, "flow_mods": flow_mods,
            "compiled_flow_mods": compiled_flow_mods}
