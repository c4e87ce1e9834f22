"""os-vif on a sandbox chassis, as nova-compute calls it: one `controller.sandbox.osvif_agent`
process per chassis, inside the chassis' namespace, pointed at its OVSDB.

The VIF comes from the port's binding as Nova builds it (nova/network/os_vif_util.py): a
`VIFOpenVSwitch` on binding:vif_details' `bridge_name` and `datapath_type` (os-vif creates the
bridge with that type if it must), named `tap` + the port id's first 11 characters, created by
os-vif (Nova's delegate_create). The sandbox makes the tap itself first (a veth whose other end
is the VM's interface), as QEMU does.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from controller.sandbox import names as nm
from controller.sandbox import netns
from controller.sandbox.netns import SandboxError
from controller.sandbox.topology import Chassis

START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
VIF_TYPE_OVS = "ovs"
NOVA_OVS_BRIDGE = "br-int"  # nova's [neutron] ovs_bridge default, used when vif_details name none


def vif_spec(port_id: str, mac: str, network_id: str, binding: dict[str, Any], mtu: int | None = None) -> dict[str, Any]:
    """What the agent needs to build the os-vif VIF, from one binding of the port (the port's own
    binding:* fields, or a binding of the binding-extended API: vif_type and vif_details).

    Nova refuses a binding that is not an OVS one (binding_failed: no chassis can bind the host)."""
    vif_type = binding.get("vif_type")
    if vif_type != VIF_TYPE_OVS:
        raise SandboxError(f"port {port_id}: binding for {binding.get('host')!r} has vif_type {vif_type!r}, "
                           f"not {VIF_TYPE_OVS!r}: Nova cannot plug it")
    details = binding.get("vif_details") or {}
    return {"port_id": port_id, "mac": mac, "network_id": network_id,
            "bridge_name": details.get("bridge_name") or NOVA_OVS_BRIDGE,
            "datapath_type": details.get("datapath_type"), "port_filter": details.get("port_filter", False),
            "mtu": mtu, "vif_name": nm.Names.tap(port_id)}


def port_binding(port: dict[str, Any]) -> dict[str, Any]:
    """A Neutron port's active binding in the binding-extended API's shape."""
    return {"host": port.get("binding:host_id"), "vif_type": port.get("binding:vif_type"),
            "vif_details": port.get("binding:vif_details") or {}}


class OsVifHost:
    """nova-compute's os-vif on one chassis (a process of its own; `close()` ends it)."""

    def __init__(self, chassis: Chassis):
        self.chassis = chassis
        argv = netns.exec_argv(chassis.namespace, [sys.executable, "-W", "ignore::FutureWarning", "-m",
                                                   "controller.sandbox.osvif_agent",
                                                   "--ovsdb", chassis.ovs().ovsdb_url])
        self.log_path = os.path.join(chassis.dir, "osvif.log")  # os-vif's and privsep's logging
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         text=True)
        self._ready = False

    def _reply(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise SandboxError(f"os-vif on {self.chassis.name} died (see {self.log_path})")
        return json.loads(line)

    def wait_ready(self) -> None:
        if not self._ready:
            self._reply()
            self._ready = True

    def call(self, op: str, vif: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        """os_vif.plug or os_vif.unplug; returns when it returned (`started`/`returned` times in it)."""
        self.wait_ready()
        self.proc.stdin.write(json.dumps({"op": op, "vif": vif, "instance": instance}) + "\n")
        self.proc.stdin.flush()
        reply = self._reply()
        if not reply.get("ok"):
            raise SandboxError(f"os_vif.{op} of {vif['port_id']} on {self.chassis.name} failed: "
                               f"{reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    async def acall(self, op: str, vif: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.call, op, vif, instance)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
