"""Many stand-in chassis in one process: the real controller daemon per chassis, in-process.

`python -m benchmarks.standin_cloud CONFIG.json` runs the chassis listed in the config,
each a real `ControllerDaemon` (engine, NB bus subscriber, migrator, OpenFlow server, its own
Interface monitor) against a `StandinSwitch` and a `StandinOvsdbServer` (benchmarks.standin),
all on one asyncio loop. A process per chassis does not fit at 1,000 chassis: an idle controller
process holds ~90 MB (measured here: 1,000 of them ~90 GB on a 24 GiB machine), and 1,000 processes on 2 cores
spend the fan-out in context switches; several of these processes share the chassis instead.

It answers requests on a unix socket (one JSON object per line, one answer per line):
`ready`, `progress` (each chassis' NB port events heard and whether it is idle), `counters`, `timings`
(applies caused by given NB objects), `cpu` (the process' CPU time), `resources` (its CPU time and RSS),
`converged` (each chassis' flows read back from its switch against what its engine wants, by the
controller's own reconcile), `plug`/`unplug` (a VIF on a chassis), `stop`.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import resource
import signal
import socket
import sys
import time
from typing import Any

from controller.collector import collect_young_less_often
from controller.daemon import ControllerDaemon
from controller.reconcile import reconcile
from controller.status import GcPauses
from benchmarks.standin import StandinConntrackSweeper, StandinOvsdb, StandinOvsdbServer, StandinSwitch

LOG = logging.getLogger(__name__)
START_BATCH = 10  # chassis started at once; each batch is connected before the next starts
START_TIMEOUT = 120.0
START_ATTEMPTS = 5  # a controller that fails at start-up (a time-out on a loaded machine) starts again


class ProcessGcPauses(GcPauses):
    """The GC pauses of this process, recorded once for all its chassis (installed by the process:
    each daemon's install and uninstall do nothing)."""

    def install(self) -> None:
        pass

    def uninstall(self) -> None:
        pass


PROCESS_GC_PAUSES = ProcessGcPauses()


class StandinChassis:
    def __init__(self, name: str, index: int, tunnel_ip: str, nb_url: str, workdir: str,
                 request_timeout: float | None = None):
        self.name, self.tunnel_ip, self.nb_url = name, tunnel_ip, nb_url
        self.request_timeout = request_timeout
        self.of_listen = f"unix:{os.path.join(workdir, name)}.of"
        self.server = StandinOvsdbServer(os.path.join(workdir, f"{name}.ovsdb"))
        self.switch = StandinSwitch(datapath_id=index + 1)
        self.daemon = self._new_daemon()
        self.task: asyncio.Task | None = None
        self.exit: str | None = None
        self.restarts = 0

    def _new_daemon(self) -> ControllerDaemon:
        daemon = ControllerDaemon(self.name, self.tunnel_ip, self.nb_url, self.server.remote, "br-int",
                                  self.of_listen)
        daemon.ovsdb = StandinOvsdb(self.server, self.switch)
        # (the sender asks it too)
        daemon.conntrack_sweeper = daemon.sender.sweeper = StandinConntrackSweeper.replacing(daemon.conntrack_sweeper)
        daemon.gc_pauses = PROCESS_GC_PAUSES  # one collector per process: one callback, not one per chassis
        # this process collects and freezes what start-up made once per wave (a collection per chassis would
        # walk the heaps of all the chassis before it); the controller's young threshold is kept
        daemon.settle_collector = collect_young_less_often
        if self.request_timeout is not None:
            # This loop answers a chassis' OpenFlow request after the events of all its other chassis: in a
            # burst of K events at C chassis per process, C x K handlings (~0.5 ms each) come first.
            daemon.of.request_timeout = self.request_timeout
        return daemon

    async def restart(self) -> None:
        """Start a controller failed at start-up again (as systemd's Restart=on-failure would)."""
        LOG.warning("controller of %s failed at start-up (%s); starting it again", self.name, self.exit)
        self.restarts += 1
        self.exit = None
        try:  # release what the failed one had opened, as its process' exit would
            await self.daemon.stop()
        except Exception:
            LOG.exception("stopping the failed controller of %s", self.name)
        self.daemon = self._new_daemon()
        self.task = asyncio.get_running_loop().create_task(self.daemon.run())
        self.task.add_done_callback(self._ended)

    def plug(self, vif: dict[str, str]) -> None:
        self.server.plug(vif["name"], {"iface-id": vif["iface_id"], "attached-mac": vif["mac"],
                                       "iface-status": "active"})

    async def start(self) -> None:
        await self.server.start()
        self.task = asyncio.get_running_loop().create_task(self.daemon.run())
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self.exit = "cancelled"
        elif task.exception() is not None:
            self.exit = f"{type(task.exception()).__name__}: {task.exception()}"
        else:
            self.exit = f"exited {task.result()}: {self.daemon.exit_reason}"

    def started(self) -> bool:
        """Through its start-up: flows computed from the first snapshot, the switch connected."""
        return not self.daemon.engine.loading and self.daemon.dp is not None

    def ready(self, peers: int) -> bool:
        d = self.daemon
        return (d.dp is not None and len(d.engine.view.tunnels) == peers and d.sender.idle)

    async def converged(self) -> dict[str, Any]:
        """What differs between the flows the switch holds and what the engine wants."""
        d = self.daemon
        if d.dp is None:
            return {"connected": False}
        dumped = await d.dp.dump_flows()
        plan, unchanged = reconcile(dumped, d.engine.desired(), {app.app_id for app in d.engine.apps})
        return {"connected": True, "held": len(self.switch.table.flows), "wanted": len(d.engine.desired()),
                "unchanged": unchanged, "missing": len(plan.adds), "stale": len(plan.deletes),
                "handler_errors": d.stats.get("handler_errors", 0)}

    async def stop(self) -> None:
        self.daemon._stopping.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        await self.switch.stop()
        await self.server.stop()


class StandinCloud:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.peers = config["total_chassis"] - 1
        self.chassis = {c["name"]: StandinChassis(c["name"], c["index"], c["tunnel_ip"], config["nb"],
                                                  config["dir"], config.get("request_timeout"))
                        for c in config["chassis"]}
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        for spec in self.config["chassis"]:
            for vif in spec.get("vifs", []):
                self.chassis[spec["name"]].plug(vif)
        server = await asyncio.start_unix_server(self._serve, path=self.config["control"])
        names = list(self.chassis)
        loop = asyncio.get_running_loop()
        for i in range(0, len(names), START_BATCH):
            batch = [self.chassis[n] for n in names[i:i + START_BATCH]]
            for ch in batch:
                await ch.start()
            await asyncio.sleep(0)
            for sig in (signal.SIGTERM, signal.SIGINT):  # each daemon installs its own; one stop for all
                loop.add_signal_handler(sig, self.stopping.set)
            if self.stopping.is_set():
                break
            # A wave at a time, each through its start-up (flows computed, switch connected) before the
            # next: hundreds of start-ups at once on one loop would time each other's NB reads out.
            deadline = time.monotonic() + START_TIMEOUT
            while not all(ch.started() or ch.exit for ch in batch) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                for ch in batch:
                    if ch.exit and ch.restarts < START_ATTEMPTS - 1:
                        await ch.restart()
            gc.freeze()  # what the wave's start-up made: out of the sight of this process' later collections
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        freezer = loop.create_task(self._freeze_when_ready())
        await self.stopping.wait()
        freezer.cancel()
        server.close()
        await asyncio.gather(*(ch.stop() for ch in self.chassis.values()))

    async def _freeze_when_ready(self) -> None:
        """Once every chassis is up, take what start-up made out of the collector's sight (gc.freeze, as
        after each wave of start-ups): a full collection here walks the heaps of all the chassis of this
        process, and one took up to a second at 50 chassis, a pause each controller's own process would
        not have."""
        while not all(ch.ready(self.peers) for ch in self.chassis.values()):
            await asyncio.sleep(0.5)
        gc.collect()
        gc.freeze()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line)
            try:
                answer = await self._answer(request)
            except Exception as exc:
                LOG.exception("stand-in cloud: request %s failed", request.get("op"))
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "ready":
            return {"ready": sorted(n for n, ch in self.chassis.items() if ch.ready(self.peers)),
                    "exited": {n: ch.exit for n, ch in self.chassis.items()
                               if ch.exit and ch.restarts >= START_ATTEMPTS - 1}}
        if op == "timings":
            return self._timings(request)
        if op == "progress":  # what a move's wait polls, every 50 ms: kept small, it runs on the chassis' loop
            return {n: [ch.daemon.stats.get("nb_events.lport", 0), ch.ready(self.peers)]
                    for n, ch in self.chassis.items()}
        if op == "counters":
            return {n: {"lport_events": ch.daemon.stats.get("nb_events.lport", 0),
                        "idle": ch.ready(self.peers), "handler_errors": ch.daemon.stats.get("handler_errors", 0),
                        "conntrack_sweep": {k: v for k, v in ch.daemon.stats.items() if k.startswith("conntrack_sweep.")},
                        "switch": dict(ch.switch.stats), "engine": dict(ch.daemon.engine.stats)}
                    for n, ch in self.chassis.items()}
        if op == "cpu":  # this process' CPU time: what its chassis cost, all of them together
            return {f"worker-{os.getpid()}": time.process_time()}
        if op == "resources":  # CPU time and memory of this process, with how many chassis it runs
            return {f"worker-{os.getpid()}": {"cpu_s": time.process_time(), "rss_mb": _rss_mb(),
                                              "chassis": len(self.chassis)}}
        if op == "converged":
            names = request.get("chassis") or list(self.chassis)
            return {n: await self.chassis[n].converged() for n in names}
        if op == "plug":
            self.chassis[request["chassis"]].plug(request["vif"])
            return {"ok": True}
        if op == "unplug":
            self.chassis[request["chassis"]].server.unplug(request["name"])
            return {"ok": True}
        if op == "stop":
            self.stopping.set()
            return {"ok": True}
        raise ValueError(f"op {op!r} is unknown")

    def _timings(self, request: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        causes, since = set(request["causes"]), request.get("since", 0.0)
        return {n: [t for t in ch.daemon.apply_timings if t.get("cause") in causes
                    and t.get("event_ts", 0.0) >= since] for n, ch in self.chassis.items()}


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ask(control: str, request: dict[str, Any], timeout: float = 120.0) -> Any:
    """One request to a stand-in cloud process (blocking)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(control)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if isinstance(answer, dict) and "error" in answer:
        raise RuntimeError(f"stand-in cloud at {control}: {request['op']}: {answer['error']}")
    return answer


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        config = json.load(f)
    GcPauses.install(PROCESS_GC_PAUSES)
    logging.basicConfig(level=config.get("log_level", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(StandinCloud(config).run())


if __name__ == "__main__":  # pragma: no cover
    main()
