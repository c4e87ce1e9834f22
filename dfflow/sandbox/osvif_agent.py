"""Nova-compute's os-vif on one chassis: the real `os_vif` library, run inside the chassis' network
namespace (where the VM's tap lives) against that chassis' OVSDB, for as long as the chassis runs
(the sandbox starts one per chassis, as nova-compute runs on every compute host all along).

It serves a unix socket; each connection sends one JSON command per line and gets one JSON line
back (calls are made one at a time, in arrival order):

    {"op": "plug"|"unplug", "vif": {...}, "instance": {...}}
        -> {"ok": true, "started": T, "returned": T}  |  {"ok": false, "error": "...", "traceback": "..."}

`vif` is what nova/network/os_vif_util.py builds from a port's binding (see `vif_object`). The
OVS plugin's options come from a config file written here: `[os_vif_ovs] ovsdb_connection`
is this chassis' socket, and privsep runs its helper without sudo (we are root already); its
daemon is started at once, not at the first call.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
import tempfile
import threading
import time
import traceback
import warnings
from typing import Any


def vif_object(spec: dict[str, Any]) -> Any:
    """An os-vif VIFOpenVSwitch as Nova converts a bound OVS port (delegate_create: os-vif creates
    the OVS port; datapath_type and bridge_name from binding:vif_details)."""
    from os_vif import objects
    network = objects.network.Network(id=spec["network_id"], bridge=spec["bridge_name"],
                                      subnets=objects.subnet.SubnetList(objects=[]))
    if spec.get("mtu"):
        network.mtu = spec["mtu"]
    profile = objects.vif.VIFPortProfileOpenVSwitch(interface_id=spec["port_id"],
                                                    datapath_type=spec.get("datapath_type"))
    profile.create_port = True
    return objects.vif.VIFOpenVSwitch(
        id=spec["port_id"], address=spec["mac"], network=network, plugin="ovs", port_profile=profile,
        vif_name=spec["vif_name"], bridge_name=spec["bridge_name"],
        has_traffic_filtering=bool(spec.get("port_filter")), preserve_on_delete=False,
        active=bool(spec.get("active", False)))


def instance_object(spec: dict[str, Any]) -> Any:
    from os_vif import objects
    info = objects.instance_info.InstanceInfo(uuid=spec["uuid"], name=spec["name"])
    if spec.get("project_id"):
        info.project_id = spec["project_id"]
    return info


def _configure(ovsdb: str, privsep_helper: str) -> str:
    fd, path = tempfile.mkstemp(prefix="dfflow-osvif-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(f"[os_vif_ovs]\novsdb_connection = {ovsdb}\novsdb_interface = native\n"
                f"[vif_plug_ovs_privileged]\nhelper_command = {privsep_helper}\n")
    return path


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            reply = self.server.run(line)  # type: ignore[attr-defined]
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class Agent(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # A host evacuation connects once per migration at the same moment (nova-compute runs them
    # together); socketserver's default backlog of 5 refused the 6th with EAGAIN.
    request_queue_size = 128

    def __init__(self, path: str):
        import os_vif
        self.os_vif, self.lock = os_vif, threading.Lock()
        if os.path.exists(path):
            os.unlink(path)
        super().__init__(path, _Handler)

    def run(self, line: bytes) -> dict[str, Any]:
        try:
            cmd = json.loads(line)
            vif, instance = vif_object(cmd["vif"]), instance_object(cmd["instance"])
            call = {"plug": self.os_vif.plug, "unplug": self.os_vif.unplug}[cmd["op"]]
            with self.lock:
                started = time.time()
                call(vif, instance)
                return {"ok": True, "started": started, "returned": time.time()}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def _connect_ovsdb(os_vif: Any) -> None:
    """Open the OVS plugin's OVSDB connection now, as a running nova-compute has it, not at the first
    plug or unplug. os-vif opens it lazily and has no public call for it: reach the plugin object."""
    manager = getattr(os_vif, "_EXT_MANAGER", None)
    if manager is None or "ovs" not in manager.names():
        return  # the first call connects instead
    manager["ovs"].obj.ovsdb.ovsdb.has_table_column("Interface", "name")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ovsdb", required=True, help="this chassis' OVSDB, e.g. unix:/.../db.sock")
    parser.add_argument("--socket", required=True, help="the unix socket to serve")
    parser.add_argument("--privsep-helper", default=os.path.join(os.path.dirname(sys.executable),
                                                                 "privsep-helper"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # oslo's UUID fields: sandbox ids are not UUIDs
    from oslo_config import cfg
    import os_vif
    from vif_plug_ovs import privsep
    path = _configure(args.ovsdb, args.privsep_helper)
    try:
        cfg.CONF(["--config-file", path], project="dfflow-osvif", default_config_files=[],
                 default_config_dirs=[])
        os_vif.initialize()
    finally:
        os.unlink(path)
    privsep.vif_plug.start()
    _connect_ovsdb(os_vif)
    agent = Agent(args.socket)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        agent.serve_forever()
    finally:
        agent.server_close()
        if os.path.exists(args.socket):
            os.unlink(args.socket)


if __name__ == "__main__":  # pragma: no cover
    main()
