"""openstacksdk, unmodified and without Keystone, drives the Neutron-compatible API over real HTTP."""
from __future__ import annotations

import httpx
import openstack
import pytest
from openstack import exceptions as sdk_errors

from api_fixtures import TOKEN, api, nb_call, sdk, token_api  # noqa: F401 (fixtures)

# openstacksdk announces its own future API changes on every call; they are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning",
                                        "ignore::DeprecationWarning:openstack")


@pytest.fixture
def conn(api):  # noqa: F811
    return sdk(api.url)


def test_version_discovery_finds_v2_without_keystone(api):  # noqa: F811
    root = httpx.get(api.url + "/").json()
    assert root["versions"][0]["id"] == "v2.0" and root["versions"][0]["status"] == "CURRENT"
    assert root["versions"][0]["links"][0]["href"] == api.url + "/v2.0/"
    v2 = httpx.get(api.url + "/v2.0").json()
    assert {r["collection"] for r in v2["resources"]} == {"networks", "subnets", "ports", "routers",
                                                          "floatingips"}
    # The root URL as the no-auth endpoint (openstacksdk appends v2.0), or the v2.0 URL as override.
    for conn in (sdk(api.url),
                 sdk(api.url, auth={}, network_endpoint_override=api.url + "/v2.0"),
                 openstack.connection.Connection(auth_type="none", auth={"endpoint": api.url})):
        assert conn.network.get_api_major_version() == (2, 0)
        assert list(conn.network.networks()) == []
    assert "binding" in {e.alias for e in sdk(api.url).network.extensions()}


def test_network_subnet_port_router_floating_ip_lifecycle(conn, nb_url):
    net = conn.network
    ext = net.create_network(name="public", is_router_external=True)
    ext_sn = net.create_subnet(network_id=ext.id, cidr="172.24.4.0/24", ip_version=4, name="public-v4")
    priv = net.create_network(name="private", provider_segmentation_id=4242, mtu=1450)
    sn = net.create_subnet(network_id=priv.id, cidr="10.0.0.0/24", ip_version=4, name="private-v4")
    assert ext.provider_segmentation_id == 1 and priv.provider_segmentation_id == 4242
    assert (priv.provider_network_type, priv.mtu, priv.status, priv.is_admin_state_up) == ("geneve", 1450,
                                                                                          "ACTIVE", True)
    assert ext.is_router_external and not priv.is_router_external and priv.project_id == "admin"
    assert net.get_network(priv.id).subnet_ids == [sn.id]
    assert sn.allocation_pools == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert (sn.gateway_ip, sn.ip_version, sn.is_dhcp_enabled) == ("10.0.0.1", 4, False)

    vm1 = net.create_port(network_id=priv.id, name="vm1", device_id="vm-1", device_owner="compute:nova",
                          binding_host_id="chassis-1")
    vm2 = net.create_port(network_id=priv.id, name="vm2", mac_address="fa:16:3e:00:00:02",
                          fixed_ips=[{"subnet_id": sn.id, "ip_address": "10.0.0.50"}])
    assert vm1.fixed_ips == [{"subnet_id": sn.id, "ip_address": "10.0.0.2"}]
    assert vm1.mac_address.startswith("fa:16:3e:") and len(vm1.mac_address) == 17
    # No chassis runs on chassis-1 and no VIF is up: Neutron's answer for a host nothing can bind.
    assert (vm1.status, vm1.binding_host_id, vm1.binding_vif_type) == ("DOWN", "chassis-1", "binding_failed")
    assert (vm2.status, vm2.binding_host_id, vm2.binding_vif_type) == ("DOWN", "", "unbound")
    assert vm2.fixed_ips == [{"subnet_id": sn.id, "ip_address": "10.0.0.50"}]
    lport = nb_call(nb_url, "get", "lport", vm1.id)
    assert (lport.lswitch, lport.ips, lport.binding_chassis, lport.mac) == (priv.id, ["10.0.0.2"], "chassis-1",
                                                                            vm1.mac_address)

    router = net.create_router(name="r1", external_gateway_info={"network_id": ext.id})
    assert router.external_gateway_info["network_id"] == ext.id
    assert router.external_gateway_info["external_fixed_ips"] == [{"subnet_id": ext_sn.id,
                                                                   "ip_address": "172.24.4.2"}]
    reply = net.add_interface_to_router(router, subnet=sn.id)
    assert (reply["id"], reply["subnet_id"], reply["network_id"]) == (router.id, sn.id, priv.id)
    owned = {p.device_owner: p for p in net.ports(device_id=router.id)}
    assert set(owned) == {"network:router_interface", "network:router_gateway"}
    assert owned["network:router_interface"].id == reply["port_id"]
    assert owned["network:router_interface"].fixed_ips == [{"subnet_id": sn.id, "ip_address": "10.0.0.1"}]
    assert net.get_port(reply["port_id"]).network_id == priv.id
    nb_router = nb_call(nb_url, "get", "lrouter", router.id)
    assert [(p.subnet, p.ip) for p in nb_router.ports] == [(sn.id, "10.0.0.1")]
    assert nb_router.external_gateway.ip == "172.24.4.2"

    fip = net.create_ip(floating_network_id=ext.id, port_id=vm1.id)
    assert (fip.floating_ip_address, fip.fixed_ip_address, fip.router_id, fip.status) == (
        "172.24.4.3", "10.0.0.2", router.id, "ACTIVE")

    # list, filter, show, find
    assert {p.id for p in net.ports(network_id=priv.id, device_owner="compute:nova")} == {vm1.id}
    assert {p.id for p in net.ports(network_id=priv.id)} == {vm1.id, vm2.id, reply["port_id"]}
    assert [n.id for n in net.networks(is_router_external=True)] == [ext.id]
    assert [s.id for s in net.subnets(network_id=priv.id)] == [sn.id]
    assert [r.id for r in net.routers(name="r1")] == [router.id]
    assert [i.id for i in net.ips(port_id=vm1.id)] == [fip.id]
    assert net.find_network("private").id == priv.id
    assert net.find_port("vm2").mac_address == "fa:16:3e:00:00:02"
    assert net.get_ip(fip.id).floating_network_id == ext.id

    # update
    assert net.update_network(priv, name="private2").name == "private2"
    assert net.update_subnet(sn, name="renamed").name == "renamed"
    vm2 = net.update_port(vm2, name="vm2b", is_admin_state_up=False)
    assert (vm2.name, vm2.is_admin_state_up) == ("vm2b", False)
    assert nb_call(nb_url, "get", "lport", vm2.id).enabled is False
    assert net.update_router(router, name="r2").name == "r2"
    fip = net.update_ip(fip, port_id=vm2.id)
    assert (fip.port_id, fip.fixed_ip_address) == (vm2.id, "10.0.0.50")
    fip = net.update_ip(fip, port_id=None)
    assert (fip.port_id, fip.fixed_ip_address, fip.router_id, fip.status) == (None, None, None, "DOWN")

    # delete, in the order Neutron's users do
    net.delete_ip(fip)
    net.remove_interface_from_router(router, subnet=sn.id)
    net.update_router(router, external_gateway_info={})
    net.delete_router(router)
    for port in (vm1, vm2):
        net.delete_port(port)
    for subnet in (sn, ext_sn):
        net.delete_subnet(subnet)
    for network in (priv, ext):
        net.delete_network(network)
    assert list(net.networks()) == list(net.subnets()) == list(net.ports()) == []
    assert list(net.routers()) == list(net.ips()) == []
    assert nb_call(nb_url, "list", "lport") == [] and nb_call(nb_url, "list", "lswitch") == []
    with pytest.raises(sdk_errors.NotFoundException):
        net.get_network(priv.id)


def test_update_port_binding_host_moves_the_nb_binding(conn, nb_url):
    net = conn.network
    network = net.create_network(name="n")
    net.create_subnet(network_id=network.id, cidr="192.168.10.0/24", ip_version=4)
    port = net.create_port(network_id=network.id, binding_host_id="chassis-1")
    before = nb_call(nb_url, "get", "lport", port.id)
    assert before.binding_chassis == "chassis-1"

    moved = net.update_port(port, binding_host_id="chassis-2")
    after = nb_call(nb_url, "get", "lport", port.id)
    assert after.binding_chassis == "chassis-2" and after.version > before.version
    assert moved.binding_host_id == "chassis-2" and moved.revision_number == after.version
    assert (after.mac, after.ips, after.lswitch) == (before.mac, before.ips, before.lswitch)

    # The same host again writes nothing; a stale If-Match revision is refused (compare-and-set).
    assert net.update_port(port, binding_host_id="chassis-2").revision_number == after.version
    with pytest.raises(sdk_errors.PreconditionFailedException):
        net.update_port(port, if_revision=before.version, binding_host_id="chassis-3")
    assert nb_call(nb_url, "get", "lport", port.id).binding_chassis == "chassis-2"
    assert net.update_port(port, if_revision=after.version, binding_host_id="").binding_host_id == ""
    assert nb_call(nb_url, "get", "lport", port.id).binding_chassis is None


def test_pagination_and_sorting_through_the_sdk(conn, api):  # noqa: F811
    created = sorted(conn.network.create_network(name=f"net{i}").id for i in range(5))
    assert [n.id for n in conn.network.networks(limit=2)] == created  # the sdk follows networks_links
    page = httpx.get(api.url + "/v2.0/networks", params={"limit": 2}).json()
    assert [n["id"] for n in page["networks"]] == created[:2]
    assert [link["rel"] for link in page["networks_links"]] == ["next"]
    nxt = httpx.get(page["networks_links"][0]["href"]).json()
    assert [n["id"] for n in nxt["networks"]] == created[2:4]
    assert {link["rel"] for link in nxt["networks_links"]} == {"next", "previous"}
    back = httpx.get(api.url + "/v2.0/networks",
                     params={"limit": 2, "marker": created[2], "page_reverse": "true"}).json()
    assert [n["id"] for n in back["networks"]] == created[:2]
    named = conn.network.networks(sort_key="name", sort_dir="desc")
    assert [n.name for n in named] == [f"net{i}" for i in range(4, -1, -1)]
    only = httpx.get(api.url + "/v2.0/networks", params=[("fields", "id"), ("fields", "name")]).json()
    assert all(set(n) == {"id", "name"} for n in only["networks"])


def test_token_auth_with_the_sdk(token_api):  # noqa: F811
    good = sdk(token_api.url, auth_type="admin_token", auth={"endpoint": token_api.url, "token": TOKEN})
    assert good.network.create_network(name="secured").name == "secured"
    bad = sdk(token_api.url, auth_type="admin_token", auth={"endpoint": token_api.url, "token": "wrong"})
    with pytest.raises(sdk_errors.HttpException) as caught:
        list(bad.network.networks())
    assert caught.value.status_code == 401


def test_projects_fixed_ip_filters_ipv6_and_address_updates(conn, api, nb_url):  # noqa: F811
    net = conn.network
    network = net.create_network(name="dual", project_id="tenant-a")
    v4 = net.create_subnet(network_id=network.id, cidr="10.3.0.0/24", ip_version=4, project_id="tenant-a")
    v6 = net.create_subnet(network_id=network.id, cidr="fd00:3::/64", ip_version=6, project_id="tenant-a")
    assert v6.gateway_ip == "fd00:3::1" and v6.allocation_pools == [{"start": "fd00:3::2",
                                                                     "end": "fd00:3::ffff:ffff:ffff:ffff"}]
    assert nb_call(nb_url, "get", "lswitch", network.id).topic == "tenant-a"
    port = net.create_port(network_id=network.id, fixed_ips=[{"subnet_id": v4.id}, {"subnet_id": v6.id}])
    assert [f["ip_address"] for f in port.fixed_ips] == ["10.3.0.2", "fd00:3::2"]
    assert port.project_id == "admin"  # no project given: the default
    other = httpx.post(api.url + "/v2.0/ports", headers={"x-project-id": "tenant-b"},
                       json={"port": {"network_id": network.id}}).json()["port"]
    assert other["project_id"] == "tenant-b" and other["fixed_ips"][0]["ip_address"] == "10.3.0.3"
    assert [p.id for p in net.ports(project_id="tenant-b")] == [other["id"]]
    found = httpx.get(api.url + "/v2.0/ports", params={"fixed_ips": "ip_address=fd00:3::2"}).json()["ports"]
    assert [p["id"] for p in found] == [port.id]
    found = httpx.get(api.url + "/v2.0/ports", params={"fixed_ips": f"subnet_id={v4.id}"}).json()["ports"]
    assert {p["id"] for p in found} == {port.id, other["id"]}

    # Naming only the subnet keeps the address the port has there; dropping an entry frees it.
    kept = net.update_port(port, fixed_ips=[{"subnet_id": v4.id}])
    assert [f["ip_address"] for f in kept.fixed_ips] == ["10.3.0.2"]
    moved = net.update_port(port, fixed_ips=[{"ip_address": "10.3.0.77"}, {"subnet_id": v6.id}])
    assert [f["ip_address"] for f in moved.fixed_ips] == ["10.3.0.77", "fd00:3::2"]
    assert nb_call(nb_url, "get", "lport", port.id).ips == ["10.3.0.77", "fd00:3::2"]
    again = net.create_port(network_id=network.id)
    assert again.fixed_ips[0]["ip_address"] == "10.3.0.2"  # the freed address is the lowest free one
    with pytest.raises(sdk_errors.BadRequestException):
        net.create_subnet(network_id=network.id, cidr="10.4.0.0/24", ip_version=4,
                          project_id="tenant-a", tenant_id="tenant-b")
