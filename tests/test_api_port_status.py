"""A port's status comes from the data plane (lport_status, as the chassis report it); its vif_type and
vif_details from the chassis of its binding."""
from __future__ import annotations

import time

import httpx
import pytest
import redis

from api_fixtures import api, nb_call  # noqa: F401 (fixtures)
from dfflow.models import Chassis, PortStatus

TOPIC = "admin"


@pytest.fixture
def http(api, nb_url):  # noqa: F811
    nb_call(nb_url, "create", Chassis(id="kernel-host", topic="chassis", tunnel_ip="192.0.2.1"))
    nb_call(nb_url, "create", Chassis(id="netdev-host", topic="chassis", tunnel_ip="192.0.2.2",
                                      datapath_type="netdev", bridge_name="br-dp"))
    with httpx.Client(base_url=api.url + "/v2.0", timeout=10) as client:
        yield client


def _network(http) -> str:
    net = http.post("/networks", json={"network": {}}).json()["network"]["id"]
    http.post("/subnets", json={"subnet": {"network_id": net, "cidr": "10.5.0.0/24"}})
    return net


def _port(http, net, **attrs) -> dict:
    resp = http.post("/ports", json={"port": {"network_id": net, "device_owner": "compute:nova", **attrs}})
    assert resp.status_code == 201, resp.text
    return resp.json()["port"]


def _report(nb_url, port, *hosts) -> None:
    """What a chassis writes when the port's VIF is up there (the controller's side of the contract)."""
    current = nb_call(nb_url, "get", "lport_status", port["id"])
    up = {h: time.time() for h in hosts}
    if current is None:
        nb_call(nb_url, "create", PortStatus(id=port["id"], topic=port["project_id"], up=up))
    else:
        nb_call(nb_url, "update", current.replace(up=up))


def test_status_is_down_until_the_active_host_reports_the_vif_up(http, nb_url):
    net = _network(http)
    port = _port(http, net, **{"binding:host_id": "kernel-host"})
    assert port["status"] == "DOWN"
    _report(nb_url, port, "netdev-host")  # up elsewhere only (a destination plugged early)
    assert http.get(f"/ports/{port['id']}").json()["port"]["status"] == "DOWN"
    _report(nb_url, port, "netdev-host", "kernel-host")
    assert http.get(f"/ports/{port['id']}").json()["port"]["status"] == "ACTIVE"
    assert [p["status"] for p in http.get("/ports", params={"id": port["id"]}).json()["ports"]] == ["ACTIVE"]
    assert http.put(f"/ports/{port['id']}", json={"port": {"admin_state_up": False}}).json()["port"][
        "status"] == "DOWN"
    http.put(f"/ports/{port['id']}", json={"port": {"admin_state_up": True}})
    # The binding moves to the other host, where the VIF is up too: still ACTIVE; then the VIF goes there.
    assert http.put(f"/ports/{port['id']}", json={"port": {"binding:host_id": "netdev-host"}}).json()["port"][
        "status"] == "ACTIVE"
    _report(nb_url, port, "kernel-host")
    assert http.get(f"/ports/{port['id']}").json()["port"]["status"] == "DOWN"
    assert http.get("/ports", params={"status": "DOWN"}).json()["ports"][0]["id"] == port["id"]


def test_vif_type_and_details_follow_the_bound_chassis(http):
    net = _network(http)
    kernel = _port(http, net, **{"binding:host_id": "kernel-host"})
    netdev = _port(http, net, **{"binding:host_id": "netdev-host"})
    nowhere = _port(http, net, **{"binding:host_id": "no-chassis-here"})
    unbound = _port(http, net)
    assert (kernel["binding:vif_type"], kernel["binding:vif_details"]) == ("ovs", {
        "port_filter": True, "datapath_type": "system", "bridge_name": "br-int", "ovs_hybrid_plug": False,
        "connectivity": "l2"})
    assert (netdev["binding:vif_type"], netdev["binding:vif_details"]) == ("ovs", {
        "port_filter": True, "datapath_type": "netdev", "bridge_name": "br-dp", "ovs_hybrid_plug": False,
        "connectivity": "l2"})
    assert (nowhere["binding:vif_type"], nowhere["binding:vif_details"], nowhere["status"]) == (
        "binding_failed", {}, "DOWN")
    assert (unbound["binding:vif_type"], unbound["binding:vif_details"], unbound["binding:host_id"]) == (
        "unbound", {}, "")
    listed = {p["id"]: p["binding:vif_type"] for p in http.get("/ports").json()["ports"]}
    assert listed == {kernel["id"]: "ovs", netdev["id"]: "ovs", nowhere["id"]: "binding_failed",
                      unbound["id"]: "unbound"}
    assert {p["id"] for p in http.get("/ports", params={"binding:vif_type": "binding_failed"}).json()[
        "ports"]} == {nowhere["id"]}


def _reads(nb_url) -> int:
    client = redis.Redis.from_url(nb_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("get", "mget", "smembers"))


def test_listing_ports_reads_the_nb_per_table_not_per_port(http, nb_url):
    net = _network(http)

    def reads_for_a_list() -> int:
        before = _reads(nb_url)
        http.get("/ports")
        return _reads(nb_url) - before

    for _ in range(2):
        _report(nb_url, _port(http, net, **{"binding:host_id": "kernel-host"}), "kernel-host")
    few = reads_for_a_list()
    for _ in range(20):
        _report(nb_url, _port(http, net, **{"binding:host_id": "netdev-host"}), "netdev-host")
    assert reads_for_a_list() == few
    assert {p["status"] for p in http.get("/ports").json()["ports"]} == {"ACTIVE"}


def test_deleting_a_port_deletes_its_status_and_an_orphan_status_is_harmless(http, nb_url):
    net = _network(http)
    port = _port(http, net, **{"binding:host_id": "kernel-host"})
    _report(nb_url, port, "kernel-host")
    assert http.delete(f"/ports/{port['id']}").status_code == 204
    assert nb_call(nb_url, "get", "lport_status", port["id"]) is None
    # A chassis reporting after the port is gone leaves an orphan: nothing shows it, a new port ignores it.
    _report(nb_url, port, "kernel-host")
    other = _port(http, net, **{"binding:host_id": "kernel-host"})
    assert [p["id"] for p in http.get("/ports").json()["ports"]] == [other["id"]]
    assert http.get(f"/ports/{port['id']}").status_code == 404
    assert other["status"] == "DOWN"
