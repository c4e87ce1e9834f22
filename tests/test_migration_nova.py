"""Nova's real calls on the real sandbox: python-neutronclient against `dfflow api` in Nova's order,
the real os-vif plugging on each chassis' OVSDB, and what every chassis ends with -- no stale flow,
binding, status or migration record -- in each order Nova's calls can take, and when Nova rolls back."""
from __future__ import annotations

import asyncio
import concurrent.futures
import time

import pytest

from dfflow.sandbox import names as nm
from dfflow.sandbox.osvif import OsVifHost, port_binding, vif_spec
from dfflow.sandbox.netns import SandboxError
from dfflow.sandbox.nova_events import PLUGGED, UNPLUGGED, NovaEvents, VifPluggingFailed
from controller_fixtures import (controller_status, dump_flows, migrate, pings, running_cloud,
                                 wait_arrival_windows_closed, wait_until, wait_controllers_ready)
from dfflow.models import PortStatus
from test_migration import (M_IP, assert_everyone_places_m_on, assert_recovered, other, port_id, probes,
                            where)
from test_migration import cloud  # noqa: F401  (the module's own 3-chassis cloud with M, P, Q, E)

pytestmark = pytest.mark.ovs


def show_port(cloud, pid: str) -> dict:
    return cloud.call("neutron", "show_port", pid)["port"]


def statuses_up(cloud, pid: str) -> set[str]:
    status = cloud.nb("get", PortStatus.table, pid)
    return set(status.up) if status is not None else set()


def assert_nothing_stale(cloud, host: str) -> None:
    """M is bound to `host` alone: no inactive binding, no migrating_to, no migration record, its VIF
    reported up there only; every chassis places it there; no controller counted an error."""
    pid = port_id(cloud)
    wait_until(lambda: cloud.nb("get", "lport", pid).migration is None, 10, what="record cleared")
    port = cloud.nb("get", "lport", pid)
    assert (port.binding_chassis, port.inactive_bindings, port.migrating_to) == (host, [], None), port
    shown = show_port(cloud, pid)
    assert shown["binding:host_id"] == host and shown["status"] == "ACTIVE"
    assert [b["host"] for b in cloud.call("neutron", "list_port_bindings", pid)["bindings"]] == [host]
    wait_until(lambda: statuses_up(cloud, pid) == {host}, 10, what=f"M reported up on {host} only")
    assert_everyone_places_m_on(cloud, host)
    for ch in cloud.sb.chassis_list():
        status = controller_status(cloud.sb, ch.name)
        assert status["stats"].get("handler_errors", 0) == 0, status["errors"]
        assert status["port_status"]["stats"].get("write_errors", 0) == 0


def test_a_vm_plugged_by_os_vif_is_active_only_after_its_chassis_reports_it(cloud):
    sb = cloud.sb
    port = cloud.call("create_port", "net1", "chassis-2", "10.1.0.66", name="late-port")
    shown = show_port(cloud, port.id)
    assert shown["status"] == "DOWN" and shown["binding:vif_type"] == "ovs"
    assert shown["binding:vif_details"]["datapath_type"] == "netdev"
    sb.stop_controller("chassis-2")  # nobody to report the VIF yet
    try:
        vm = sb.plug_vm("L", "chassis-2", port.id, port.mac, ip="10.1.0.66/24", ovs_port=False)
        host = OsVifHost(sb, "chassis-2")
        try:
            spec = vif_spec(port.id, port.mac, "net1", port_binding(shown), mtu=1400)
            host.call("plug", spec, {"uuid": vm.uuid, "name": "L", "project_id": port.topic})
        finally:
            host.close()
        ovs = sb.ovs("chassis-2")
        ids = ovs.vsctl("get", "Interface", spec["vif_name"], "external_ids")
        assert port.id in ids and vm.uuid in ids and port.mac in ids and "iface-status=active" in ids
        assert ovs.vsctl("get", "Bridge", "br-int", "datapath_type").strip() == "netdev"  # kept, not 'system'
        time.sleep(1.0)
        assert show_port(cloud, port.id)["status"] == "DOWN"  # plugged, but not reported
    finally:
        sb.start_controller("chassis-2")
    wait_controllers_ready(sb)
    wait_until(lambda: show_port(cloud, port.id)["status"] == "ACTIVE", 10, what="ACTIVE once reported")
    assert statuses_up(cloud, port.id) == {"chassis-2"}
    cloud.call("delete_vm", "L")


def test_a_boot_whose_vif_is_never_reported_fails_and_leaves_nothing(cloud, monkeypatch):
    from dfflow.sandbox import cloud as cloud_module
    sb = cloud.sb
    monkeypatch.setattr(cloud_module, "VIF_PLUGGING_TIMEOUT", 1.0)
    ports_before = {p.id for p in cloud.nb("list", "lport")}
    sb.stop_controller("chassis-2")
    try:
        with pytest.raises(VifPluggingFailed, match=r"boot of N on chassis-2 .*no network-vif-plugged event "
                                                    r"for port \S+ on host chassis-2 within 1s"):
            cloud.call("create_vm", "N", "chassis-2", "net1", "10.1.0.68")
    finally:
        sb.start_controller("chassis-2")
    wait_controllers_ready(sb)
    assert "N" not in [vm.name for vm in sb.vms()]
    assert {p.id for p in cloud.nb("list", "lport")} == ports_before
    assert not [s for s in cloud.nb("list", PortStatus.table) if s.id not in ports_before]
    assert "tap" not in " ".join(p for p in sb.ovs("chassis-2").vsctl("list-ports", "br-int").split()
                                 if p not in {v.tap for vm in sb.vms() for v in vm.vifs})


def test_nova_refuses_to_plug_a_binding_no_chassis_can_serve(cloud):
    port = cloud.call("create_port", "net1", "compute-without-chassis", "10.1.0.67", name="failed-port")
    shown = show_port(cloud, port.id)
    assert shown["binding:vif_type"] == "binding_failed" and shown["status"] == "DOWN"
    with pytest.raises(SandboxError, match="binding_failed"):
        vif_spec(port.id, port.mac, "net1", port_binding(shown))
    cloud.nb("delete", "lport", port.id)


@pytest.mark.parametrize("order", ["activation_first", "unplug_first"])
def test_activation_and_the_source_unplug_in_either_order_end_clean(cloud, order):
    """Nova activates dest's binding before unplugging the source; a slow activation comes after it.
    Whichever comes first moves the port (activation: step 3; unplug: step 2), and the run ends with
    nothing stale."""
    dest = other(cloud)
    senders = probes(cloud)
    time.sleep(0.2)
    started = time.time()
    first, second = 0.05, 0.6
    delays = dict(activate_delay=first, unplug_delay=second) if order == "activation_first" else \
        dict(activate_delay=second, unplug_delay=first)
    result = migrate(cloud, "M", dest, strategy="unplug", update_port_delay=0.1, nova_path="extended", **delays)
    time.sleep(0.3)
    figures = assert_recovered(senders, started)
    steps, states = result["steps"], result["states"]
    if order == "activation_first":
        assert steps["activated"] < steps["unplug"] and "switched" not in states
        assert "bound" in result["applied"]  # the activation's NB event moved every chassis
    else:
        assert steps["unplugged"] < steps["activate"] and states["switched"] < states["done"]
    # the outage ended with the first of the two, long before the second
    assert all(f["downtime_ms"] < (second - first) * 1e3 for f in figures), figures
    assert_nothing_stale(cloud, dest)


def test_nova_rolling_back_deletes_the_inactive_binding_and_aborts_with_the_source_untouched(cloud):
    sb, source, dest = cloud.sb, where(cloud), other(cloud)
    before = {ch.name: sorted(dump_flows(sb, ch.name)) for ch in sb.chassis_list()}
    senders = probes(cloud)
    started = time.time()
    result = migrate(cloud, "M", dest, strategy="unplug", nova_path="extended", rollback=True)
    time.sleep(0.3)
    figures = assert_recovered(senders, started)
    # the source kept serving: no run of lost replies (flows moving to dest would lose every probe until
    # the abort; the reply gap also counts the stalls of a starved shared CPU, so it is not the measure)
    assert all(f["lost_window_ms"] < 50 for f in figures), figures
    assert "aborted" in result["states"] and "done" not in result["states"]
    assert_nothing_stale(cloud, source)
    after = {ch.name: sorted(dump_flows(sb, ch.name)) for ch in sb.chassis_list()}
    assert after == before


def test_a_deleted_inactive_binding_alone_aborts_when_the_destination_never_unplugs(cloud):
    """The destination host is gone: Nova's rollback runs from the source only (migrating_to cleared,
    dest's binding deleted) and no unplug ever comes there. The binding's deletion aborts the
    migration; the VIF left behind on dest gets no flows."""
    sb, source, dest = cloud.sb, where(cloud), other(cloud)
    pid = port_id(cloud)
    port = cloud.nb("get", "lport", pid)
    binding = cloud.call("neutron", "create_port_binding", pid, {"binding": {"host": dest}})["binding"]
    assert binding["status"] == "INACTIVE" and binding["vif_details"]["datapath_type"] == "netdev"
    vmrec = sb.vm("M")
    sb.plug_vif("M", dest, pid, port.mac, "eth7", up=False, ovs_port=False)
    host = OsVifHost(sb, dest)
    spec = vif_spec(pid, port.mac, port.lswitch, binding, mtu=1400)
    instance = {"uuid": vmrec.uuid, "name": "M", "project_id": port.topic}
    try:
        host.call("plug", spec, instance)
        wait_until(lambda: (cloud.nb("get", "lport", pid).migration or port).prepared
                   if cloud.nb("get", "lport", pid).migration else False, 10, what="a prepared record")
        wait_until(lambda: statuses_up(cloud, pid) == {source, dest}, 10, what="VIF up on both")
        cloud.call("neutron", "delete_port_binding", pid, dest)
        wait_until(lambda: cloud.nb("get", "lport", pid).migration is None, 10, what="aborted")
        record = cloud.nb("get", "lport", pid)
        assert record.binding_chassis == source and record.inactive_bindings == []
        assert_everyone_places_m_on(cloud, source)  # dest's VIF is there, and has no flow
        assert any(sum(c.get("aborted", 0) for c in [controller_status(sb, ch)["migrations"]]) for ch in
                   (source, dest))
    finally:
        host.call("unplug", spec, instance)
        host.close()
        sb.unplug_vif("M", "eth7")
    assert_nothing_stale(cloud, source)


# -- Nova waits for Neutron's network-vif-plugged, which the sandbox's Nova API receives ----------------
def nova_events_for(cloud, pid: str, after: int) -> list[dict]:
    return asyncio.run(NovaEvents(cloud.sb.nova_url).events(after, tag=pid))


def nova_cursor(cloud) -> int:
    return asyncio.run(NovaEvents(cloud.sb.nova_url).cursor())


def test_a_booted_vm_is_active_only_once_its_chassis_reported_it_and_nova_heard_vif_plugged(cloud):
    sb = cloud.sb
    cursor = nova_cursor(cloud)
    sb.stop_controller("chassis-2")  # nobody to report the VIF yet: Nova must keep waiting
    boot = concurrent.futures.ThreadPoolExecutor(1)
    booting = boot.submit(cloud.call, "create_vm", "B", "chassis-2", "net1", "10.1.0.69")
    try:
        wait_until(lambda: [vm for vm in sb.vms() if vm.name == "B" and vm.vifs], 10, what="B's tap made")
        pid = sb.vm("B").vifs[0].port_id
        wait_until(lambda: nm.Names.tap(pid) in sb.ovs("chassis-2").vsctl("list-ports", "br-int").split(), 10,
                   what="os-vif's plug of B")
        time.sleep(1.0)
        assert not booting.done()
        assert show_port(cloud, pid)["status"] == "DOWN" and nova_events_for(cloud, pid, cursor) == []
    finally:
        sb.start_controller("chassis-2")
        boot.shutdown(wait=False)
    vm = booting.result(30)
    returned = time.time()
    reported = cloud.nb("get", PortStatus.table, pid).up["chassis-2"]
    [plugged] = nova_events_for(cloud, pid, cursor)
    assert (plugged["name"], plugged["server_uuid"], plugged["status"], plugged["host"]) == (
        PLUGGED, vm.uuid, "completed", "chassis-2")
    assert reported <= plugged["at"] <= returned  # reported, then heard by Nova, then the boot returned
    assert show_port(cloud, pid)["status"] == "ACTIVE"
    cloud.call("delete_vm", "B")
    wait_controllers_ready(sb)


@pytest.mark.parametrize("nova_path", ["extended", "legacy"])
def test_a_live_migration_switches_over_only_after_nova_heard_the_destination_s_vif_plugged(cloud, nova_path):
    sb, source, dest = cloud.sb, where(cloud), other(cloud)
    pid, server = port_id(cloud), sb.vm("M").uuid
    cursor = nova_cursor(cloud)
    result = migrate(cloud, "M", dest, nova_path=nova_path, memory_copy=0.1, update_port_delay=0.1)
    steps = result["steps"]
    ended = steps["activated"] if nova_path == "extended" else steps["updated_port"]
    # plug -> dest's chassis reports the VIF up -> Neutron's event reaches Nova -> Nova's wait returns
    # -> memory copy -> switchover -> activation (extended) or update_port (legacy)
    assert steps["plug"] < steps["dest_reported_up"] <= steps["vif_plugged_event"] <= steps["vif_plugged"]
    assert steps["vif_plugged"] < steps["memory_copied"] < steps["vm_source_down"] < ended
    events = nova_events_for(cloud, pid, cursor)
    plugged = [e for e in events if e["name"] == PLUGGED]
    assert plugged and all(e["server_uuid"] == server for e in events)
    assert round(plugged[0]["at"] - result["origin"], 6) == steps["vif_plugged_event"]
    # the source's VIF going is heard too
    wait_until(lambda: any(e["name"] == UNPLUGGED and e["at"] - result["origin"] > steps["unplug"]
                           for e in nova_events_for(cloud, pid, cursor)), 10, what="network-vif-unplugged")
    assert_nothing_stale(cloud, dest)


@pytest.mark.parametrize("nova_path", ["extended", "legacy"])
def test_a_destination_that_never_reports_its_vif_fails_the_migration_and_rolls_it_back(cloud, nova_path):
    sb, source, dest = cloud.sb, where(cloud), other(cloud)
    pid = port_id(cloud)
    def installed(ch: str) -> list[str]:  # what the controllers installed, not what expires by itself
        return sorted(f for f in dump_flows(sb, ch) if "idle_timeout" not in f and "hard_timeout" not in f)

    wait_arrival_windows_closed(sb)  # earlier tests' migrations: their admissions end by themselves
    before = {ch.name: installed(ch.name) for ch in sb.chassis_list() if ch.name != dest}
    sb.stop_controller(dest)
    try:
        with pytest.raises(VifPluggingFailed, match=rf"live migration of M from {source} to {dest} \(rolled back\): "
                                                    rf"no network-vif-plugged event for port {pid} on host {dest} "
                                                    r"within 1.5s"):
            migrate(cloud, "M", dest, nova_path=nova_path, vif_plugging_timeout=1.5)
        port = cloud.nb("get", "lport", pid)
        assert (port.binding_chassis, port.inactive_bindings, port.migrating_to, port.migration) == (
            source, [], None, None)
        assert [b["host"] for b in cloud.call("neutron", "list_port_bindings", pid)["bindings"]] == [source]
        assert [(v.chassis, v.up) for v in sb.vm("M").vifs] == [(source, True)]
        assert nm.Names.tap(pid) not in sb.ovs(dest).vsctl("list-ports", "br-int").split()  # os-vif unplugged
    finally:
        sb.start_controller(dest)
    wait_controllers_ready(sb)
    assert_nothing_stale(cloud, source)
    assert {ch: installed(ch) for ch in before} == before
    wait_until(lambda: pings(sb, "P", M_IP), 10, what="P -> M on the source")
