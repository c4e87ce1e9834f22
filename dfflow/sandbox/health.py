"""Is a sandbox's controller healthy? Alive, answering on its status socket, connected to its switch,
with a tunnel to every other chassis -- and if not, what its log said last."""
from __future__ import annotations

import os
import time
from typing import Any

from . import procs

LOG_LINES_SHOWN = 5
GIVE_UP_AFTER_RESTARTS = 3
KEEPS_DYING = "controller keeps dying"


def problem(chassis: Any, peers: int) -> str | None:
    """What is wrong with `chassis`' controller (a topology.Chassis), or None when it is healthy."""
    from dfflow.status import read_status

    supervised = chassis.supervised()
    if supervised.get("restarts", 0) >= GIVE_UP_AFTER_RESTARTS:
        return f"{KEEPS_DYING} ({supervised['restarts']} restarts, last: {supervised.get('last_exit')})"
    if not procs.same_process(*chassis.controller_now()):
        return "controller is not running"
    try:
        status = read_status(chassis.status_socket)
    except (OSError, ValueError) as exc:
        return f"status socket does not answer ({exc})"
    if not status.get("switch_connected"):
        return "br-int is not connected to it"
    tunnels = len(status.get("tunnels") or {})
    if tunnels != peers:
        return f"{tunnels} of {peers} tunnels"
    return None


def wait_healthy(chassis: list[Any], timeout: float) -> dict[str, str]:
    """Wait up to `timeout` s for every controller to be healthy; returns chassis name -> problem for
    those that are not (empty when all are)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = {ch.name: found for ch in chassis if (found := problem(ch, len(chassis) - 1)) is not None}
        if not problems or time.monotonic() > deadline or \
                any(p.startswith(KEEPS_DYING) for p in problems.values()):
            return problems
        time.sleep(0.1)


def last_log_lines(path: str, count: int = LOG_LINES_SHOWN) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-count:]


def describe(problems: dict[str, str], chassis: list[Any]) -> str:
    """One paragraph per unhealthy chassis: its problem and its log's last lines."""
    by_name = {ch.name: ch for ch in chassis}
    parts = []
    for name, what in sorted(problems.items()):
        lines = last_log_lines(by_name[name].controller_log)
        parts.append(f"{name}: {what}; last lines of {by_name[name].controller_log}:\n"
                     + "\n".join(f"    {line}" for line in lines))
    return "\n".join(parts)
