"""The controller's Prometheus metrics (`dfflow-controller --metrics-port N`), served on its loop.

The counters are the ones the status socket shows, read at scrape time (one set of numbers, not
two): the daemon's own (handler errors, task restarts, ...), the NB bus' (reconnects, malformed
events and objects skipped), the migrator's (steps by outcome), OVSDB's and the NB writes'
(replicated or not). Only the apply latency is kept here, as a histogram: the status socket holds
just the last applies.

Restarts: a counter inside the process cannot survive the process. `process_start_time_seconds`
(prometheus-client's process collector) changes at every start (`changes()` over it counts them),
and `dfflow_controller_supervisor_restarts` is what the supervisor that started this process says
(the sandbox's respawn passes DFFLOW_RESTARTS; under systemd it is absent and 0).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import deque
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LOG = logging.getLogger(__name__)
RESTARTS_ENV = "DFFLOW_RESTARTS"
# A plan applied in a few ms is usual; a reconcile after a reconnect or a loaded host takes seconds.
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NAME = re.compile(r"[^a-zA-Z0-9_]")

# status() section -> (metric name, help); every numeric entry becomes one sample labelled by its key
COUNTER_SECTIONS = {
    "stats": ("dfflow_controller_events", "Controller counters (status 'stats'): handler_errors, task_crashes, "
                                          "nb_events, reconciles, flow_mods, ..."),
    "bus": ("dfflow_controller_nb_bus_events", "NB subscriber counters (status 'bus'): reconnects, disconnects, "
                                               "bad_events, bad_objects, loop_errors, resyncs, ..."),
    "migrations": ("dfflow_controller_migration_steps", "Migration steps on this chassis by outcome "
                                                        "(status 'migrations')"),
    "ovsdb": ("dfflow_controller_ovsdb_events", "OVSDB counters (status 'ovsdb')"),
    "nb_writes": ("dfflow_controller_nb_writes", "NB writes by replication: replicated_writes, "
                                                 "unreplicated_writes, replica_wait_timeouts"),
}


class StatusCollector:
    """Counters and gauges from the daemon's status, at every scrape."""

    def __init__(self, status: Callable[[], dict[str, Any]], chassis: str):
        self.status, self.chassis = status, chassis
        self.restarts = int(os.environ.get(RESTARTS_ENV, "0") or 0)

    def collect(self) -> Iterator[Any]:
        status = self.status()
        for section, (name, doc) in COUNTER_SECTIONS.items():
            family = CounterMetricFamily(name, doc, labels=["chassis", "counter"])
            for key, value in sorted((status.get(section) or {}).items()):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    family.add_metric([self.chassis, _NAME.sub("_", key)], value)
            yield family
        gauges = {
            "dfflow_controller_nb_connected": ("1 while the NB subscriber is connected", status["nb_connected"]),
            "dfflow_controller_nb_behind": ("1 while the NB db is older than what was programmed",
                                            status["nb_behind"] is not None),
            "dfflow_controller_switch_connected": ("1 while br-int is connected", status["switch_connected"]),
            "dfflow_controller_flows": ("Flows this controller wants in br-int", status["flows"]),
            "dfflow_controller_outbox": ("Plans waiting to be applied", status["outbox"]),
            "dfflow_controller_supervisor_restarts": (f"Restarts by the supervisor (${RESTARTS_ENV})", self.restarts),
        }
        for name, (doc, value) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["chassis"])
            family.add_metric([self.chassis], float(value))
            yield family


class ObservedApplies(deque):
    """The daemon's `apply_timings`, which also observes every apply into the latency histogram."""

    def __init__(self, kept: deque, histogram: Histogram, chassis: str):
        super().__init__(kept, maxlen=kept.maxlen)
        self.histogram, self.chassis = histogram, chassis

    def append(self, timing: dict[str, Any]) -> None:
        super().append(timing)
        started = timing.get("event_ts")  # when the cause was seen (NB publish, OVSDB change)
        seconds = timing["applied_at"] - started if started else timing["bundle_ms"] / 1e3
        self.histogram.labels(self.chassis).observe(max(seconds, 0.0))


class ControllerMetrics:
    def __init__(self, daemon: Any):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(StatusCollector(daemon.status, daemon.chassis))
        self.apply_latency = Histogram(
            "dfflow_controller_apply_seconds", "From an event's cause (an NB write's publish, an OVSDB change) to "
            "the switch committing the flows it led to", ["chassis"], buckets=APPLY_BUCKETS, registry=self.registry)
        daemon.apply_timings = ObservedApplies(daemon.apply_timings, self.apply_latency, daemon.chassis)
        self.server: asyncio.AbstractServer | None = None

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> str:
        """Serve GET /metrics on host:port (0: any free port); returns the URL."""
        self.server = await asyncio.start_server(self._answer, host, port)
        bound = self.server.sockets[0].getsockname()
        return f"http://{bound[0]}:{bound[1]}/metrics"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path.split(b"?")[0] in (b"/metrics", b"/"):
                status, body, kind = b"200 OK", self.render(), CONTENT_TYPE_LATEST.encode()
            else:
                status, body, kind = b"404 Not Found", b"only GET /metrics here\n", b"text/plain"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
