"""Nova-compute's os-vif calls on one chassis: the real `os_vif` library, run inside the chassis'
network namespace (where the VM's tap lives) against that chassis' OVSDB.

Started by `controller.sandbox.osvif.OsVifHost`; reads one JSON command per line on stdin and
answers one JSON line on stdout:

    {"op": "plug"|"unplug", "vif": {...}, "instance": {...}}
        -> {"ok": true, "started": T, "returned": T}  |  {"ok": false, "error": "..."}

`vif` is what nova/network/os_vif_util.py builds from a port's binding (see `vif_object`). The
OVS plugin's options come from a config file written here: `[os_vif_ovs] ovsdb_connection`
is this chassis' socket, and privsep runs its helper without sudo (we are root already).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ovsdb", required=True, help="this chassis' OVSDB, e.g. unix:/.../db.sock")
    parser.add_argument("--privsep-helper", default=os.path.join(os.path.dirname(sys.executable),
                                                                 "privsep-helper"))
    args = parser.parse_args(argv)
    from oslo_config import cfg
    import os_vif
    path = _configure(args.ovsdb, args.privsep_helper)
    try:
        cfg.CONF(["--config-file", path], project="dfflow-osvif", default_config_files=[],
                 default_config_dirs=[])
        os_vif.initialize()
    finally:
        os.unlink(path)
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            vif, instance = vif_object(cmd["vif"]), instance_object(cmd["instance"])
            call = {"plug": os_vif.plug, "unplug": os_vif.unplug}[cmd["op"]]
            started = time.time()
            call(vif, instance)
            reply = {"ok": True, "started": started, "returned": time.time()}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main()
