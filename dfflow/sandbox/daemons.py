"""The processes a sandbox runs besides Open vSwitch: the NB's redis-server (or a Sentinel set), its
Nova API, the cloud's API (`dfflow api` or neutron-server), one supervised controller and one os-vif
agent per chassis. A mixin of `topology.Sandbox`, whose state (`_txn`, `_load`, `chassis`) it uses."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, Sequence

from . import netns, neutronproc, nova_events, procs, respawn
from .netns import SandboxError
from .records import (API_DFFLOW, API_NEUTRON, DATAPATH_TYPE, INT_BRIDGE, TCP_OF_PORT, Chassis,
                      default_controller_cmd)
from .redisproc import RedisServer, free_port
from .sentinelproc import SentinelNb


class SandboxDaemons:
    def _start_sentinel_nb(self) -> None:
        """A primary, a replica and three sentinels on loopback ports (see sentinelproc)."""
        ha = SentinelNb(os.path.join(self.dir, "nb-sentinel"))
        shutil.rmtree(ha.dir, ignore_errors=True)
        try:
            ha.start()
        finally:
            with self._txn() as st:
                st["nb_sentinel"] = ha.to_state()
        with self._txn() as st:
            st["nb"] = {"url": ha.url, "tcp_url": ha.url, "external": False, "sentinel": True}

    def sentinel_nb(self) -> SentinelNb:
        """The sentinel NB of a sandbox started with `nb_url="sentinel"` (fault tests kill its primary)."""
        st = self._load() or {}
        if not st.get("nb_sentinel"):
            raise SandboxError(f"sandbox {self.dir} was not started with --nb sentinel")
        return SentinelNb.from_state(st["nb_sentinel"])

    def revive_nb_server(self, ha: SentinelNb, server: RedisServer) -> RedisServer:
        """Start a killed data server of the sentinel NB again as the primary's replica (`SentinelNb.revive`)
        and record its new process, which a later failover kills; returns the primary settled on."""
        try:
            return ha.revive(server)
        finally:
            with self._txn() as st:
                st["nb_sentinel"] = ha.to_state()

    def _start_nova(self) -> None:
        """The sandbox's Nova API (its os-server-external-events, see nova_events.py): Neutron's Nova
        notifier posts there; its URL is `nova.url` in the state (`nova_url` in `status()`)."""
        port = free_port()
        url = nova_events.url_of(port)
        proc = nova_events.start(self.dir, port)
        with self._txn() as st:
            st["nova"] = {"url": url, "pid": proc.pid, "starttime": procs.starttime(proc.pid)}
        nova_events.wait_ready(proc, url)

    def _start_api(self) -> None:
        """The Neutron-compatible API (`dfflow api`) on a free loopback port: the sandbox's cloud
        creates ports and updates bindings through it, as Nova does through Neutron; it sends
        network-vif-plugged/unplugged to the sandbox's Nova."""
        with self._txn() as st:
            nb, nova = st["nb"], st.get("nova") or {}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "dfflow.cli", "api", "--nb", nb.get("tcp_url") or nb["url"],
                "--listen", f"127.0.0.1:{port}"] + (["--nova-url", nova["url"]] if nova.get("url") else [])
        with open(os.path.join(self.dir, "api.log"), "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.dir, start_new_session=True)
        with self._txn() as st:
            st["api"] = {"kind": API_DFFLOW, "url": url, "pid": proc.pid, "starttime": procs.starttime(proc.pid)}
        if not procs.wait_http_ok(proc, f"{url}/v2.0", 20):
            raise SandboxError(f"dfflow api did not start (see {os.path.join(self.dir, 'api.log')})")

    @property
    def neutron_dir(self) -> str:
        return os.path.join(self.dir, "neutron")

    @property
    def api_kind(self) -> str:
        """What serves the cloud's API: `dfflow api` (API_DFFLOW) or neutron-server (API_NEUTRON)."""
        return ((self._load() or {}).get("api") or {}).get("kind", API_DFFLOW)

    @property
    def api_notifies_our_nova(self) -> bool:
        """Whether the cloud's API tells this sandbox's Nova of VIF events: not when the API is a server
        the sandbox did not start, nor when its neutron-server's notifier was pointed elsewhere."""
        st = self._load() or {}
        api = st.get("api") or {}
        if api.get("external"):
            return False
        if api.get("kind") == API_NEUTRON:
            return (st.get("neutron") or {}).get("nova_url") == (st.get("nova") or {}).get("url")
        return True

    def neutron_server(self) -> neutronproc.NeutronServer:
        """The neutron-server this sandbox started (`up(neutron=True)`)."""
        st = self._load() or {}
        if not st.get("neutron"):
            raise SandboxError(f"sandbox {self.dir} started no neutron-server")
        return neutronproc.NeutronServer.from_state(st["neutron"])

    def _start_neutron(self, api: dict[str, Any]) -> None:
        """neutron-server with the dfflow driver as the cloud's API: a running one (`api["url"]`), or one
        of the sandbox's own, writing to the sandbox's NB db."""
        if api["external"]:
            with self._txn() as st:
                st["api"] = dict(api)
            return
        with self._txn() as st:
            nb = st["nb"]
            nova_url = api.get("nova_url") or (st.get("nova") or {}).get("url")
        shutil.rmtree(self.neutron_dir, ignore_errors=True)
        server = neutronproc.NeutronServer(self.neutron_dir, nb.get("tcp_url") or nb["url"], nova_url)

        def record(started: neutronproc.NeutronServer) -> None:
            with self._txn() as st:
                st["neutron"] = started.to_state()
                st["api"] = dict(api, url=started.url, pid=started.pid, starttime=started.starttime)
        server.start(record)

    # --- the NB's redis-server (fault tests) ---------------------------------------------------------
    def stop_nb(self) -> None:
        """Stop the sandbox's own redis-server (its append-only file stays)."""
        with self._txn() as st:
            if not st.get("redis"):
                raise SandboxError("this sandbox uses an external NB db (--nb): not ours to stop")
            RedisServer.from_state(st["redis"]).stop()

    def start_nb(self) -> None:
        """Start it again, same port and directory: it reloads the NB from its append-only file."""
        with self._txn() as st:
            if not st.get("redis"):
                raise SandboxError("this sandbox uses an external NB db (--nb): not ours to start")
            redis = RedisServer.from_state(st["redis"])
            if not redis.running():
                redis.start()
            st["redis"] = redis.to_state()

    # --- controllers ------------------------------------------------------------------------------
    def _start_controller(self, chassis: str, cmd: list[str], of_transport: str) -> Chassis:
        ch = self.chassis(chassis)
        extra = list((self._load() or {}).get("controller_args") or [])
        nb_url = self.nb_url
        if of_transport == "unix":
            sock = os.path.join(ch.rundir, "openflow.sock")  # OVS accepts socket controllers only here
            ch.of_listen, ch.of_target, ch.of_port = f"unix:{sock}", f"unix:{sock}", None
        else:
            ch.of_listen = f"127.0.0.1:{TCP_OF_PORT}"
            ch.of_target, ch.of_port = f"tcp:127.0.0.1:{TCP_OF_PORT}", TCP_OF_PORT
        ovs = ch.ovs()
        ch.controller_argv = list(cmd) + [
            "--chassis", ch.name, "--tunnel-ip", ch.tunnel_ip, "--nb", nb_url or "",
            "--ovsdb", ovs.ovsdb_url, "--bridge", INT_BRIDGE, "--of-listen", ch.of_listen,
            "--status-socket", ch.status_socket, "--datapath-type", DATAPATH_TYPE] + extra
        argv = ch.controller_argv if of_transport == "unix" else netns.exec_argv(ch.namespace, ch.controller_argv)
        # OVS retries with back-off up to max_backoff: keep it short so a late controller is found fast
        ovs.vsctl("--", "set-controller", INT_BRIDGE, ch.of_target,
                  "--", "set", "Controller", INT_BRIDGE, "max_backoff=1000")
        record = ch.supervisor_record
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record)
        with open(ch.controller_log, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dfflow.sandbox.respawn", record, "--", *argv],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=ch.dir, start_new_session=True)
        ch.supervisor_pid, ch.supervisor_starttime = proc.pid, procs.starttime(proc.pid)
        self._save_chassis(ch)
        deadline = time.monotonic() + 10
        while not (started := respawn.read_record(record)).get("pid"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SandboxError(f"the supervisor of {ch.name}'s controller did not start it; see {ch.controller_log}")
            time.sleep(0.01)
        ch.controller_pid, ch.controller_starttime = started["pid"], started["starttime"]
        self._save_chassis(ch)
        return ch

    # --- os-vif agents (nova-compute's os-vif, see osvif_agent.py) --------------------------------
    def osvif_socket(self, chassis: str) -> str:
        """The socket of the chassis' os-vif agent, started now if it does not run."""
        ch = self.chassis(chassis)
        if not procs.same_process(ch.osvif_pid, ch.osvif_starttime):
            ch = self._start_osvif(chassis)
        return self._wait_osvif(ch)

    def _start_osvif(self, chassis: str) -> Chassis:
        ch = self.chassis(chassis)
        with contextlib.suppress(OSError):
            os.unlink(ch.osvif_socket)
        argv = netns.exec_argv(ch.namespace, [sys.executable, "-m", "dfflow.sandbox.osvif_agent",
                                              "--ovsdb", ch.ovs().ovsdb_url, "--socket", ch.osvif_socket])
        with open(os.path.join(ch.dir, "osvif.log"), "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=ch.dir, start_new_session=True)
        ch.osvif_pid, ch.osvif_starttime = proc.pid, procs.starttime(proc.pid)
        self._save_chassis(ch)
        return ch

    @staticmethod
    def _wait_osvif(ch: Chassis, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not os.path.exists(ch.osvif_socket):
            if not procs.same_process(ch.osvif_pid, ch.osvif_starttime) or time.monotonic() > deadline:
                raise SandboxError(f"the os-vif agent of {ch.name} did not start (see "
                                   f"{os.path.join(ch.dir, 'osvif.log')})")
            time.sleep(0.05)
        return ch.osvif_socket

    def start_controller(self, chassis: str) -> Chassis:
        """(Re)start one chassis' controller, e.g. after `stop_controller` in a restart test."""
        st = self._load() or {}
        cmd = self.controller_cmd or default_controller_cmd()
        if shutil.which(cmd[0]) is None:
            raise SandboxError(f"controller command {cmd[0]!r} not found")
        self.stop_controller(chassis)
        return self._start_controller(chassis, cmd, st.get("of_transport", "unix"))

    @property
    def controller_args(self) -> list[str]:
        """What is appended to every controller's command line (see `up`)."""
        return list((self._load() or {}).get("controller_args") or [])

    def set_controller_args(self, args: Sequence[str]) -> None:
        """Extra controller arguments for the next `start_controller` (running ones keep theirs)."""
        with self._txn() as st:
            st["controller_args"] = list(args)

    def stop_controller(self, chassis: str, timeout: float = 5.0) -> None:
        ch = self.chassis(chassis)
        pid, start = ch.controller_now()
        victims = [p for p, t in ((ch.supervisor_pid, ch.supervisor_starttime), (pid, start),
                                  (ch.controller_pid, ch.controller_starttime)) if procs.same_process(p, t)]
        procs.terminate_all(victims, timeout)  # the supervisor passes SIGTERM on and does not restart
        ch.controller_pid = ch.controller_starttime = ch.supervisor_pid = ch.supervisor_starttime = None
        self._save_chassis(ch)

    def _save_chassis(self, ch: Chassis) -> None:
        with self._txn() as st:
            st["chassis"] = [asdict(ch) if c["name"] == ch.name else c for c in st["chassis"]]
