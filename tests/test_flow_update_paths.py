"""The four flow-update paths of dfflow-controller (the `dfflow-bench flow-update` switches) install
the same flows on real Open vSwitch: compiled packer or os-ken objects, atomic bundle or flow mods
followed by a barrier. Each path installs everything once by its reconcile (on an emptied br-int)
and once incrementally (a port disabled and enabled again), and the VMs ping across chassis."""
from __future__ import annotations

import re

import pytest

from dfflow.sandbox.topology import INT_BRIDGE, Sandbox
from controller_fixtures import (controller_status, dump_flows, pings, running_cloud, wait_controllers_ready,
                                 wait_until)
from dfflow.models import LogicalPort

pytestmark = pytest.mark.ovs

PATHS = {
    "compiled+bundle": [],
    "osken+bundle": ["--flow-path", "osken"],
    "compiled+flow-mods": ["--no-bundle"],
    "osken+flow-mods": ["--flow-path", "osken", "--no-bundle"],
}


def _restart_controllers(sb: Sandbox, args: list[str]) -> None:
    """Every controller stopped, br-int emptied, every controller started with `args`."""
    sb.set_controller_args(args)
    names = [c.name for c in sb.chassis_list()]
    for name in names:
        sb.stop_controller(name)
    for name in names:
        sb.ovs(name).ofctl("del-flows", INT_BRIDGE)
        assert dump_flows(sb, name) == []
    for name in names:
        sb.start_controller(name)
    wait_controllers_ready(sb)


def _settled(sb: Sandbox) -> dict[str, frozenset[str]] | None:
    """Each chassis' flows (tunnel ports by peer name), once every controller is idle and its switch holds exactly what it wants."""
    flows = {}
    for ch in sb.chassis_list():
        st = controller_status(sb, ch.name)
        lines = dump_flows(sb, ch.name)
        if st["outbox"] or st["sending"] or len(lines) != st["flows"]:
            return None
        flows[ch.name] = frozenset(_by_peer(line, st["tunnels"]) for line in lines)
    return flows


def _by_peer(line: str, tunnels: dict[str, int]) -> str:
    """A tunnel port's number depends on when the restarted controller re-created it: name the peer."""
    peers = {str(ofport): peer for peer, ofport in tunnels.items()}
    return re.sub(r"(output:|in_port=)(\d+)", lambda m: m.group(1) + peers.get(m.group(2), m.group(2)), line)


def test_every_flow_path_installs_the_same_flows():
    with running_cloud(2) as cloud:
        sb = cloud.sb
        cloud.call("create_network", "net1", "10.0.0.0/24")
        cloud.call("create_vm", "A", "chassis-1", "net1", "10.0.0.11", mac="fa:16:3e:00:00:11")
        cloud.call("create_vm", "B", "chassis-2", "net1", "10.0.0.21", mac="fa:16:3e:00:00:21")
        port_b = sb.vm("B").vifs[0].port_id
        wait_until(lambda: pings(sb, "A", "10.0.0.21"), 15, what="A -> B ping (default path)")
        seen: dict[str, dict[str, frozenset[str]]] = {}
        for path, args in PATHS.items():
            _restart_controllers(sb, args)
            for ch in sb.chassis_list():
                st = controller_status(sb, ch.name)
                assert (st["flow_path"], st["bundle"]) == (
                    "osken" if "osken" in path else "compiled", "bundle" in path), path
                if args:
                    assert ch.controller_argv[-len(args):] == args
            reconciled = wait_until(lambda: _settled(sb), 15, what=f"{path}: reconcile settled")
            assert all(reconciled.values()), path
            wait_until(lambda: pings(sb, "A", "10.0.0.21"), 15, what=f"A -> B ping ({path}, reconciled)")

            # incrementally, through the sender loop: B's flows go and come back
            cloud.nb("modify", LogicalPort.table, port_b, lambda p: p.replace(enabled=False))
            wait_until(lambda: (f := _settled(sb)) is not None and f != reconciled, 15,
                       what=f"{path}: B's flows removed")
            assert not pings(sb, "A", "10.0.0.21", wait=0.5)
            cloud.nb("modify", LogicalPort.table, port_b, lambda p: p.replace(enabled=True))
            again = wait_until(lambda: (f := _settled(sb)) == reconciled and f, 15,
                               what=f"{path}: B's flows back")
            wait_until(lambda: pings(sb, "A", "10.0.0.21"), 15, what=f"A -> B ping ({path}, incremental)")
            for ch in sb.chassis_list():
                st = controller_status(sb, ch.name)
                assert st["stats"].get("handler_errors", 0) == 0, st["errors"]
                assert st["stats"].get("bundles" if "bundle" in path else "flow_mod_batches", 0) >= 2, (path, st)
                assert st["apply_timings"] and all("applied_at" in t for t in st["apply_timings"])
            seen[path] = again
        reference = seen["compiled+bundle"]
        for path, flows in seen.items():
            diff = {ch: (sorted(reference[ch] - flows[ch]), sorted(flows[ch] - reference[ch])) for ch in reference
                    if flows[ch] != reference[ch]}
            assert not diff, f"{path} installed other flows than compiled+bundle (missing, extra): {diff}"
