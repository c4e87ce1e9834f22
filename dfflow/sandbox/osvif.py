"""os-vif on a sandbox chassis, as nova-compute calls it: the chassis' `dfflow.sandbox.osvif_agent`
(started by the sandbox, inside the chassis' namespace, pointed at its OVSDB), over its unix socket.

The VIF comes from the port's binding as Nova builds it (nova/network/os_vif_util.py): a
`VIFOpenVSwitch` on binding:vif_details' `bridge_name` and `datapath_type` (os-vif creates the
bridge with that type if it must), named `tap` + the port id's first 11 characters, created by
os-vif (Nova's delegate_create). The sandbox makes the tap itself first (a veth whose other end
is the VM's interface), as QEMU does.
"""
from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from dfflow.sandbox import names as nm
from dfflow.sandbox.netns import SandboxError
from dfflow.sandbox.topology import Sandbox

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
    """nova-compute's os-vif on one chassis: a connection to its agent (`close()` ends it)."""

    def __init__(self, sandbox: Sandbox, chassis: str):
        self.chassis = chassis
        path = sandbox.osvif_socket(chassis)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(CALL_TIMEOUT)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise SandboxError(f"os-vif agent of {chassis} at {path}: {exc}") from None
        self.stream = self.sock.makefile("rwb")

    def call(self, op: str, vif: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        """os_vif.plug or os_vif.unplug; returns when it returned (`started`/`returned` times in it)."""
        self.stream.write(json.dumps({"op": op, "vif": vif, "instance": instance}).encode() + b"\n")
        self.stream.flush()
        line = self.stream.readline()
        if not line:
            raise SandboxError(f"os-vif agent of {self.chassis} closed the connection (see its osvif.log)")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise SandboxError(f"os_vif.{op} of {vif['port_id']} on {self.chassis} failed: "
                               f"{reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    async def acall(self, op: str, vif: dict[str, Any], instance: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.call, op, vif, instance)

    def close(self) -> None:
        self.stream.close()
        self.sock.close()
