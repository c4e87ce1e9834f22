"""`dfflow neutron-sync` and the driver's maintenance against a real neutron-server and a real redis: the NB db
is made to match Neutron's database after objects are deleted, changed, added or flushed behind its back."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from api_fixtures import nb_call, sdk
from controller_fixtures import wait_until
from neutron_fixtures import flush_nb
from dfflow.models import Chassis, LogicalSwitch, MigrationRecord, PortStatus
from dfflow.nb.store import NbApi

pytestmark = [pytest.mark.neutron,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")]

NEUTRON_TABLES = ("lswitch", "subnet", "lport", "lrouter", "floatingip")


def nb_contents(nb_url: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every NB object Neutron's resources make, without its version."""
    found = {}
    for table in NEUTRON_TABLES:
        for obj in nb_call(nb_url, "list", table):
            found[(table, obj.id)] = {k: v for k, v in obj.to_dict().items() if k != "version"}
    return found


def modify(nb_url: str, table: str, obj_id: str, **changes: Any) -> None:
    nb_call(nb_url, "modify", table, obj_id, lambda obj: obj.replace(**changes))


@pytest.fixture
def cloud(neutron):
    """A network with a subnet and two VM ports, a router with an interface and a gateway, and a floating IP."""
    net = sdk(neutron.url).network
    ext = net.create_network(name="sync-public", is_router_external=True)
    net.create_subnet(network_id=ext.id, cidr="172.25.4.0/24", ip_version=4)
    priv = net.create_network(name="sync-tenant")
    subnet = net.create_subnet(network_id=priv.id, cidr="10.31.0.0/24", ip_version=4)
    vm1 = net.create_port(network_id=priv.id, name="vm1", device_owner="compute:nova")
    vm2 = net.create_port(network_id=priv.id, name="vm2", device_owner="compute:nova")
    router = net.create_router(name="sync-r", external_gateway_info={"network_id": ext.id})
    net.add_interface_to_router(router, subnet_id=subnet.id)
    fip = net.create_ip(floating_network_id=ext.id, port_id=vm1.id)
    yield dict(net=net, ext=ext, priv=priv, subnet=subnet, vm1=vm1, vm2=vm2, router=router, fip=fip)
    net.delete_ip(fip)
    net.remove_interface_from_router(router, subnet_id=subnet.id)
    net.delete_router(router)
    for port in (vm1, vm2):
        net.delete_port(port)
    net.delete_network(priv)
    net.delete_network(ext)


def test_log_reports_deleted_drifted_and_extra_objects_and_repair_fixes_them_keeping_nb_only_fields(neutron, cloud):
    url = neutron.nb_url
    # The deployment is shared by the session's tests: what earlier ones left (a status row of a port they
    # deleted, written by a chassis after the delete) is repaired first, so that this test starts in step.
    baseline = neutron.api.sync("repair")
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    checked = neutron.api.sync("log")
    assert checked.returncode == 0, "NB and Neutron differ before anything is done behind its back: " + checked.stdout
    before = nb_contents(url)
    # Behind Neutron's back: objects deleted, a MAC changed (the port migrating meanwhile), objects added.
    for table, obj_id in (("floatingip", cloud["fip"].id), ("lrouter", cloud["router"].id),
                          ("lport", cloud["vm1"].id)):
        nb_call(url, "delete", table, obj_id)
    record = MigrationRecord(chassis="sync-dest", source="sync-src")
    modify(url, "lport", cloud["vm2"].id, mac="fa:16:3e:99:99:99", migration=record, activation_strategy="announce")
    nb_call(url, "create", LogicalSwitch(id="ghost-net", topic="t", name="ghost", segmentation_id=64999))
    nb_call(url, "create", PortStatus(id="ghost-port", topic="t", up={"chassis-x": 1.0}))
    nb_call(url, "create", PortStatus(id=cloud["vm2"].id, topic="t", up={"chassis-y": 2.0}))
    nb_call(url, "create", Chassis(id="sync-chassis", topic="chassis", tunnel_ip="172.31.0.77"))
    changed = nb_contents(url)

    logged = neutron.api.sync("log", "--verbose")
    assert logged.returncode == 1, logged.stdout + logged.stderr
    for line in (f"missing floatingip {cloud['fip'].id}", f"missing lrouter {cloud['router'].id}",
                 f"missing lport {cloud['vm1'].id}", f"drifted lport {cloud['vm2'].id}: mac",
                 "extra lswitch ghost-net", "extra lport_status ghost-port"):
        assert line in logged.stdout, (line, logged.stdout)
    assert f"lport_status {cloud['vm2'].id}" not in logged.stdout
    assert nb_contents(url) == changed, "--mode log wrote to the NB"

    repaired = neutron.api.sync("repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    summary = {line.split()[0]: line.split()[1:] for line in repaired.stdout.splitlines()[1:6]}
    assert summary["lport"] == ["1", "1", "0", "2", "0"]  # missing, drifted, extra, fixed, failed
    after = nb_contents(url)
    vm2 = after.pop(("lport", cloud["vm2"].id))
    assert vm2["mac"] == cloud["vm2"].mac_address
    # NB-only fields are kept: the migration record and the activation strategy.
    assert (vm2["migration"]["chassis"], vm2["migration"]["source"], vm2["activation_strategy"]) == (
        "sync-dest", "sync-src", "announce")
    expected = dict(before)
    expected.pop(("lport", cloud["vm2"].id))
    assert after == expected
    assert nb_call(url, "get", "lport_status", "ghost-port") is None
    assert nb_call(url, "get", "lport_status", cloud["vm2"].id).up == {"chassis-y": 2.0}
    assert nb_call(url, "get", "chassis", "sync-chassis") is not None  # the chassis table is never touched
    again = neutron.api.sync("log")
    assert again.returncode == 0 and "0 differences" in again.stdout, again.stdout
    modify(url, "lport", cloud["vm2"].id, migration=None, activation_strategy=None)
    nb_call(url, "delete", "chassis", "sync-chassis")
    nb_call(url, "delete", "lport_status", cloud["vm2"].id)


def test_an_nb_flushed_entirely_is_restored_by_the_start_up_sync(neutron, cloud):
    before = nb_contents(neutron.nb_url)
    flush_nb(neutron.nb_url)
    assert nb_contents(neutron.nb_url) == {}
    neutron.api.restart_api()  # the driver syncs once its plugins are loaded
    wait_until(lambda: nb_contents(neutron.nb_url) == before, 30, interval=0.2,
               what="the NB restored by neutron-server's start-up sync")
    assert neutron.api.sync("log").returncode == 0


def test_an_update_whose_nb_write_fails_is_marked_and_repaired_by_the_maintenance(neutron, cloud):
    url, net = neutron.nb_url, cloud["net"]
    # A stale NB port (say, from a restored backup) holds the MAC Neutron is about to give vm2: the NB
    # refuses vm2's update after Neutron committed it.
    taken = "fa:16:3e:55:44:33"
    nb_call(url, "create", type(nb_call(url, "get", "lport", cloud["vm1"].id))(
        id="stale-port", topic="t", lswitch=cloud["priv"].id, mac=taken))
    updated = net.update_port(cloud["vm2"], mac_address=taken, name="vm2-renamed")
    assert updated.mac_address == taken  # Neutron has it; ML2 logged the NB's refusal
    lport = wait_until(lambda: (p := nb_call(url, "get", "lport", cloud["vm2"].id)).mac == taken and p, 20,
                       interval=0.2, what="vm2's update repaired in the NB by the maintenance task")
    assert lport.name == "vm2-renamed"
    assert nb_call(url, "get", "lport", "stale-port") is None

    def marks() -> set:
        async def members() -> set:
            nb = NbApi(url)
            try:
                return await nb.redis.smembers("dfflow:neutron:dirty")
            finally:
                await nb.close()
        return asyncio.run(members())
    wait_until(lambda: marks() == set(), 10, what="the dirty mark cleared once repaired")
    assert "update_port=1" in neutron.api.sync("log").stdout  # the failure is counted where operators look
