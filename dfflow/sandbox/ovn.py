"""OVN on a sandbox's chassis, as the peer dfflow is measured against (Debian's ovn-central and
ovn-host, 23.03 on Debian 12; `scripts/setup-ovn.sh` installs them).

Central: the OVN_Northbound and OVN_Southbound ovsdb-servers and ovn-northd, in `<sandbox>/ovn`,
on unix sockets there (they connect across network namespaces, like every socket of the sandbox).
Per chassis: the chassis' own Open vSwitch gets what an OVN hypervisor has in its Open_vSwitch
row (`ovn-remote` the SB socket, `ovn-encap-type` geneve, `ovn-encap-ip` the chassis' underlay
address on br-phy, `ovn-bridge-datapath-type` netdev; `system-id` is the chassis name already), and
one ovn-controller runs against that chassis' OVSDB socket, with OVS_RUNDIR pointing at the
chassis' run directory so that it reaches br-int's management socket there. ovn-controller creates
the Geneve ports to the other chassis itself; the sandbox's underlay (br-phy, its address and
route, the pre-seeded tunnel ARP entries) serves them as it serves dfflow's.

dfflow's controllers must not program the same br-int at the same time: bring the sandbox up
without them (`Sandbox.up(controllers=False)`). `Sandbox.down` stops whatever OVN daemon still runs
from the sandbox's directory (`pids_under`).
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Sequence

from . import priorities, procs
from .netns import SandboxError

NB_SCHEMA = "/usr/share/ovn/ovn-nb.ovsschema"
SB_SCHEMA = "/usr/share/ovn/ovn-sb.ovsschema"
BINARIES = ("ovsdb-server", "ovsdb-tool", "ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl")
ENCAP_TYPE = "geneve"
START_TIMEOUT = 15.0  # s
# ovn-controller speaks OpenFlow 1.5 to br-int; the sandbox's br-int allows 1.3 and 1.4 (dfflow's)
BR_INT_PROTOCOLS = "OpenFlow13,OpenFlow14,OpenFlow15"
GW_CMS_OPTIONS = "enable-chassis-as-gw"  # what a chassis says in its OVS row to host routers' gateways
# ovn-ctl starts ovn-northd and ovn-controller at niceness -10 (--ovn-northd-priority,
# --ovn-controller-priority), its ovsdb-servers at the default; the sandbox starts them as it does, each
# detached into a session of its own, weighed at the daemon's niceness (priorities.session_at).
OVN_NICENESS = -10


def missing() -> list[str]:
    """What keeps OVN from running here (empty when it can)."""
    problems = [f"{b} not found" for b in BINARIES if shutil.which(b) is None]
    problems += [f"{s} missing" for s in (NB_SCHEMA, SB_SCHEMA) if not os.path.exists(s)]
    if problems:
        problems.append("run `bash scripts/setup-ovn.sh` (Debian's ovn-central and ovn-host)")
    return problems


def _run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 20.0) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _wait_path(path: str, what: str, log: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SandboxError(f"{what} did not start within {timeout:g} s (see {log})")
        time.sleep(0.02)


@dataclass(frozen=True)
class Daemon:
    """One OVN daemon's files: started detached, found again and stopped through its pidfile."""

    dir: str
    name: str

    @property
    def pidfile(self) -> str:
        return os.path.join(self.dir, f"{self.name}.pid")

    @property
    def ctl(self) -> str:
        """Its control socket: ovsdb-server and ovn-northd take it as --unixctl; ovn-controller makes
        `<OVN_RUNDIR>/ovn-controller.<pid>.ctl` (it has no such option)."""
        if self.name == "ovn-controller":
            return os.path.join(self.dir, f"{self.name}.{procs.read_pidfile(self.pidfile)}.ctl")
        return os.path.join(self.dir, f"{self.name}.ctl")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, f"{self.name}.log")

    def common_args(self) -> list[str]:
        args = ["--detach", "--no-chdir", f"--pidfile={self.pidfile}", f"--log-file={self.log}",
                "-vconsole:off", "-vfile:info"]
        return args if self.name == "ovn-controller" else args + [f"--unixctl={self.ctl}"]

    def pid(self) -> int | None:
        """The daemon's pid while it runs (a pidfile whose process is gone, or is another program, gives None)."""
        pid = procs.read_pidfile(self.pidfile)
        if pid is None or not procs.alive(pid):
            return None
        binary = "ovn-controller" if self.name.startswith("ovn-controller") else (
            "ovn-northd" if self.name == "ovn-northd" else "ovsdb-server")
        return pid if procs.comm(pid) == binary[:15] else None

    def weigh_session(self, niceness: int) -> None:
        """The daemon's session weighed at `niceness` against the others (priorities.session_at)."""
        pid = self.pid()
        if pid is None:
            raise SandboxError(f"{self.name} is not running (see {self.log})")
        priorities.session_at(pid, niceness, f"{self.name} of {self.dir}")


class OvnCentral:
    """The NB and SB databases and ovn-northd of one sandbox (`<sandbox dir>/ovn`)."""

    def __init__(self, sandbox_dir: str):
        self.dir = os.path.join(sandbox_dir, "ovn")
        self.nb = Daemon(self.dir, "ovsdb-server-nb")
        self.sb = Daemon(self.dir, "ovsdb-server-sb")
        self.northd = Daemon(self.dir, "ovn-northd")

    @property
    def nb_url(self) -> str:
        return f"unix:{os.path.join(self.dir, 'nb.sock')}"

    @property
    def sb_url(self) -> str:
        return f"unix:{os.path.join(self.dir, 'sb.sock')}"

    def daemons(self) -> list[Daemon]:
        return [self.northd, self.nb, self.sb]

    def start(self) -> None:
        problems = missing()
        if problems:
            raise SandboxError("cannot run OVN: " + "; ".join(problems))
        if any(d.pid() for d in self.daemons()):
            raise SandboxError(f"OVN is running already in {self.dir}: stop it first")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        for daemon, schema, url in ((self.nb, NB_SCHEMA, self.nb_url), (self.sb, SB_SCHEMA, self.sb_url)):
            db = os.path.join(self.dir, f"{daemon.name.rsplit('-', 1)[1]}.db")
            _run(["ovsdb-tool", "create", db, schema])
            _run(["ovsdb-server", db, f"--remote=p{url}", *daemon.common_args()])
            _wait_path(url[len("unix:"):], daemon.name, daemon.log)
        _run(["nice", "-n", str(OVN_NICENESS), "ovn-northd", f"--ovnnb-db={self.nb_url}", f"--ovnsb-db={self.sb_url}",
              *self.northd.common_args()])
        _wait_path(self.northd.ctl, "ovn-northd", self.northd.log)
        self.northd.weigh_session(OVN_NICENESS)

    def stop(self, timeout: float = 5.0) -> None:
        procs.terminate_all([p for d in self.daemons() if (p := d.pid())], timeout)

    def nbctl(self, *args: str) -> str:
        return _run(["ovn-nbctl", f"--db={self.nb_url}", "--timeout=20", *args])

    def sbctl(self, *args: str) -> str:
        return _run(["ovn-sbctl", f"--db={self.sb_url}", "--timeout=20", *args])


class OvnChassis:
    """OVN on one chassis of the sandbox: its OVS row configured, its ovn-controller."""

    def __init__(self, chassis: Any, central: OvnCentral, gateway: bool = False):
        self.chassis, self.central, self.gateway = chassis, central, gateway
        self.dir = os.path.join(chassis.dir, "ovn")
        self.controller = Daemon(self.dir, "ovn-controller")

    def start(self) -> None:
        ch, ovs = self.chassis, self.chassis.ovs()
        os.makedirs(self.dir, exist_ok=True)
        ovs.vsctl("--", "set", "Open_vSwitch", ".", f"external_ids:ovn-remote={self.central.sb_url}",
                  f"external_ids:ovn-encap-type={ENCAP_TYPE}", f"external_ids:ovn-encap-ip={ch.tunnel_ip}",
                  f"external_ids:ovn-bridge-datapath-type={ovs_datapath_type(ovs)}",
                  *([f"external_ids:ovn-cms-options={GW_CMS_OPTIONS}"] if self.gateway else []),
                  "--", "set", "Bridge", "br-int", f"protocols={BR_INT_PROTOCOLS}",
                  "--", "del-controller", "br-int")
        env = dict(ovs.env, OVN_RUNDIR=self.dir, OVN_LOGDIR=self.dir)
        _run(["nice", "-n", str(OVN_NICENESS), "ovn-controller", ovs.ovsdb_url, *self.controller.common_args()],
             env=env)
        _wait_path(self.controller.pidfile, f"ovn-controller of {ch.name}", self.controller.log)
        _wait_path(self.controller.ctl, f"ovn-controller of {ch.name}", self.controller.log)
        self.controller.weigh_session(OVN_NICENESS)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: ovn-controller leaves br-int, its flows and its SB chassis record as they are."""
        pid = self.controller.pid()
        if pid:
            procs.terminate_all([pid], timeout)


def pids_under(sandbox_dir: str) -> list[int]:
    """The OVN daemons that run from a sandbox dir's pidfiles (what `Sandbox.down` stops, also after a crash)."""
    daemons = [Daemon(os.path.join(sandbox_dir, "ovn"), name)
               for name in ("ovn-northd", "ovsdb-server-nb", "ovsdb-server-sb")]
    daemons += [Daemon(os.path.dirname(path), "ovn-controller")
                for path in glob.glob(os.path.join(sandbox_dir, "*", "ovn", "ovn-controller.pid"))]
    return [pid for d in daemons if (pid := d.pid())]


def ovs_datapath_type(ovs: Any) -> str:
    return ovs.vsctl("get", "Bridge", "br-int", "datapath_type").strip().strip('"') or "system"


class Ovn:
    """OVN over every chassis of an up sandbox (brought up without dfflow's controllers)."""

    def __init__(self, sandbox: Any, gateways: Sequence[str] = ()):
        """`gateways`: the chassis that host routers' gateways (`ovn-cms-options=enable-chassis-as-gw`,
        which is how Neutron's OVN driver finds them)."""
        self.sandbox = sandbox
        self.central = OvnCentral(sandbox.dir)
        names = {ch.name for ch in sandbox.chassis_list()}
        if set(gateways) - names:
            raise SandboxError(f"gateways: no chassis {', '.join(sorted(set(gateways) - names))} in the sandbox")
        self.chassis = {ch.name: OvnChassis(ch, self.central, gateway=ch.name in gateways)
                        for ch in sandbox.chassis_list()}

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Central processes, then one ovn-controller per chassis; returns once every chassis is in
        the SB with its Geneve encap and br-int has a tunnel to every other chassis."""
        try:
            self.central.start()
            for node in self.chassis.values():
                node.start()
            self._wait_mesh(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def _wait_mesh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        names = set(self.chassis)
        while True:
            registered = set(self.central.sbctl("--bare", "--columns=name", "list", "Chassis").split())
            tunnels = {name: node.chassis.ovs().vsctl("--bare", "--columns=name", "find", "Interface",
                                                       f"type={ENCAP_TYPE}").split()
                       for name, node in self.chassis.items()}
            gateways = {name for name, node in self.chassis.items() if node.gateway}
            offered = set(self.central.sbctl("--bare", "--columns=name", "find", "Chassis",
                                             f'other_config:ovn-cms-options="{GW_CMS_OPTIONS}"').split())
            if (registered >= names and all(len(t) >= len(names) - 1 for t in tunnels.values())
                    and offered >= gateways):
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"OVN did not come up within {timeout:g} s: chassis in the SB "
                                   f"{sorted(registered)}, Geneve ports {tunnels} (logs in {self.central.dir} and "
                                   "each chassis' ovn/ directory)")
            time.sleep(0.1)

    def stop(self) -> None:
        procs.terminate_all(pids_under(self.sandbox.dir))

    def __enter__(self) -> "Ovn":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
