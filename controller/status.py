"""What a running controller says about itself: its status as JSON on a unix socket (read by
dfflow.status.read_status), and its GC pauses."""
from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from collections import Counter, deque
from typing import Any


class GcPauses:
    """Every garbage collection of this process: how many per generation, and the recent ones with
    their pause (a collection stops the loop, and a full one over a large heap can take milliseconds)."""

    def __init__(self, kept: int = 50):
        self.counts: Counter[int] = Counter()
        self.recent: deque[tuple[float, int, float]] = deque(maxlen=kept)
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.counts[generation] += 1
            self.recent.append((time.time(), generation, (time.perf_counter() - self._started) * 1e3))

    def status(self) -> dict[str, Any]:
        return {"collections": {str(g): n for g, n in sorted(self.counts.items())},
                "max_ms": round(max((p for _, _, p in self.recent), default=0.0), 3),
                "recent": [[round(t, 6), g, round(p, 3)] for t, g, p in self.recent]}


def controller_status(daemon: Any) -> dict[str, Any]:
    """The status of a controller.daemon.ControllerDaemon (its socket's answer, and its metrics)."""
    engine, bus = daemon.engine, daemon.bus
    cookies = engine.flow_cookies()
    return {
        "chassis": daemon.chassis, "pid": os.getpid(), "switch_connected": daemon.dp is not None,
        "datapath_type": daemon.datapath_type,
        "stats": dict(daemon.stats), "engine": dict(engine.stats), "bus": dict(bus.stats),
        "migrations": dict(daemon.migrator.stats), "strategy": daemon.migrator.strategy,
        "ovsdb": dict(daemon.ovsdb.stats), "nb_connected": bus.connected.is_set(),
        "nb_behind": bus.behind,
        "bus_errors": len(bus.errors), "bad_data": list(bus.bad), "topics": sorted(bus.topics),
        "vifs": sorted(engine.view.vifs), "tunnels": engine.view.tunnels,
        "pending_vifs": sorted(daemon.pending_vifs), "flows": len(cookies),
        "flows_by_cookie": dict(Counter(f"{c:#x}" for c in cookies)),
        "errors": (daemon.errors + engine.errors)[-5:], "apply_timings": list(daemon.apply_timings),
        "outbox": daemon.sender.outbox.qsize(), "sending": daemon.sender.sending, "gc": daemon.gc_pauses.status(),
        "port_status": daemon.port_status.status(), "conntrack_sweep": daemon.conntrack_sweeper.status(),
        "nb_writes": dict(daemon.nb.stats), "metrics_url": daemon.metrics_url,
    }


async def serve_status(path: str, status: Any) -> asyncio.AbstractServer:
    """Answer every connection to the unix socket `path` with `status()` as one line of JSON."""
    if os.path.exists(path):
        os.unlink(path)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(status()).encode() + b"\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_unix_server(answer, path=path)
