"""Bad requests get Neutron's errors (status, NeutronError type, a message naming the field); never a 500,
and a refused write leaves the NB as it was."""
from __future__ import annotations

import httpx
import pytest

from api_fixtures import TOKEN, api, nb_call, token_api  # noqa: F401 (fixtures)


@pytest.fixture
def http(api):  # noqa: F811
    with httpx.Client(base_url=api.url + "/v2.0", timeout=10) as client:
        yield client


def neutron_error(resp: httpx.Response, status: int, type_: str | None = None, *words: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["NeutronError"]
    assert set(err) == {"type", "message", "detail"} and err["detail"] == ""
    if type_ is not None:
        assert err["type"] == type_, err
    for word in words:
        assert word in err["message"], err
    return err["message"]


@pytest.fixture
def topo(http):
    """A network with one subnet and one port, a router on it, an external network."""
    net = http.post("/networks", json={"network": {"name": "n1", "provider:segmentation_id": 100}}).json()["network"]
    sn = http.post("/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24"}}).json()["subnet"]
    port = http.post("/ports", json={"port": {"network_id": net["id"], "mac_address": "fa:16:3e:00:00:01",
                                              "fixed_ips": [{"ip_address": "10.0.0.5"}]}}).json()["port"]
    ext = http.post("/networks", json={"network": {"name": "ext", "router:external": True}}).json()["network"]
    ext_sn = http.post("/subnets", json={"subnet": {"network_id": ext["id"], "cidr": "172.24.4.0/28"}}).json()
    router = http.post("/routers", json={"router": {"name": "r"}}).json()["router"]
    return {"net": net, "subnet": sn, "port": port, "ext": ext, "ext_subnet": ext_sn["subnet"], "router": router}


def _nb_snapshot(nb_url):
    return sorted((o.table, o.id, o.version) for t in ("lswitch", "subnet", "lport", "lrouter", "floatingip")
                  for o in nb_call(nb_url, "list", t))


def test_malformed_values_are_400_naming_the_field(http, topo, nb_url):
    net, sn = topo["net"]["id"], topo["subnet"]["id"]
    before = _nb_snapshot(nb_url)
    cases = [
        ("/ports", {"port": {"network_id": net, "mac_address": "zz:16:3e:00:00:01"}}, "mac_address"),
        ("/ports", {"port": {"network_id": net, "mac_address": "01:00:5e:00:00:01"}}, "mac_address"),
        ("/ports", {"port": {"network_id": net, "fixed_ips": [{"subnet_id": sn, "ip_address": "10.9.9.9"}]}},
         "fixed_ips"),
        ("/ports", {"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.300"}]}}, "fixed_ips"),
        ("/ports", {"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.255"}]}}, "fixed_ips"),
        ("/ports", {"port": {"network_id": net, "fixed_ips": [{"bogus": 1}]}}, "fixed_ips"),
        ("/ports", {"port": {"network_id": net, "binding:host_id": "no spaces allowed"}}, "binding:host_id"),
        ("/ports", {"port": {"network_id": net, "admin_state_up": "yes"}}, "admin_state_up"),
        ("/subnets", {"subnet": {"network_id": net, "cidr": "10.1.0.1/24"}}, "cidr"),
        ("/subnets", {"subnet": {"network_id": net, "cidr": "banana"}}, "cidr"),
        ("/subnets", {"subnet": {"network_id": net, "cidr": "10.1.0.0/24", "ip_version": 6}}, "ip_version"),
        ("/subnets", {"subnet": {"network_id": net, "cidr": "10.1.0.0/24", "gateway_ip": "10.2.0.1"}},
         "gateway_ip"),
        ("/subnets", {"subnet": {"network_id": net}}, "cidr"),
        ("/networks", {"network": {"provider:segmentation_id": 0}}, "provider:segmentation_id"),
        ("/networks", {"network": {"provider:segmentation_id": 2**24}}, "provider:segmentation_id"),
        ("/networks", {"network": {"provider:segmentation_id": "7"}}, "provider:segmentation_id"),
        ("/networks", {"network": {"provider:network_type": "vlan"}}, "provider:network_type"),
        ("/networks", {"network": {"mtu": 20}}, "mtu"),
        ("/networks", {"network": {"name": "x" * 256}}, "name"),
        ("/networks", {"network": {"name": 5}}, "name"),
        ("/networks", {"network": {"project_id": "not a project"}}, "project_id"),
        ("/networks", {"network": {"color": "blue"}}, "color"),
        ("/networks", {"network": {"id": "mine"}}, "id"),
        ("/networks", {"networks": [{"name": "bulk"}]}, "networks"),
        ("/networks", {"net": {}}, "network"),
        ("/networks", ["network"], "network"),
        ("/floatingips", {"floatingip": {"floating_network_id": net}}, "floating_network_id"),
        ("/routers", {"router": {"external_gateway_info": {"network_id": net}}}, "external_gateway_info"),
    ]
    for path, body, field in cases:
        resp = http.post(path, json=body)
        neutron_error(resp, 400, None, field)
    neutron_error(http.put(f"/ports/{topo['port']['id']}", json={"port": {"network_id": net}}), 400,
                  "HTTPBadRequest", "read-only attribute network_id")
    neutron_error(http.put(f"/networks/{net}", json={"network": {"provider:segmentation_id": 5}}), 400, None,
                  "provider:segmentation_id")
    assert _nb_snapshot(nb_url) == before


def test_malformed_requests_are_400_or_415(http, api):  # noqa: F811
    json_header = {"content-type": "application/json"}
    neutron_error(http.post("/networks", content=b'{"network": {', headers=json_header), 400, "HTTPBadRequest",
                  "Malformed request body")
    neutron_error(http.post("/networks", content=b'{"network": {"mtu": NaN}}', headers=json_header), 400)
    neutron_error(http.post("/networks", content=b'\xff\xfe{}', headers=json_header), 400, None, "Malformed")
    neutron_error(http.post("/networks", content=b"[" * 100000 + b"]" * 100000, headers=json_header), 400)
    neutron_error(http.post("/networks", content=b"", headers=json_header), 400, None, "body required")
    neutron_error(http.post("/networks", content=b"name=x", headers={"content-type": "text/plain"}), 415,
                  "HTTPUnsupportedMediaType")
    neutron_error(http.get("/networks", params={"limit": "many"}), 400, None, "limit")
    neutron_error(http.get("/networks", params={"limit": -1}), 400, None, "limit")
    neutron_error(http.get("/networks", params={"color": "blue"}), 400, None, "color")
    neutron_error(http.get("/networks", params={"router:external": "maybe"}), 400, None, "router:external")
    neutron_error(http.get("/networks", params={"sort_key": "subnets"}), 400, None, "sort_key")
    neutron_error(http.get("/networks", params={"sort_key": "name", "marker": "nope"}), 400, None, "marker")
    neutron_error(http.delete("/networks"), 405, "HTTPMethodNotAllowed")
    net = http.post("/networks", json={"network": {}}).json()["network"]
    neutron_error(http.put(f"/networks/{net['id']}", json={"network": {"name": "x"}},
                           headers={"if-match": "revision=1"}), 400, None, "If-Match")


def test_unknown_ids_and_resources_are_404(http, topo):
    ghost = "0b5a7a3e-0000-4000-8000-000000000000"
    for plural, name in (("networks", "Network"), ("subnets", "Subnet"), ("ports", "Port"),
                         ("routers", "Router"), ("floatingips", "FloatingIP")):
        neutron_error(http.get(f"/{plural}/{ghost}"), 404, f"{name}NotFound", ghost)
        neutron_error(http.put(f"/{plural}/{ghost}", json={plural[:-1]: {}}), 404, f"{name}NotFound")
        neutron_error(http.delete(f"/{plural}/{ghost}"), 404, f"{name}NotFound")
    neutron_error(http.post("/ports", json={"port": {"network_id": ghost}}), 404, "NetworkNotFound", ghost)
    neutron_error(http.post("/subnets", json={"subnet": {"network_id": ghost, "cidr": "10.5.0.0/24"}}), 404,
                  "NetworkNotFound")
    neutron_error(http.post("/ports", json={"port": {"network_id": topo["net"]["id"],
                                                     "fixed_ips": [{"subnet_id": ghost}]}}), 404, "SubnetNotFound")
    neutron_error(http.put(f"/routers/{topo['router']['id']}/add_router_interface", json={"subnet_id": ghost}),
                  404, "SubnetNotFound")
    neutron_error(http.put(f"/routers/{ghost}/add_router_interface", json={"subnet_id": topo["subnet"]["id"]}),
                  404, "RouterNotFound")
    neutron_error(http.get("/widgets"), 404, "HTTPNotFound")
    neutron_error(http.get("/widgets/1"), 404, "HTTPNotFound")
    neutron_error(httpx.get(str(http.base_url).replace("/v2.0", "/v3")), 404, "HTTPNotFound")


def test_conflicts_are_409(http, topo, nb_url):
    net, sn, port = topo["net"]["id"], topo["subnet"]["id"], topo["port"]
    before = _nb_snapshot(nb_url)
    neutron_error(http.post("/ports", json={"port": {"network_id": net, "mac_address": "FA:16:3E:00:00:01"}}),
                  409, "MacAddressInUse")
    neutron_error(http.post("/ports", json={"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.5"}]}}),
                  409, "IpAddressAlreadyAllocated", "10.0.0.5")
    neutron_error(http.post("/ports", json={"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.1"}]}}),
                  409, "IpAddressAlreadyAllocated", "gateway")
    neutron_error(http.post("/subnets", json={"subnet": {"network_id": net, "cidr": "10.0.0.128/25"}}), 409,
                  "SubnetOverlap", "10.0.0.128/25")
    neutron_error(http.post("/networks", json={"network": {"provider:segmentation_id": 100}}), 409,
                  "TunnelIdInUse")
    neutron_error(http.delete(f"/subnets/{sn}"), 409, "SubnetInUse", sn)
    neutron_error(http.delete(f"/networks/{net}"), 409, "NetworkInUse", net)
    assert _nb_snapshot(nb_url) == before

    router = topo["router"]["id"]
    assert http.put(f"/routers/{router}/add_router_interface", json={"subnet_id": sn}).status_code == 200
    neutron_error(http.put(f"/routers/{router}/add_router_interface", json={"subnet_id": sn}), 400, None,
                  "subnet_id")
    other = http.post("/routers", json={"router": {}}).json()["router"]["id"]
    neutron_error(http.put(f"/routers/{other}/add_router_interface", json={"subnet_id": sn}), 409)
    neutron_error(http.delete(f"/routers/{router}"), 409, "RouterInUse")
    neutron_error(http.delete(f"/subnets/{sn}"), 409, "SubnetInUse")
    vports = http.get("/ports", params={"device_id": router}).json()["ports"]
    neutron_error(http.delete(f"/ports/{vports[0]['id']}"), 409, "PortInUse", "remove_router_interface")

    # A floating IP needs a router from the port's subnet to the external network.
    ext = topo["ext"]["id"]
    fip_body = {"floatingip": {"floating_network_id": ext, "port_id": port["id"]}}
    neutron_error(http.post("/floatingips", json=fip_body), 404, "ExternalGatewayForFloatingIPNotFound")
    assert http.put(f"/routers/{router}", json={"router": {"external_gateway_info": {"network_id": ext}}}
                    ).status_code == 200
    fip = http.post("/floatingips", json=fip_body)
    assert fip.status_code == 201, fip.text
    neutron_error(http.post("/floatingips", json=fip_body), 409, "FloatingIPPortAlreadyAssociated")
    neutron_error(http.put(f"/routers/{router}/remove_router_interface", json={"subnet_id": sn}), 409,
                  "RouterInterfaceInUseByFloatingIP")
    neutron_error(http.put(f"/routers/{router}", json={"router": {"external_gateway_info": None}}), 409,
                  "RouterExternalGatewayInUseByFloatingIp")
    neutron_error(http.delete(f"/ports/{port['id']}"), 409, "PortInUse")
    neutron_error(http.put(f"/ports/{port['id']}", json={"port": {"fixed_ips": []}}), 409, None,
                  "disassociate")
    neutron_error(http.put(f"/networks/{ext}", json={"network": {"router:external": False}}), 409,
                  "ExternalNetworkInUse")


def test_full_pools_and_stale_revisions(http, nb_url):
    net = http.post("/networks", json={"network": {}}).json()["network"]["id"]
    http.post("/subnets", json={"subnet": {"network_id": net, "cidr": "10.7.0.0/30"}})  # one free address
    port = http.post("/ports", json={"port": {"network_id": net}}).json()["port"]
    assert port["fixed_ips"][0]["ip_address"] == "10.7.0.2"
    neutron_error(http.post("/ports", json={"port": {"network_id": net}}), 409, "IpAddressGenerationFailure")
    stale = port["revision_number"]
    assert http.put(f"/ports/{port['id']}", json={"port": {"name": "a"}}).status_code == 200
    neutron_error(http.put(f"/ports/{port['id']}", json={"port": {"name": "b"}},
                           headers={"if-match": f"revision_number={stale}"}), 412,
                  "RevisionNumberConstraintFailed")
    assert nb_call(nb_url, "get", "lport", port["id"]).name == "a"


def test_oversized_bodies_are_413_before_parsing(http, nb_url):
    big = b'{"network": {"name": "' + b"x" * (2 << 20) + b'"}}'
    neutron_error(http.post("/networks", content=big, headers={"content-type": "application/json"}), 413,
                  "HTTPRequestEntityTooLarge")

    def chunks():  # no Content-Length: the limit holds on the bytes read
        for _ in range(40):
            yield b"x" * 65536
    neutron_error(http.post("/networks", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert nb_call(nb_url, "list", "lswitch") == []
    assert http.post("/networks", json={"network": {"name": "x" * 200}}).status_code == 201


def test_token_auth(token_api):  # noqa: F811
    url = token_api.url
    neutron_error(httpx.get(url + "/v2.0/networks"), 401, "HTTPUnauthorized")
    neutron_error(httpx.get(url + "/v2.0/networks", headers={"x-auth-token": "wrong"}), 401, "HTTPUnauthorized")
    neutron_error(httpx.post(url + "/v2.0/networks", json={"network": {}}), 401)
    ok = httpx.get(url + "/v2.0/networks", headers={"x-auth-token": TOKEN})
    assert ok.status_code == 200 and ok.json() == {"networks": []}
    assert httpx.get(url + "/").status_code == 200  # version discovery is public, as in Neutron
    created = httpx.post(url + "/v2.0/networks", json={"network": {"name": "n"}},
                         headers={"x-auth-token": TOKEN, "x-project-id": "proj-7"})
    assert created.status_code == 201 and created.json()["network"]["project_id"] == "proj-7"


def test_refuses_to_listen_off_loopback_without_auth(nb_url):
    from dfflow.api.server import ServeError, make_config
    with pytest.raises(ServeError, match="without authentication"):
        make_config(nb_url, "0.0.0.0:9696")
    with pytest.raises(ServeError, match="--token"):
        make_config(nb_url, "0.0.0.0:9696", auth="token")
    assert make_config(nb_url, "0.0.0.0:9696", auth="token", token=TOKEN).host == "0.0.0.0"
    assert make_config(nb_url, "[::1]:9696").host == "::1"


def test_dfflow_api_command_serves_and_refuses_exposure(nb_url):
    import subprocess
    import sys
    import time

    from click.testing import CliRunner

    from api_fixtures import free_port
    from dfflow.cli import main

    refused = CliRunner().invoke(main, ["api", "--nb", nb_url, "--listen", "0.0.0.0:9696"])
    assert refused.exit_code == 2 and "without authentication" in refused.output
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dfflow.cli", "api", "--nb", nb_url, "--listen",
                             f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/v2.0/networks")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "dfflow api did not start"
                time.sleep(0.1)
        assert resp.status_code == 200 and resp.json() == {"networks": []}
    finally:
        proc.terminate()
        proc.wait(10)


def test_updates_that_change_nothing_keep_the_revision(http):
    net = http.post("/networks", json={"network": {"name": "same"}}).json()["network"]
    again = http.put(f"/networks/{net['id']}", json={"network": {"name": "same"}}).json()["network"]
    assert again["revision_number"] == net["revision_number"]
    changed = http.put(f"/networks/{net['id']}", json={"network": {"name": "other"}}).json()["network"]
    assert changed["revision_number"] > net["revision_number"]
