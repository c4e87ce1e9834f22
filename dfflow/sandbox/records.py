"""The sandbox's records (what ``<dir>/state.json`` holds for each chassis, VM and VIF) and the
constants of its layout (see topology.py)."""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from . import procs, respawn
from .netns import SandboxError
from .ovsproc import OvsInstance

DEFAULT_DIR = "/var/tmp/dfflow-sandbox"
API_DFFLOW, API_NEUTRON = "dfflow-api", "neutron-server"  # what serves the sandbox cloud's Neutron API
NB_SENTINEL = "sentinel"  # `up(nb_url=...)`: start a primary, a replica and three sentinels
INT_BRIDGE = "br-int"
PHY_BRIDGE = "br-phy"
DATAPATH_TYPE = "netdev"  # no OVS kernel module here: every bridge is userspace (controllers are told so)
VM_MTU = 1400
TCP_OF_PORT = 6653
UNIX_PATH_MAX = 107
STATE_VERSION = 1
TNL_NEIGH_AGING = 3600  # seconds, OVS's maximum
HEALTHY_WITHIN = 30.0  # s after start-up by which every controller must be healthy

CHASSIS_SYSCTLS = {
    "net.ipv4.conf.all.arp_ignore": 1,
    "net.ipv4.conf.default.arp_ignore": 1,
    "net.ipv6.conf.all.disable_ipv6": 1,
    "net.ipv6.conf.default.disable_ipv6": 1,
}
UNDERLAY_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": 1,
    "net.ipv6.conf.default.disable_ipv6": 1,
}
NO_IPV6_SYSCTLS = UNDERLAY_SYSCTLS


@dataclass
class Chassis:
    name: str
    index: int
    namespace: str
    tunnel_ip: str
    phy_mac: str
    int_mac: str
    dir: str                        # <sandbox dir>/<name>
    uplink: str                     # veth end in the chassis ns (port of br-phy)
    underlay_port: str              # veth end in the underlay ns (port of the Linux bridge)
    of_listen: str = ""             # what the controller is told to listen on
    of_target: str = ""             # what br-int connects to
    of_port: int | None = None
    controller_pid: int | None = None
    controller_starttime: int | None = None
    controller_argv: list[str] = field(default_factory=list)
    supervisor_pid: int | None = None   # dfflow.sandbox.respawn: restarts the controller when it dies
    supervisor_starttime: int | None = None
    ovs_pids: dict[str, list[int | None]] = field(default_factory=dict)  # daemon -> [pid, start time]
    osvif_pid: int | None = None    # the chassis' os-vif agent (nova-compute's os-vif), if started
    osvif_starttime: int | None = None

    @property
    def rundir(self) -> str:
        return os.path.join(self.dir, "ovs")

    @property
    def controller_log(self) -> str:
        return os.path.join(self.dir, "controller.log")

    @property
    def status_socket(self) -> str:
        return os.path.join(self.dir, "controller.sock")

    @property
    def osvif_socket(self) -> str:
        return os.path.join(self.dir, "osvif.sock")

    @property
    def supervisor_record(self) -> str:
        return os.path.join(self.dir, "controller.respawn.json")

    def supervised(self) -> dict[str, Any]:
        """The supervisor's record (controller pid now, restarts, last exit), if it still runs."""
        if not procs.same_process(self.supervisor_pid, self.supervisor_starttime):
            return {}
        return respawn.read_record(self.supervisor_record)

    def controller_now(self) -> tuple[int | None, int | None]:
        """(pid, start time) of the controller process running now (the supervisor restarts it)."""
        record = self.supervised()
        if record:
            return record.get("pid"), record.get("starttime")
        return self.controller_pid, self.controller_starttime

    def ovs(self) -> OvsInstance:
        return OvsInstance(self.rundir, self.namespace)


@dataclass
class Vif:
    vm: str
    ifname: str                     # name inside the VM namespace (eth0, eth1, ...)
    chassis: str
    port_id: str                    # external_ids:iface-id
    mac: str
    tap: str                        # name inside the chassis namespace, a port of br-int
    ip: str | None = None           # address/prefix
    mtu: int = VM_MTU
    up: bool = True


@dataclass
class Vm:
    name: str
    namespace: str
    uuid: str
    gateway: str | None = None
    vifs: list[Vif] = field(default_factory=list)

    def vif(self, ifname: str) -> Vif:
        for v in self.vifs:
            if v.ifname == ifname:
                return v
        raise SandboxError(f"VM {self.name} has no interface {ifname}")


def _chassis_from(d: dict[str, Any]) -> Chassis:
    return Chassis(**{k: v for k, v in d.items() if k in Chassis.__dataclass_fields__})


def _vm_from(d: dict[str, Any]) -> Vm:
    vifs = [Vif(**{k: v for k, v in x.items() if k in Vif.__dataclass_fields__}) for x in d.get("vifs", [])]
    return Vm(name=d["name"], namespace=d["namespace"], uuid=d["uuid"], gateway=d.get("gateway"), vifs=vifs)


def default_controller_cmd() -> list[str]:
    """How to start dfflow-controller: the module must exist (the console script exists before it does)."""
    if importlib.util.find_spec("controller.daemon") is None:
        raise SandboxError("dfflow-controller is not available (no module controller.daemon yet): "
                           "use `up --no-controllers`")
    script = os.path.join(os.path.dirname(sys.executable), "dfflow-controller")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "controller.daemon"]
