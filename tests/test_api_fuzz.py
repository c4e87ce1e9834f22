"""Schemathesis fuzzes the running API from its own OpenAPI document: no 500s, and every response
(status, content type, body) is one the document declares. Bounded by example counts, not by time."""
from __future__ import annotations

import ipaddress

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from api_fixtures import api  # noqa: F401 (fixture)

EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}  # per operation: ~20 s in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _seed(url: str, nb_url: str) -> dict[str, str]:
    """Real objects of every kind, so fuzzed paths also reach existing ids (and a compute port's bindings)."""
    from api_fixtures import nb_call
    from dfflow.models import Chassis

    for host in ("fuzz-host", "fuzz-dest"):
        nb_call(nb_url, "create", Chassis(id=host, topic="chassis", tunnel_ip="192.0.2.1"))
    with httpx.Client(base_url=url + "/v2.0") as http:
        def post(plural: str, **body) -> dict:
            resp = http.post(f"/{plural}", json={plural[:-1]: body})
            assert resp.status_code == 201, resp.text
            return resp.json()[plural[:-1]]
        net = post("networks", name="fuzz")
        sn = post("subnets", network_id=net["id"], cidr="10.0.0.0/24")
        port = post("ports", network_id=net["id"], name="fuzz-port", device_owner="compute:nova",
                    device_id="fuzz-vm", **{"binding:host_id": "fuzz-host"})
        assert http.post(f"/ports/{port['id']}/bindings", json={"binding": {"host": "fuzz-dest"}}
                         ).status_code == 201
        ext = post("networks", name="ext", **{"router:external": True})
        post("subnets", network_id=ext["id"], cidr="172.24.4.0/24")
        router = post("routers", name="fuzz-router", external_gateway_info={"network_id": ext["id"]})
        assert http.put(f"/routers/{router['id']}/add_router_interface", json={"subnet_id": sn["id"]}
                        ).status_code == 200
        fip = post("floatingips", floating_network_id=ext["id"], port_id=port["id"])
    return {"network_id": net["id"], "subnet_id": sn["id"], "port_id": port["id"], "router_id": router["id"],
            "floatingip_id": fip["id"], "host": "fuzz-dest"}


def _order(op) -> tuple[int, str]:
    return ({"DELETE": 2, "PUT": 1}.get(op.method.upper(), 0), op.label)  # deletions last


def test_fuzz_api_against_its_openapi_document(api, nb_url):  # noqa: F811
    known = _seed(api.url, nb_url)
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=_order)
    # discovery, 5 resources x 5, router interfaces, port bindings, dfflow's status
    assert len(operations) == 3 + 5 * 5 + 2 + 5 + 1
    failures = []
    for op in operations:
        params = {p.name for p in op.path_parameters}
        fixed = {name: known[name] for name in params if name in known}
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and not (op.query or op.path_parameters or op.body):
                continue  # nothing to make invalid
            options = [op.as_strategy(generation_mode=mode)]
            if fixed:
                options.append(op.as_strategy(generation_mode=mode, path_parameters=fixed))
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            @given(case=st.one_of(options))
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                case.call_and_validate(base_url=api.url, checks=checks)

            try:
                run()
            except Exception as exc:  # collect them all, report together
                failures.append(f"{op.label} [{mode.value}]: {exc}")
    assert not failures, "\n\n".join(failures)


_ADDRESS = st.one_of(st.ip_addresses(network="10.0.0.0/22").map(str), st.ip_addresses(v=6).map(str),
                     st.sampled_from(["10.0.0.1", "10.0.0.0", "10.0.0.255", "10.0.1.1", "1.2.3.4"]),
                     st.text(max_size=20))
_CIDR = st.one_of(st.ip_addresses(network="10.0.0.0/20").flatmap(
    lambda a: st.integers(18, 30).map(lambda n: f"{a}/{n}")),
    st.sampled_from(["10.0.1.0/24", "10.0.2.0/24", "fd00::/64", "10.0.0.0/8"]), st.text(max_size=20))
_MAC = st.one_of(st.none(), st.integers(0, 2**24 - 1).map(
    lambda n: f"fa:16:3e:{n >> 16:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"), st.text(max_size=20))


def test_fuzz_addresses_on_a_real_network(api, nb_url):  # noqa: F811
    """Generated CIDRs, gateways, MACs and fixed IPs on one network: Neutron's statuses only, and the NB
    holds exactly what the API reported as created, each address inside a subnet of the network."""
    from api_fixtures import nb_call

    http = httpx.Client(base_url=api.url + "/v2.0")
    net = http.post("/networks", json={"network": {}}).json()["network"]["id"]
    first = http.post("/subnets", json={"subnet": {"network_id": net, "cidr": "10.0.0.0/24"}}).json()["subnet"]
    subnets, ports = {first["id"]: first["cidr"]}, set()

    @given(kind=st.sampled_from(["subnet", "port", "port"]), cidr=_CIDR,
           gateway=st.one_of(st.just("absent"), st.none(), _ADDRESS), mac=_MAC,
           fixed=st.one_of(st.none(), st.lists(st.fixed_dictionaries({}, optional={
               "ip_address": _ADDRESS, "subnet_id": st.sampled_from([first["id"], "nope"])}), max_size=3)))
    @settings(max_examples=120, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(kind, cidr, gateway, mac, fixed):
        if kind == "subnet":
            body = {"network_id": net, "cidr": cidr, **({} if gateway == "absent" else {"gateway_ip": gateway})}
        else:
            body = {"network_id": net, **({} if mac is None else {"mac_address": mac}),
                    **({} if fixed is None else {"fixed_ips": fixed})}
        resp = http.post(f"/{kind}s", json={kind: body})
        assert resp.status_code in (201, 400, 404, 409), resp.text
        if resp.status_code != 201:
            assert set(resp.json()["NeutronError"]) == {"type", "message", "detail"}
            return
        made = resp.json()[kind]
        if kind == "subnet":
            subnets[made["id"]] = made["cidr"]
        else:
            ports.add(made["id"])
            for entry in made["fixed_ips"]:
                assert entry["subnet_id"] in subnets
                assert ipaddress.ip_address(entry["ip_address"]) in ipaddress.ip_network(subnets[entry["subnet_id"]])

    run()
    assert {s.id for s in nb_call(nb_url, "list", "subnet")} == set(subnets)
    assert {p.id for p in nb_call(nb_url, "list", "lport")} == ports
    assert len(ports) > 5 and len(subnets) > 1  # the generator reached the success paths
