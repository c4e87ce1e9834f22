"""The cause and timing an apply records: its NB event's bus delivery, or its OVSDB row's way here."""
from __future__ import annotations

import time
from typing import Any

from controller.flowstate import Plan


def event_timing(event: dict[str, Any], received: float, computed: float) -> tuple[str, dict[str, float]]:
    """An NB event's cause and timing in an apply: its bus delivery (from the NB's publish, when the
    event says when that was) and the compute of the plan it is in."""
    timing = {"bus_ms": (received - event.get("ts", received)) * 1e3, "compute_ms": (computed - received) * 1e3}
    if "ts" in event:
        timing["event_ts"] = event["ts"]  # when the NB write was published (absolute)
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
