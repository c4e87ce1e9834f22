"""python-neutronclient makes Nova's live-migration calls, in Nova's order, against `dfflow api` on a real NB.

The calls and bodies are those of nova/network/neutron.py: `bind_ports_to_host` (conductor),
`setup_networks_on_host` (destination's pre-live-migration: `migrating_to`; clean-up: the profile
cleared and the source's binding deleted), `migrate_instance_start` (source: show, then activate the
destination's binding) and `migrate_instance_finish` / `_update_port_binding_for_instance`
(destination: `update_port(binding:host_id, device_owner, binding:profile)` when the host differs).
"""
from __future__ import annotations

import uuid

import pytest
import redis
from neutronclient.common import exceptions as nc_errors

from api_fixtures import api, nb_call, neutron_client  # noqa: F401 (fixtures)
from dfflow.models import Chassis, InactiveBinding

PROJECT = "tenant-nova"
SRC, DEST = "compute-src", "compute-dest"
AZ = "nova"


@pytest.fixture
def cloud(api, nb_url):  # noqa: F811
    """Two chassis (the source on the kernel datapath, the destination userspace) and a VM's port on SRC."""
    nb_call(nb_url, "create", Chassis(id=SRC, topic="chassis", tunnel_ip="192.0.2.1"))
    nb_call(nb_url, "create", Chassis(id=DEST, topic="chassis", tunnel_ip="192.0.2.2", datapath_type="netdev",
                                      bridge_name="br-int"))
    neutron = neutron_client(api.url)
    net = neutron.create_network({"network": {"name": "n", "project_id": PROJECT}})["network"]
    neutron.create_subnet({"subnet": {"network_id": net["id"], "cidr": "10.3.0.0/24", "ip_version": 4,
                                      "project_id": PROJECT}})
    vm = str(uuid.uuid4())
    port = neutron.create_port({"port": {"network_id": net["id"], "device_id": vm, "device_owner": f"compute:{AZ}",
                                         "binding:host_id": SRC, "project_id": PROJECT}})["port"]
    return {"neutron": neutron, "vm": vm, "port": port["id"], "nb_url": nb_url}


def _stored(cloud):
    return nb_call(cloud["nb_url"], "get", "lport", cloud["port"])


def _revision(cloud) -> int:
    client = redis.Redis.from_url(cloud["nb_url"])
    try:
        return int(client.get("dfflow:rev"))
    finally:
        client.close()


# -- Nova's calls, as nova/network/neutron.py makes them --------------------------------------------------

def has_port_binding_extension(neutron) -> bool:
    return "binding-extended" in {e["alias"] for e in neutron.list_extensions()["extensions"]}


def bind_ports_to_host(neutron, port_id, host, vnic_type="normal", profile=None) -> dict:
    body = {"binding": {"host": host, "vnic_type": vnic_type, "profile": profile or {}}}
    return neutron.create_port_binding(port_id, body)["binding"]


def setup_networks_on_host(neutron, cloud, instance_host, host, teardown=False) -> None:
    """The port part of Nova's setup_networks_on_host for ports on `instance_host`."""
    if host == instance_host and not teardown:
        return
    ports = neutron.list_ports(device_id=cloud["vm"], tenant_id=PROJECT,
                               **{"binding:host_id": instance_host})["ports"]
    for port in ports:
        profile = port.get("binding:profile") or {}
        if teardown:
            if "migrating_to" in profile:
                del profile["migrating_to"]
                neutron.update_port(port["id"], {"port": {"binding:profile": profile}})
        elif profile.get("migrating_to") != host:
            profile["migrating_to"] = host
            neutron.update_port(port["id"], {"port": {"binding:profile": profile}})
    if teardown and host != instance_host and has_port_binding_extension(neutron):
        for port in ports:
            try:
                neutron.delete_port_binding(port["id"], host)
            except nc_errors.NeutronClientException as exc:
                if exc.status_code != 404:
                    raise


def migrate_instance_start(neutron, port_id, dest) -> None:
    binding = neutron.show_port_binding(port_id, dest)["binding"]
    if binding["status"] != "ACTIVE":
        neutron.activate_port_binding(port_id, dest)


def migrate_instance_finish(neutron, cloud, dest) -> None:
    for port in neutron.list_ports(device_id=cloud["vm"], tenant_id=PROJECT)["ports"]:
        updates = {}
        profile = port.get("binding:profile") or {}
        if port["binding:host_id"] != dest or port["binding:vif_type"] in ("unbound", "binding_failed"):
            updates = {"binding:host_id": dest, "device_owner": f"compute:{AZ}"}
            if profile.get("migrating_to"):
                del profile["migrating_to"]
                updates["binding:profile"] = profile
        if updates:
            neutron.update_port(port["id"], {"port": updates})


NETDEV_DETAILS = {"port_filter": True, "datapath_type": "netdev", "bridge_name": "br-int",
                  "ovs_hybrid_plug": False, "connectivity": "l2"}


def test_binding_extended_live_migration_in_novas_order(cloud):
    neutron, port_id = cloud["neutron"], cloud["port"]
    assert has_port_binding_extension(neutron)

    # Conductor: an INACTIVE binding for the destination, with what os-vif needs to plug there.
    created = bind_ports_to_host(neutron, port_id, DEST)
    assert created == {"host": DEST, "vif_type": "ovs", "vif_details": NETDEV_DETAILS, "vnic_type": "normal",
                       "profile": {}, "status": "INACTIVE"}
    stored = _stored(cloud)
    assert (stored.binding_chassis, stored.inactive_bindings) == (SRC, [InactiveBinding(DEST)])
    listed = neutron.list_port_bindings(port_id)["bindings"]
    assert sorted((b["host"], b["status"], b["vif_details"]["datapath_type"]) for b in listed) == [
        (DEST, "INACTIVE", "netdev"), (SRC, "ACTIVE", "system")]

    # Destination's pre_live_migration: migrating_to on the port (the active binding's profile).
    setup_networks_on_host(neutron, cloud, SRC, DEST)
    assert _stored(cloud).migrating_to == DEST
    assert neutron.show_port(port_id)["port"]["binding:profile"] == {"migrating_to": DEST}

    # Source's post-live-migration: activation, one compare-and-set write.
    before = _revision(cloud)
    migrate_instance_start(neutron, port_id, DEST)
    assert _revision(cloud) == before + 1
    stored = _stored(cloud)
    assert (stored.binding_chassis, stored.migrating_to, stored.binding_profile) == (DEST, None, {})
    assert stored.inactive_bindings == [InactiveBinding(SRC, "normal", {"migrating_to": DEST})]
    shown = neutron.show_port(port_id)["port"]
    assert (shown["binding:host_id"], shown["binding:vif_type"], shown["binding:vif_details"]) == (
        DEST, "ovs", NETDEV_DETAILS)
    assert neutron.show_port_binding(port_id, SRC)["binding"]["status"] == "INACTIVE"
    migrate_instance_start(neutron, port_id, DEST)  # a second post-migration finds it ACTIVE: no call
    assert _revision(cloud) == before + 1

    # Destination's post_live_migration_at_destination: nothing to update, then the source's binding goes.
    revision = _revision(cloud)
    migrate_instance_finish(neutron, cloud, DEST)
    assert _revision(cloud) == revision
    setup_networks_on_host(neutron, cloud, DEST, SRC, teardown=True)
    stored = _stored(cloud)
    assert (stored.binding_chassis, stored.inactive_bindings, stored.binding_profile) == (DEST, [], {})
    assert [b["host"] for b in neutron.list_port_bindings(port_id)["bindings"]] == [DEST]


def test_failed_binding_extended_migration_deletes_the_inactive_binding(cloud):
    neutron, port_id = cloud["neutron"], cloud["port"]
    original = _stored(cloud)
    bind_ports_to_host(neutron, port_id, DEST)
    setup_networks_on_host(neutron, cloud, SRC, DEST)
    # rollback_live_migration_at_destination: teardown on the destination while the VM stays on SRC.
    setup_networks_on_host(neutron, cloud, SRC, DEST, teardown=True)
    stored = _stored(cloud)
    assert (stored.binding_chassis, stored.inactive_bindings, stored.binding_profile) == (SRC, [], {})
    assert stored.replace(version=original.version) == original
    with pytest.raises(nc_errors.NotFound):
        neutron.show_port_binding(port_id, DEST)


def test_legacy_live_migration_in_novas_order(cloud):
    """Without the extension Nova marks migrating_to at pre-live-migration and moves binding:host_id at
    migrate_instance_finish, clearing the mark in the same update. A profile's other keys survive."""
    neutron, port_id = cloud["neutron"], cloud["port"]
    neutron.update_port(port_id, {"port": {"binding:profile": {"os_vif": "keep-me"}}})
    setup_networks_on_host(neutron, cloud, SRC, DEST)
    stored = _stored(cloud)
    assert (stored.binding_chassis, stored.migrating_to) == (SRC, DEST)
    assert stored.binding_profile == {"os_vif": "keep-me", "migrating_to": DEST}
    setup_networks_on_host(neutron, cloud, SRC, DEST)  # repeated: already marked, nothing written
    assert _stored(cloud).version == stored.version

    migrate_instance_finish(neutron, cloud, DEST)
    stored = _stored(cloud)
    assert (stored.binding_chassis, stored.migrating_to, stored.binding_profile) == (DEST, None,
                                                                                     {"os_vif": "keep-me"})
    shown = neutron.show_port(port_id)["port"]
    assert (shown["binding:host_id"], shown["binding:vif_type"], shown["device_owner"]) == (
        DEST, "ovs", f"compute:{AZ}")
    setup_networks_on_host(neutron, cloud, DEST, SRC, teardown=True)  # finds no migrating_to left
    assert _stored(cloud) == stored


def test_host_update_onto_an_inactive_binding_makes_it_the_active_one(cloud):
    """Both paths mixed (an inactive binding, then the legacy host update): the port keeps one binding per host."""
    neutron, port_id = cloud["neutron"], cloud["port"]
    bind_ports_to_host(neutron, port_id, DEST)
    neutron.update_port(port_id, {"port": {"binding:host_id": DEST}})
    stored = _stored(cloud)
    assert (stored.binding_chassis, stored.inactive_bindings) == (DEST, [])
    assert [(b["host"], b["status"]) for b in neutron.list_port_bindings(port_id)["bindings"]] == [(DEST, "ACTIVE")]
