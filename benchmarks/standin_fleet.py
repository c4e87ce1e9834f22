"""A fleet of stand-in chassis: a Redis NB db, a network spread over N chassis, and the processes
(benchmarks.standin_cloud) that run each chassis' real controller against a stand-in
Open vSwitch. Used by `dfflow-bench fanout` and its tests.

Topology: one network; `ports` resident ports (VIFs plugged, round-robin over the chassis, at least
one per chassis so every chassis follows the network), plus `movers` ports bound to chassis-1 with
no VIF, whose binding moves (Nova's binding activation) to measure the fan-out.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from dfflow.sandbox.redisproc import RedisServer
from benchmarks.standin_cloud import ask
from dfflow.models import CHASSIS_TOPIC, Chassis, LogicalPort, LogicalSwitch, Subnet
from dfflow.nb.store import NbApi

TOPIC = "fanout"
NETWORK = "fanout-net"


def chassis_name(i: int) -> str:
    return f"chassis-{i + 1}"


def _ip(n: int) -> str:
    return f"10.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}"


def _mac(n: int) -> str:
    return "fa:16:3e:%02x:%02x:%02x" % ((n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF)


class Fleet:
    def __init__(self, chassis: int, ports: int, movers: int, workers: int | None = None,
                 workdir: str | None = None):
        if chassis < 2:
            raise ValueError("chassis: at least 2 (a port moves from chassis-1 to chassis-2)")
        self.n, self.movers = chassis, movers
        self.ports = max(ports, chassis)
        self.workers = workers or min(2, chassis)
        self.workdir = workdir or tempfile.mkdtemp(prefix="dffan-", dir="/tmp")
        self.redis = RedisServer(os.path.join(self.workdir, "redis"), port=0)
        self.procs: list[subprocess.Popen] = []
        self.controls: list[str] = []
        self.mover_ids = [f"mover-{i}" for i in range(movers)]
        self.where = {pid: chassis_name(0) for pid in self.mover_ids}
        # The moves' NB client lives as long as the fleet, on a loop of its own, as the API server's does
        # (its pool's connections open once, not once per move).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nb: NbApi | None = None

    @property
    def nb_url(self) -> str:
        return self.redis.unix_url

    # -- life cycle -------------------------------------------------------------
    def up(self, timeout: float = 600.0, progress: Callable[[str], None] | None = None) -> None:
        self.redis.start()
        vifs = asyncio.run(self._seed())
        per = -(-self.n // self.workers)
        for w in range(self.workers):
            names = [chassis_name(i) for i in range(w * per, min(self.n, (w + 1) * per))]
            control = os.path.join(self.workdir, f"worker-{w}.sock")
            config = {"nb": self.nb_url, "dir": self.workdir, "control": control, "total_chassis": self.n,
                      # the controller's OpenFlow requests wait behind every chassis of their process
                      "request_timeout": max(30.0, 0.3 * per),
                      "chassis": [{"name": n, "index": int(n.split("-")[1]), "tunnel_ip": _ip(int(n.split("-")[1])),
                                   "vifs": vifs.get(n, [])} for n in names]}
            path = os.path.join(self.workdir, f"worker-{w}.json")
            with open(path, "w") as f:
                json.dump(config, f)
            log = open(os.path.join(self.workdir, f"worker-{w}.log"), "w")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.standin_cloud", path],
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            self.controls.append(control)
        self.wait_ready(timeout, progress)

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self._loop is not None:
            if self._nb is not None:
                self._loop.run_until_complete(self._nb.close())
            self._loop.close()
            self._loop = self._nb = None
        self.redis.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    async def _seed(self) -> dict[str, list[dict[str, str]]]:
        nb = NbApi(self.nb_url)
        try:
            for i in range(self.n):  # registered up front: the controllers' own registration is an update
                await nb.create(Chassis(id=chassis_name(i), topic=CHASSIS_TOPIC, tunnel_ip=_ip(i + 1),
                                        tunnel_type="geneve", status="up", last_seen=time.time()))
            await nb.create(LogicalSwitch(id=NETWORK, topic=TOPIC, name=NETWORK, segmentation_id=5000))
            await nb.create(Subnet(id=f"{NETWORK}-subnet", topic=TOPIC, lswitch=NETWORK, cidr="172.16.0.0/12",
                                   gateway_ip="172.16.0.1"))
            vifs: dict[str, list[dict[str, str]]] = {}
            for p in range(self.ports):
                host = chassis_name(p % self.n)
                port = LogicalPort(id=f"vm-{p}", topic=TOPIC, lswitch=NETWORK, mac=_mac(p + 1),
                                   ips=[self._port_ip(p)], binding_chassis=host)
                await nb.create(port)
                vifs.setdefault(host, []).append({"name": f"tap{p}", "iface_id": port.id, "mac": port.mac})
            for i, pid in enumerate(self.mover_ids):
                await nb.create(LogicalPort(id=pid, topic=TOPIC, lswitch=NETWORK, mac=_mac(0x800000 + i),
                                            ips=[self._port_ip(0x80000 + i)], binding_chassis=chassis_name(0)))
            return vifs
        finally:
            await nb.close()

    @staticmethod
    def _port_ip(n: int) -> str:
        n += 10
        return f"172.{16 + ((n >> 16) & 0x0F)}.{(n >> 8) & 0xFF}.{n & 0xFF}"

    def ask_all(self, request: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for control in self.controls:
            answer = ask(control, request, timeout)
            for key, value in answer.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key].update(value)
                elif isinstance(value, list) and isinstance(merged.get(key), list):
                    merged[key].extend(value)
                else:
                    merged[key] = value
        return merged

    def wait_ready(self, timeout: float, progress: Callable[[str], None] | None = None) -> None:
        deadline = time.monotonic() + timeout
        shown = -1
        while True:
            for proc, control in zip(self.procs, self.controls):
                if proc.poll() is not None:
                    raise RuntimeError(f"stand-in worker exited {proc.returncode}\n{self._log_tail()}")
            state = None
            if all(os.path.exists(c) for c in self.controls):
                state = self.ask_all({"op": "ready"})
                if state["exited"]:
                    raise RuntimeError(f"controllers exited: {state['exited']}\n{self._log_tail()}")
                if len(state["ready"]) == self.n:
                    return
                if progress and len(state["ready"]) != shown:
                    shown = len(state["ready"])
                    progress(f"{shown}/{self.n} chassis ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"stand-in chassis not ready within {timeout:.0f} s: "
                                   f"{len(state['ready']) if state else 0}/{self.n}")
            time.sleep(0.2)

    def _log_tail(self, lines: int = 30) -> str:
        tails = []
        for w in range(len(self.procs)):
            with open(os.path.join(self.workdir, f"worker-{w}.log"), errors="replace") as f:
                tails.append(f"worker-{w}.log:\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(tails)

    # -- moves ------------------------------------------------------------------
    def move(self, port_ids: list[str], dest: str, timeout: float = 300.0) -> dict[str, Any]:
        """Rewrite the ports' binding to `dest` in one burst of concurrent NB writes; wait until
        every chassis heard every write and applied what followed; return the applies they caused."""
        before = self.ask_all({"op": "progress"})
        cpu_before = self.ask_all({"op": "cpu"})
        started = time.time()
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._write_bindings(port_ids, dest))
        written = time.time()
        deadline = time.monotonic() + timeout
        while True:
            now = self.ask_all({"op": "progress"})  # per chassis: [NB port events heard, idle]
            if all(now[c][0] - before[c][0] >= len(port_ids) and now[c][1] for c in now):
                break
            if time.monotonic() > deadline:
                lagging = [c for c in now if now[c][0] - before[c][0] < len(port_ids)]
                raise RuntimeError(f"move of {len(port_ids)} ports not applied within {timeout:.0f} s; "
                                   f"{len(lagging)} chassis lag, e.g. {lagging[:5]}")
            time.sleep(0.05)
        cpu = sum(spent - cpu_before.get(worker, spent) for worker, spent in self.ask_all({"op": "cpu"}).items())
        for pid in port_ids:
            self.where[pid] = dest
        causes = [f"{LogicalPort.table}:{pid}" for pid in port_ids]
        timings = self.ask_all({"op": "timings", "causes": causes, "since": started})
        return {"started": started, "written": written, "timings": timings, "cpu_s": cpu, "events": len(port_ids)}

    async def _write_bindings(self, port_ids: list[str], dest: str) -> None:
        """The binding changes, concurrent (Nova's `max_concurrent_live_migrations` migrations each make
        their own call), each one `NbApi.modify`: the write the API's binding activation makes."""
        if self._nb is None:
            self._nb = NbApi(self.nb_url)
        await asyncio.gather(*(self._nb.modify(LogicalPort.table, pid, lambda p: p.replace(binding_chassis=dest))
                               for pid in port_ids))

    def converged(self) -> dict[str, Any]:
        return self.ask_all({"op": "converged"})
