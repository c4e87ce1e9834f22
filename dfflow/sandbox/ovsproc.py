"""One Open vSwitch instance (ovsdb-server + ovs-vswitchd) with private paths.

Every chassis of a sandbox, and every OVS-backed test, runs its own instance:
its own run/db/log directory, db socket, unixctl sockets and pidfiles, so that
several instances (each with a bridge called br-int) coexist on one machine.
Optionally the daemons run inside a network namespace.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass

from . import priorities, slices

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
REQUIRED_BINARIES = ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
# The niceness Open vSwitch's own start script gives both daemons (ovs-ctl's --ovsdb-server-priority and
# --ovs-vswitchd-priority, -10 by default; Debian's openvswitch-switch starts them through it). At niceness 0
# a userspace datapath's forwarding thread waited behind the emulated Nova, Neutron and guests on a small
# machine, and every VM behind it went silent at once (benchmarks/RESULTS.md, branch `evac-tails`). Each
# daemon detaches into a session of its own, weighed at the same niceness (priorities.session_at).
OVS_NICENESS = -10


class OvsError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    return [b for b in REQUIRED_BINARIES if shutil.which(b) is None]


@dataclass
class OvsInstance:
    """Paths of one instance; `start()` launches it, `stop()` ends it by PID."""

    rundir: str
    netns: str | None = None

    @property
    def db_sock(self) -> str:
        return os.path.join(self.rundir, "db.sock")

    @property
    def ovsdb_url(self) -> str:
        return f"unix:{self.db_sock}"

    @property
    def vswitchd_ctl(self) -> str:
        return os.path.join(self.rundir, "ovs-vswitchd.ctl")

    @property
    def ovsdb_ctl(self) -> str:
        return os.path.join(self.rundir, "ovsdb-server.ctl")

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OVS_RUNDIR=self.rundir, OVS_DBDIR=self.rundir, OVS_LOGDIR=self.rundir,
                   OVS_SYSCONFDIR=self.rundir, OVS_PKGDATADIR="/usr/share/openvswitch")
        return env

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def _daemon_prefix(self) -> list[str]:
        """How a daemon is started: in the namespace, at the niceness ovs-ctl gives it (an unprivileged
        user's `nice` warns and starts it at its own niceness)."""
        return self._prefix() + ["nice", "-n", str(OVS_NICENESS)]

    def _weigh_session(self, daemon: str) -> None:
        """The detached daemon's session weighed at OVS_NICENESS against the others (priorities.session_at)."""
        pid = self.pid(daemon)
        if pid is None:
            raise OvsError(f"{daemon} left no pidfile in {self.rundir}")
        priorities.session_at(pid, OVS_NICENESS, f"{daemon} of {self.rundir}")

    def pidfile(self, daemon: str) -> str:
        return os.path.join(self.rundir, f"{daemon}.pid")

    def pid(self, daemon: str) -> int | None:
        try:
            with open(self.pidfile(daemon)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout: float = 10.0) -> None:
        missing = missing_binaries()
        if missing:
            raise OvsError(
                f"Open vSwitch binaries missing: {', '.join(missing)}; "
                "install them with `apt-get install -y openvswitch-switch`")
        os.makedirs(self.rundir, exist_ok=True)
        db = os.path.join(self.rundir, "conf.db")
        if not os.path.exists(db):
            self._run(["ovsdb-tool", "create", db, OVS_SCHEMA])
        self._start_ovsdb()
        self.vsctl("--no-wait", "init")
        self._start_vswitchd(timeout)

    def _start_vswitchd(self, timeout: float) -> None:
        self._run(self._daemon_prefix() + [
            "ovs-vswitchd", self.ovsdb_url, f"--unixctl={self.vswitchd_ctl}",
            f"--pidfile={self.pidfile('ovs-vswitchd')}",
            f"--log-file={os.path.join(self.rundir, 'ovs-vswitchd.log')}", "--detach", "--no-chdir",
            "-vconsole:off", "-vfile:info",
        ])
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.vswitchd_ctl):
            if time.monotonic() > deadline:
                raise OvsError(f"ovs-vswitchd did not start in {self.rundir}")
            time.sleep(0.02)
        self._weigh_session("ovs-vswitchd")
        self._forwarding_thread_preempts()

    def _forwarding_thread_preempts(self) -> None:
        """ovs-vswitchd's main thread forwards every packet of the userspace datapath (no PMD threads here):
        it takes a CPU when a packet wakes it, as the kernel's datapath would (slices.py). The threads it
        starts afterwards inherit the slice (the kernel copies it on clone): its handler, revalidator, urcu
        and conntrack cleaner threads, which wake briefly and rarely."""
        pid = self.pid("ovs-vswitchd")
        if pid is not None:
            slices.shorten_slice(pid, f"ovs-vswitchd's forwarding thread of {self.rundir}")

    def _start_ovsdb(self) -> None:
        self._run(self._daemon_prefix() + [
            "ovsdb-server", os.path.join(self.rundir, "conf.db"), f"--remote=punix:{self.db_sock}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            f"--unixctl={self.ovsdb_ctl}", f"--pidfile={self.pidfile('ovsdb-server')}",
            f"--log-file={os.path.join(self.rundir, 'ovsdb-server.log')}", "--detach", "--no-chdir",
        ])
        self._weigh_session("ovsdb-server")

    def restart_ovsdb(self, timeout: float = 10.0) -> None:
        """Restart ovsdb-server alone, as a package upgrade does; ovs-vswitchd and every other client
        reconnect by themselves."""
        self._stop_daemon("ovsdb-server", timeout)
        self._start_ovsdb()

    def restart_vswitchd(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Restart ovs-vswitchd alone (a crash with `sig=SIGKILL`): the new one reads its bridges and
        ports from OVSDB and starts with empty flow tables until its controller programs them."""
        self._stop_daemon("ovs-vswitchd", timeout, sig)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.vswitchd_ctl)  # left behind by a SIGKILL; its reappearance says "started"
        self._start_vswitchd(timeout)

    def _stop_daemon(self, daemon: str, timeout: float, sig: int = signal.SIGTERM) -> None:
        pid = self.pid(daemon)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while _alive(pid):
                if time.monotonic() > deadline:
                    raise OvsError(f"{daemon} {pid} did not stop")
                time.sleep(0.02)

    def stop(self) -> None:
        """Send SIGTERM to both daemons; `wait_stopped()` waits for them (stop many, then wait)."""
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pid(daemon)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def wait_stopped(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pid = self.pid(daemon)
            while pid and _alive(pid):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.02)

    def _run(self, argv: list[str], prefix: bool = False, check: bool = True) -> str:
        """Run a tool. The daemons run inside the namespace; the tools need not: they reach OVSDB,
        the bridge's management socket and unixctl by path, and `ip netns exec` costs ~10 ms."""
        if prefix:
            argv = self._prefix() + argv
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise OvsError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def vsctl(self, *args: str, check: bool = True) -> str:
        return self._run(["ovs-vsctl", f"--db={self.ovsdb_url}", "--timeout=10", *args], check=check)

    def ofctl(self, *args: str, check: bool = True) -> str:
        # ovs-ofctl reaches the bridge through its mgmt socket in OVS_RUNDIR.
        return self._run(["ovs-ofctl", "-O", "OpenFlow13", *args], check=check)

    def appctl(self, *args: str, check: bool = True) -> str:
        return self._run(["ovs-appctl", "-t", self.vswitchd_ctl, *args], check=check)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child still answers kill(0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
