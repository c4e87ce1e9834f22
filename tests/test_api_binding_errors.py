"""Bad binding requests get Neutron's codes and types, name the field at fault, and leave the NB port as it was."""
from __future__ import annotations

import httpx
import pytest
from neutronclient.common import exceptions as nc_errors

from api_fixtures import api, nb_call, neutron_client  # noqa: F401 (fixtures)
from dfflow.models import PROFILE_MAX_BYTES, Chassis

SRC, DEST = "compute-src", "compute-dest"


@pytest.fixture
def setup(api, nb_url):  # noqa: F811
    for name in (SRC, DEST):
        nb_call(nb_url, "create", Chassis(id=name, topic="chassis", tunnel_ip="192.0.2.1"))
    http = httpx.Client(base_url=api.url + "/v2.0", timeout=10)
    net = http.post("/networks", json={"network": {}}).json()["network"]["id"]
    http.post("/subnets", json={"subnet": {"network_id": net, "cidr": "10.4.0.0/24"}})
    port = http.post("/ports", json={"port": {"network_id": net, "device_owner": "compute:nova", "device_id": "vm",
                                              "binding:host_id": SRC}}).json()["port"]["id"]
    plain = http.post("/ports", json={"port": {"network_id": net}}).json()["port"]["id"]
    yield {"http": http, "neutron": neutron_client(api.url), "port": port, "plain": plain, "nb_url": nb_url,
           "net": net}
    http.close()


def _error(resp: httpx.Response, status: int, type_: str, *words: str) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["NeutronError"]
    assert err["type"] == type_, err
    for word in words:
        assert word in err["message"], err


def _ports(setup):
    return [nb_call(setup["nb_url"], "get", "lport", p) for p in (setup["port"], setup["plain"])]


def test_unknown_ports_and_host_bindings_are_404(setup):
    neutron, port = setup["neutron"], setup["port"]
    before = _ports(setup)
    calls = [lambda: neutron.create_port_binding("ghost", {"binding": {"host": DEST}}),
             lambda: neutron.list_port_bindings("ghost"),
             lambda: neutron.show_port_binding("ghost", SRC),
             lambda: neutron.activate_port_binding("ghost", DEST),
             lambda: neutron.delete_port_binding("ghost", DEST)]
    for call in calls:
        with pytest.raises(nc_errors.NotFound) as caught:
            call()
        assert "Port ghost could not be found" in str(caught.value)
    for call in (lambda: neutron.show_port_binding(port, DEST), lambda: neutron.activate_port_binding(port, DEST),
                 lambda: neutron.delete_port_binding(port, DEST)):
        with pytest.raises(nc_errors.NotFound) as caught:
            call()
        assert f"Binding for port {port} for host {DEST} could not be found." in str(caught.value)
    assert _ports(setup) == before


def test_duplicates_and_activating_twice_are_409(setup):
    neutron, http, port = setup["neutron"], setup["http"], setup["port"]
    neutron.create_port_binding(port, {"binding": {"host": DEST}})
    before = _ports(setup)
    for host in (DEST, SRC):  # an inactive binding there already; the active one
        _error(http.post(f"/ports/{port}/bindings", json={"binding": {"host": host}}), 409,
               "PortBindingAlreadyExists", f"on host {host} already exists")
    _error(http.put(f"/ports/{port}/bindings/{SRC}/activate"), 409, "PortBindingAlreadyActive",
           f"on host {SRC} is already active")
    assert _ports(setup) == before
    neutron.activate_port_binding(port, DEST)
    activated = _ports(setup)
    with pytest.raises(nc_errors.Conflict) as caught:  # Nova takes a 409 here as "already active"
        neutron.activate_port_binding(port, DEST)
    assert caught.value.status_code == 409
    assert _ports(setup) == activated


def test_malformed_binding_requests_are_400_naming_the_field(setup):
    http, port, plain = setup["http"], setup["port"], setup["plain"]
    before = _ports(setup)
    big = {"k": "x" * PROFILE_MAX_BYTES}
    cases = [({"binding": {}}, "host"),
             ({"binding": {"host": "no spaces"}}, "host"),
             ({"binding": {"host": 7}}, "host"),
             ({"binding": {"host": DEST, "vnic_type": "direct"}}, "vnic_type"),
             ({"binding": {"host": DEST, "profile": "migrating_to"}}, "profile"),
             ({"binding": {"host": DEST, "profile": [1]}}, "profile"),
             ({"binding": {"host": DEST, "profile": big}}, "profile"),
             ({"binding": {"host": DEST, "vif_type": "ovs"}}, "vif_type"),
             ({"binding": {"host": DEST, "color": "red"}}, "color"),
             ({"bindings": [{"host": DEST}]}, "binding"),
             ({"binding": "dest"}, "binding"),
             ([], "binding")]
    for body, field in cases:
        resp = http.post(f"/ports/{port}/bindings", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert field in resp.json()["NeutronError"]["message"], (body, resp.text)
    _error(http.post(f"/ports/{port}/bindings", content=b"{", headers={"content-type": "application/json"}),
           400, "HTTPBadRequest", "not valid JSON")
    _error(http.put(f"/ports/{port}/bindings/{SRC}/activate", json={"binding": {}}), 400, "HTTPBadRequest",
           "activate", "no request body")
    _error(http.post(f"/ports/{plain}/bindings", json={"binding": {"host": DEST}}), 400, "BadRequest",
           "only valid on compute ports")
    _error(http.get(f"/ports/{port}/bindings?colour=red"), 400, "HTTPBadRequest", "colour")
    # Nothing can plug the VIF on a host without a chassis: Neutron's binding error, nothing stored.
    _error(http.post(f"/ports/{port}/bindings", json={"binding": {"host": "nowhere"}}), 409, "PortBindingError",
           "nowhere", "no dfflow chassis")
    assert _ports(setup) == before


def test_malformed_port_binding_attributes_are_400_naming_the_field(setup):
    http, port, net = setup["http"], setup["port"], setup["net"]
    before = _ports(setup)
    big = {"k": "x" * PROFILE_MAX_BYTES}
    for value in ("migrating_to", [1], 5, big):
        for resp in (http.put(f"/ports/{port}", json={"port": {"binding:profile": value}}),
                     http.post("/ports", json={"port": {"network_id": net, "binding:profile": value}})):
            _error(resp, 400, "HTTPBadRequest", "binding:profile")
    for resp in (http.put(f"/ports/{port}", json={"port": {"binding:vnic_type": "direct"}}),
                 http.post("/ports", json={"port": {"network_id": net, "binding:vnic_type": "macvtap"}})):
        _error(resp, 400, "HTTPBadRequest", "binding:vnic_type")
    for attr in ("binding:vif_type", "binding:vif_details"):
        _error(http.put(f"/ports/{port}", json={"port": {attr: "ovs"}}), 400, "HTTPBadRequest", attr)
    assert _ports(setup) == before
    assert len(http.get("/ports").json()["ports"]) == 2


def test_profile_round_trips_and_null_clears_it(setup):
    http, port = setup["http"], setup["port"]
    profile = {"migrating_to": DEST, "nested": {"a": [1, 2]}}
    assert http.put(f"/ports/{port}", json={"port": {"binding:profile": profile}}).json()["port"][
        "binding:profile"] == profile
    assert nb_call(setup["nb_url"], "get", "lport", port).migrating_to == DEST
    assert http.put(f"/ports/{port}", json={"port": {"binding:profile": None}}).json()["port"][
        "binding:profile"] == {}
    assert nb_call(setup["nb_url"], "get", "lport", port).binding_profile == {}
