"""`dfflow-bench osvif-unplug`: what Nova's unplug of a VIF costs before the controller can see it.

On a 1-chassis sandbox (real Open vSwitch, no controller), a VIF is plugged by os-vif and then
removed, alternately by the real `os_vif.unplug` (the chassis' os-vif agent, as the sandbox's Nova
calls it: a warm process holding its OVSDB connection and privsep daemon) and by one raw OVSDB
transaction on a connection opened beforehand (what os-vif's `del_port` sends, with nothing in
front of it). Measured: from the call to the moment an OVSDB monitor -- the controller's way of
seeing an unplug -- receives the Interface's deletion.
"""
from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable

from dfflow.ovsdb.jsonrpc import JsonRpc
from dfflow.sandbox import netns
from dfflow.sandbox.osvif import OsVifHost
from dfflow.sandbox.topology import INT_BRIDGE, Sandbox

CHASSIS = "chassis-1"
NETWORK_MTU = 1400
SEEN_TIMEOUT = 5.0


def run(runs: int = 20, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    workdir = tempfile.mkdtemp(prefix="dfbench-", dir="/tmp")
    sb = Sandbox(workdir)
    try:
        sb.up(chassis=1, controllers=False)
        return asyncio.run(_run(sb, runs, progress))
    finally:
        sb.down()
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(sb: Sandbox, runs: int, progress: Callable[[str], None] | None) -> dict[str, Any]:
    ch = sb.chassis(CHASSIS)
    url = ch.ovs().ovsdb_url
    deleted: dict[str, float] = {}

    def on_update(method: str, params: Any, received: float) -> None:
        if method == "update":
            for change in (params[1].get("Interface") or {}).values():
                if "old" in change and "new" not in change:
                    deleted[change["old"]["name"]] = received

    monitor = await JsonRpc.open(url, on_update)
    await monitor.call("monitor", ["Open_vSwitch", None, {"Interface": {"columns": ["name"]}}])
    host = await asyncio.to_thread(OsVifHost, sb, CHASSIS)
    raw = await JsonRpc.open(url)
    samples: dict[str, list[float]] = {"os_vif.unplug": [], "raw OVSDB transaction": []}
    try:
        for i in range(runs * 2):
            port_id = f"{i:04d}bench-unplug"
            vif = {"port_id": port_id, "mac": "fa:16:3e:00:00:01", "network_id": "bench", "bridge_name": INT_BRIDGE,
                   "datapath_type": "netdev", "mtu": NETWORK_MTU, "vif_name": f"tap{port_id[:11]}",
                   "port_filter": True}
            instance = {"uuid": "00000000-0000-4000-8000-000000000001", "name": "bench", "project_id": "bench"}
            tap = vif["vif_name"]
            netns.batch(ch.namespace, [f"link add {tap} type veth peer name {tap[:11]}vm", f"link set {tap} up"])
            await host.acall("plug", vif, instance)
            await asyncio.sleep(0.1)
            if i % 2 == 0:
                kind = "os_vif.unplug"
                started = time.time()
                await host.acall("unplug", vif, instance)  # deletes the veth too
            else:
                kind = "raw OVSDB transaction"
                ops = await _del_port_ops(raw, tap)
                started = time.time()
                await raw.transact("Open_vSwitch", *ops)
            deadline = time.monotonic() + SEEN_TIMEOUT
            while tap not in deleted:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the deletion of {tap} never reached the OVSDB monitor")
                await asyncio.sleep(0.001)
            samples[kind].append((deleted[tap] - started) * 1e3)
            if kind != "os_vif.unplug":
                netns.batch(ch.namespace, [f"link del {tap}"])
            if progress is not None:
                progress(kind)
    finally:
        host.close()
        await raw.close()
        await monitor.close()
    return {"runs": runs, "samples_ms": samples,
            "summary": {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)}
                        for k, v in samples.items()}}


async def _del_port_ops(rpc: JsonRpc, port_name: str) -> list[dict[str, Any]]:
    """os-vif's del_port as one transaction: the port off the bridge, and deleted (looked up first)."""
    found = await rpc.transact("Open_vSwitch", {"op": "select", "table": "Port",
                                                "where": [["name", "==", port_name]], "columns": ["_uuid"]})
    port = ["uuid", found[0]["rows"][0]["_uuid"][1]]
    return [{"op": "mutate", "table": "Bridge", "where": [["name", "==", INT_BRIDGE]],
             "mutations": [["ports", "delete", ["set", [port]]]]},
            {"op": "delete", "table": "Port", "where": [["_uuid", "==", port]]}]


def format_report(report: dict[str, Any]) -> str:
    lines = [f"unplug of a VIF until an OVSDB monitor sees it, {report['runs']} runs each:"]
    for kind, s in report["summary"].items():
        lines.append(f"  {kind:24} median {s['median_ms']:6.2f} ms   min {s['min_ms']:6.2f} ms   "
                     f"max {s['max_ms']:6.2f} ms")
    return "\n".join(lines)
