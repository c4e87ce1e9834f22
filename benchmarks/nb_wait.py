"""What waiting for the replica (Redis WAIT after each NB write) costs: NB creates on a real Sentinel
topology (a primary, a replica, three sentinels on loopback), with wait_replicas=0 and 1."""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from typing import Any

from dfflow.sandbox.sentinelproc import SentinelNb
from dfflow.models import LogicalSwitch
from dfflow.nb.store import NbApi


async def _timed_creates(url: str, writes: int, first_id: int) -> list[float]:
    nb = NbApi(url)
    try:
        await nb.ping()
        spent = []
        for i in range(first_id, first_id + writes):
            started = time.perf_counter()
            await nb.create(LogicalSwitch(id=f"bench{i}", topic="bench", name=f"bench{i}", segmentation_id=1000 + i))
            spent.append((time.perf_counter() - started) * 1e3)
        return spent
    finally:
        await nb.close()


def _summary(spent: list[float]) -> dict[str, float]:
    ordered = sorted(spent)
    return {"writes": len(spent), "mean_ms": round(statistics.fmean(spent), 3),
            "p50_ms": round(ordered[len(ordered) // 2], 3), "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 3)}


def run(writes: int = 2000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dfflow-nb-wait-", dir="/tmp") as workdir:
        topology = SentinelNb(workdir).start()
        try:
            no_wait = _summary(asyncio.run(_timed_creates(topology.url + "?wait_replicas=0", writes, 0)))
            wait = _summary(asyncio.run(_timed_creates(topology.url, writes, writes)))
        finally:
            topology.stop()
    return {"wait_replicas=0": no_wait, "wait_replicas=1": wait,
            "wait_cost_ms": round(wait["mean_ms"] - no_wait["mean_ms"], 3)}
