"""Security groups, their rules and the ports' security attributes through `dfflow api`, driven by
python-neutronclient (Nova's client) and openstacksdk over a real NB db: Neutron's shapes and errors, and
a refused write leaves the NB exactly as it was."""
from __future__ import annotations

import asyncio
import concurrent.futures

import httpx
import pytest

from api_fixtures import api, nb_call, neutron_client, sdk  # noqa: F401 (fixtures)
from dfflow.api.secgroups import ensure_default
from dfflow.nb.store import NbApi

TABLES = ("lswitch", "subnet", "lport", "secgroup", "secgroup_rule")


@pytest.fixture
def neutron(api):  # noqa: F811
    return neutron_client(api.url)


def nb_snapshot(nb_url):
    return sorted((o.table, o.id, o.version) for t in TABLES for o in nb_call(nb_url, "list", t))


@pytest.fixture
def http(api):  # noqa: F811
    with httpx.Client(base_url=api.url + "/v2.0", timeout=10) as client:
        yield client


def refused(resp: httpx.Response, status: int, type_: str, *words: str) -> None:
    """`resp` is Neutron's error: status, NeutronError type, and a message with `words`."""
    assert resp.status_code == status, resp.text
    err = resp.json()["NeutronError"]
    assert err["type"] == type_, err
    for word in words:
        assert word in err["message"], err


def rule_shape(rule):
    return {k: rule[k] for k in ("direction", "ethertype", "protocol", "port_range_min", "port_range_max",
                                 "remote_ip_prefix", "remote_group_id")}


def test_first_list_makes_the_default_group_with_neutrons_rules(neutron):
    groups = neutron.list_security_groups()["security_groups"]
    assert [g["name"] for g in groups] == ["default"]
    default = groups[0]
    assert default["description"] == "Default security group" and default["stateful"] is True
    shapes = sorted((r["direction"], r["ethertype"], r["remote_group_id"]) for r in default["security_group_rules"])
    assert shapes == [("egress", "IPv4", None), ("egress", "IPv6", None),
                      ("ingress", "IPv4", default["id"]), ("ingress", "IPv6", default["id"])]
    for rule in default["security_group_rules"]:
        assert rule["protocol"] is None and rule["remote_ip_prefix"] is None and rule["belongs_to_default_sg"]
        assert rule["security_group_id"] == default["id"] and rule["project_id"] == default["project_id"]
    # listed again: the same group, not a second one
    assert [g["id"] for g in neutron.list_security_groups()["security_groups"]] == [default["id"]]


def test_crud_of_groups_and_rules_with_neutrons_shapes(neutron, http, nb_url):
    sg = neutron.create_security_group({"security_group": {"name": "web", "description": "web tier"}})
    sg = sg["security_group"]
    assert sg["name"] == "web" and sg["description"] == "web tier" and sg["revision_number"] > 0
    assert sorted((r["direction"], r["ethertype"]) for r in sg["security_group_rules"]) == [
        ("egress", "IPv4"), ("egress", "IPv6")]
    rule = neutron.create_security_group_rule({"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "TCP", "port_range_min": 80,
        "port_range_max": 443, "remote_ip_prefix": "10.0.0.7/24", "description": "http"}})["security_group_rule"]
    assert rule_shape(rule) == {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                                "port_range_min": 80, "port_range_max": 443, "remote_ip_prefix": "10.0.0.7/24",
                                "remote_group_id": None}
    assert rule["normalized_cidr"] == "10.0.0.0/24" and rule["description"] == "http"
    assert rule["belongs_to_default_sg"] is False
    stored = nb_call(nb_url, "get", "secgroup_rule", rule["id"])
    assert (stored.secgroup, stored.protocol, stored.port_range_min) == (sg["id"], "tcp", 80)
    icmp = neutron.create_security_group_rule({"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "icmp", "port_range_min": 8,
        "port_range_max": 0, "remote_group_id": sg["id"]}})["security_group_rule"]
    assert (icmp["port_range_min"], icmp["port_range_max"], icmp["remote_group_id"]) == (8, 0, sg["id"])

    shown = neutron.show_security_group(sg["id"])["security_group"]
    assert {r["id"] for r in shown["security_group_rules"]} >= {rule["id"], icmp["id"]}
    assert neutron.show_security_group_rule(rule["id"])["security_group_rule"] == rule
    # filters and fields, as Neutron takes them
    found = neutron.list_security_group_rules(security_group_id=sg["id"], direction="ingress",
                                              fields=["id", "protocol"])["security_group_rules"]
    assert sorted(found, key=lambda r: r["id"]) == sorted([{"id": rule["id"], "protocol": "tcp"},
                                                           {"id": icmp["id"], "protocol": "icmp"}],
                                                          key=lambda r: r["id"])
    assert [g["id"] for g in neutron.list_security_groups(name="web")["security_groups"]] == [sg["id"]]

    updated = neutron.update_security_group(sg["id"], {"security_group": {"name": "www", "description": ""}})
    assert updated["security_group"]["name"] == "www"
    assert updated["security_group"]["revision_number"] > sg["revision_number"]
    described = http.put(f"/security-group-rules/{rule['id']}", json={"security_group_rule": {"description": "x"}})
    assert described.json()["security_group_rule"]["description"] == "x"
    refused(http.put(f"/security-group-rules/{rule['id']}", json={"security_group_rule": {"protocol": "udp"}}),
            400, "HTTPBadRequest", "protocol")

    neutron.delete_security_group_rule(icmp["id"])
    refused(http.get(f"/security-group-rules/{icmp['id']}"), 404, "SecurityGroupRuleNotFound",
            icmp["id"])
    neutron.delete_security_group(sg["id"])  # its rules go with it, in the same write
    refused(http.get(f"/security-groups/{sg['id']}"), 404, "SecurityGroupNotFound", sg["id"])
    assert not [r for r in nb_call(nb_url, "list", "secgroup_rule") if r.secgroup == sg["id"]]


def test_openstacksdk_sees_the_extensions_and_manages_groups(api):  # noqa: F811
    conn = sdk(api.url)
    aliases = {e.alias for e in conn.network.extensions()}
    assert {"security-group", "allowed-address-pairs", "port-security"} <= aliases
    sg = conn.network.create_security_group(name="db")
    rule = conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress",
                                                   ethertype="IPv6", protocol="udp", port_range_min=53,
                                                   port_range_max=53, remote_ip_prefix="fd00::/64")
    assert (rule.protocol, rule.remote_ip_prefix, rule.ether_type) == ("udp", "fd00::/64", "IPv6")
    assert rule.id in {r["id"] for r in conn.network.get_security_group(sg.id).security_group_rules}
    conn.network.delete_security_group(sg.id)
    assert conn.network.find_security_group("db") is None


@pytest.mark.parametrize("body, status, type_, words", [
    ({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80}, 400, "SecurityGroupInvalidPortRange",
     ("port_range_min must be <= port_range_max",)),
    ({"protocol": "tcp", "port_range_min": 0, "port_range_max": 80}, 400, "SecurityGroupInvalidPortValue",
     ("port 0",)),
    ({"protocol": "tcp", "port_range_min": 1, "port_range_max": 70000}, 400, "SecurityGroupInvalidPortValue",
     ("70000",)),
    ({"protocol": "icmp", "port_range_max": 0}, 400, "SecurityGroupMissingIcmpType", ("ICMP type",)),
    ({"protocol": "icmp", "port_range_min": 256}, 400, "SecurityGroupInvalidIcmpValue", ("0 to 255",)),
    ({"protocol": "carrier-pigeon"}, 400, "SecurityGroupRuleInvalidProtocol", ("carrier-pigeon",)),
    ({"protocol": "256"}, 400, "SecurityGroupRuleInvalidProtocol", ("256",)),
    ({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}, 400, "SecurityGroupInvalidProtocolForPort",
     ("gre",)),
    ({"port_range_min": 22, "port_range_max": 22}, 400, "SecurityGroupProtocolRequiredWithPorts", ("protocol",)),
    ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "SELF"}, 400,
     "SecurityGroupRemoteGroupAndRemoteIpPrefix", ("remote_ip_prefix or remote_group_id",)),
    ({"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"}, 400, "SecurityGroupRuleParameterConflict",
     ("IPv6", "10.0.0.0/8")),
    ({"ethertype": "IPv4", "protocol": "ipv6-icmp"}, 400, "SecurityGroupEthertypeConflictWithProtocol", ("IPv4",)),
    ({"ethertype": "IPv5"}, 400, "SecurityGroupRuleInvalidEtherType", ("IPv5",)),
    ({"direction": "sideways"}, 400, "SecurityGroupRuleInvalidDirection", ("sideways",)),
    ({"remote_ip_prefix": "10.0.0.0/33"}, 400, "InvalidCIDR", ("10.0.0.0/33",)),
    ({"protocol": "tcp", "port_range_min": "http", "port_range_max": 80}, 400, "SecurityGroupInvalidPortValue",
     ("http",)),
    ({"remote_group_id": "no-such-group"}, 404, "SecurityGroupNotFound", ("no-such-group",)),
])
def test_malformed_rules_get_neutrons_errors_and_write_nothing(neutron, http, nb_url, body, status, type_, words):
    sg = neutron.create_security_group({"security_group": {"name": "g"}})["security_group"]
    body = {"security_group_id": sg["id"], "direction": "ingress", **body}
    if body.get("remote_group_id") == "SELF":
        body["remote_group_id"] = sg["id"]
    before = nb_snapshot(nb_url)
    refused(http.post("/security-group-rules", json={"security_group_rule": body}), status, type_, *words)
    assert nb_snapshot(nb_url) == before


def test_a_rule_for_an_unknown_group_is_404(neutron, http, nb_url):
    before = nb_snapshot(nb_url)
    refused(http.post("/security-group-rules", json={"security_group_rule": {
        "security_group_id": "nope", "direction": "ingress"}}), 404, "SecurityGroupNotFound", "nope")
    assert nb_snapshot(nb_url) == before


@pytest.mark.parametrize("given, stored", [
    ({"ethertype": "ipv4", "protocol": "TCP"}, {"ethertype": "IPv4", "protocol": "tcp"}),
    ({"protocol": "any"}, {"protocol": None}),
    ({"protocol": "tcp", "port_range_min": "22", "port_range_max": "22"}, {"port_range_min": 22, "port_range_max": 22}),
    ({"protocol": "udp", "port_range_min": 1, "port_range_max": 65535},
     {"port_range_min": None, "port_range_max": None}),
    ({"ethertype": "IPv6", "protocol": "icmp"}, {"protocol": "ipv6-icmp"}),
    ({"ethertype": "IPv6", "protocol": "icmpv6", "port_range_min": 128}, {"protocol": "ipv6-icmp"}),
    ({"ethertype": "IPv6", "protocol": "1"}, {"protocol": "58"}),
])
def test_rule_values_are_taken_and_stored_as_neutron_converts_them(neutron, http, nb_url, given, stored):
    """What Neutron accepts and rewrites (an ethertype in any case, `any`, a port as a string, the whole port
    range as none, IPv6's legacy ICMP names) is accepted, shown and stored as Neutron stores it, and a rule
    written the way Neutron stores it is then its duplicate."""
    sg = neutron.create_security_group({"security_group": {"name": "g"}})["security_group"]
    base = {"security_group_id": sg["id"], "direction": "ingress"}
    made = neutron.create_security_group_rule({"security_group_rule": {**base, **given}})["security_group_rule"]
    assert {k: made[k] for k in stored} == stored, made
    kept = nb_call(nb_url, "get", "secgroup_rule", made["id"])
    assert {k: getattr(kept, k) for k in stored if k != "ethertype"} == {k: v for k, v in stored.items()
                                                                          if k != "ethertype"}
    canonical = {**base, **{k: v for k, v in rule_shape(made).items() if v is not None}}
    refused(http.post("/security-group-rules", json={"security_group_rule": canonical}), 409,
            "SecurityGroupRuleExists", made["id"])


@pytest.mark.parametrize("first, second", [
    ({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
     {"protocol": "TCP", "port_range_min": 22, "port_range_max": 22}),
    ({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
     {"protocol": "6", "port_range_min": 22, "port_range_max": 22}),
    ({"protocol": "udp", "remote_ip_prefix": "0.0.0.0/0"}, {"protocol": "udp"}),
    ({"protocol": "tcp", "remote_ip_prefix": "10.1.2.3"}, {"protocol": "tcp", "remote_ip_prefix": "10.1.2.3/32"}),
    ({"ethertype": "IPv6", "protocol": "icmp"}, {"ethertype": "IPv6", "protocol": "ipv6-icmp"}),
])
def test_duplicate_rules_are_409_naming_the_existing_rule(neutron, http, nb_url, first, second):
    sg = neutron.create_security_group({"security_group": {"name": "g"}})["security_group"]
    base = {"security_group_id": sg["id"], "direction": "ingress"}
    kept = neutron.create_security_group_rule({"security_group_rule": {**base, **first}})["security_group_rule"]
    before = nb_snapshot(nb_url)
    refused(http.post("/security-group-rules", json={"security_group_rule": {**base, **second}}), 409,
            "SecurityGroupRuleExists", kept["id"])
    assert nb_snapshot(nb_url) == before
    # the egress rules Neutron adds to each group are duplicates too
    refused(http.post("/security-group-rules", json={"security_group_rule": {
        "security_group_id": sg["id"], "direction": "egress", "ethertype": "IPv4"}}), 409,
        "SecurityGroupRuleExists")
    # a rule that differs in any match field is no duplicate
    neutron.create_security_group_rule({"security_group_rule": {**base, **second, "direction": "egress"}})


def test_prefixes_differing_in_host_bits_are_two_rules_as_in_neutron(neutron):
    """Neutron compares rules' prefixes as written: in neutron-server both are made, so the NB must take
    both too (or it would miss the second, and lose what it allows when the first goes)."""
    sg = neutron.create_security_group({"security_group": {"name": "g"}})["security_group"]
    made = [neutron.create_security_group_rule({"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp", "remote_ip_prefix": prefix}})
        ["security_group_rule"] for prefix in ("10.1.2.3/16", "10.1.0.0/16")]
    assert [r["normalized_cidr"] for r in made] == ["10.1.0.0/16", "10.1.0.0/16"]
    neutron.delete_security_group_rule(made[0]["id"])
    assert neutron.show_security_group_rule(made[1]["id"])["security_group_rule"]["remote_ip_prefix"] == "10.1.0.0/16"


def test_a_group_a_port_uses_cannot_be_deleted_one_other_groups_rules_name_can(neutron, http, nb_url):
    """As Neutron: SecurityGroupInUse (409) only for a group ports use; a group named as another group's
    rules' remote group is deleted, and those rules with it (Neutron's foreign key cascades)."""
    net = neutron.create_network({"network": {"name": "n"}})["network"]
    neutron.create_subnet({"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4,
                                      "enable_dhcp": False}})
    app = neutron.create_security_group({"security_group": {"name": "app"}})["security_group"]
    web = neutron.create_security_group({"security_group": {"name": "web"}})["security_group"]
    naming_web = neutron.create_security_group_rule({"security_group_rule": {
        "security_group_id": app["id"], "direction": "ingress", "remote_group_id": web["id"]}})
    port = neutron.create_port({"port": {"network_id": net["id"], "security_groups": [app["id"]]}})["port"]
    before = nb_snapshot(nb_url)
    refused(http.delete(f"/security-groups/{app['id']}"), 409, "SecurityGroupInUse", app["id"], port["id"])
    assert nb_snapshot(nb_url) == before
    app_rules = {r["id"] for r in neutron.show_security_group(app["id"])["security_group"]["security_group_rules"]}

    assert http.delete(f"/security-groups/{web['id']}").status_code == 204
    refused(http.get(f"/security-groups/{web['id']}"), 404, "SecurityGroupNotFound", web["id"])
    refused(http.get(f"/security-group-rules/{naming_web['security_group_rule']['id']}"), 404,
            "SecurityGroupRuleNotFound")
    kept = {r["id"] for r in neutron.show_security_group(app["id"])["security_group"]["security_group_rules"]}
    assert kept == app_rules - {naming_web["security_group_rule"]["id"]} and len(kept) == 2  # its egress rules
    assert not [r for r in nb_call(nb_url, "list", "secgroup_rule") if web["id"] in (r.secgroup, r.remote_group)]
    neutron.update_port(port["id"], {"port": {"security_groups": []}})
    neutron.delete_security_group(app["id"])


def test_group_name_default_is_reserved(neutron, http, nb_url):
    default = neutron.list_security_groups()["security_groups"][0]
    before = nb_snapshot(nb_url)
    refused(http.post("/security-groups", json={"security_group": {"name": "Default"}}), 409,
            "SecurityGroupDefaultAlreadyExists")
    refused(http.put(f"/security-groups/{default['id']}", json={"security_group": {"name": "other"}}), 409,
            "SecurityGroupCannotUpdateDefault")
    assert nb_snapshot(nb_url) == before


def test_ports_get_the_default_group_groups_and_address_pairs(neutron, nb_url):
    net = neutron.create_network({"network": {"name": "n"}})["network"]
    default = neutron.list_security_groups()["security_groups"]
    assert len(default) == 1  # the network's creation made it
    neutron.create_subnet({"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4,
                                      "enable_dhcp": False}})
    port = neutron.create_port({"port": {"network_id": net["id"]}})["port"]
    assert port["security_groups"] == [default[0]["id"]] and port["port_security_enabled"] is True
    assert port["allowed_address_pairs"] == []

    sg = neutron.create_security_group({"security_group": {"name": "g"}})["security_group"]
    pairs = [{"ip_address": "10.0.0.200"}, {"ip_address": "10.9.0.0/16", "mac_address": "fa:16:3e:00:00:99"}]
    port = neutron.update_port(port["id"], {"port": {"security_groups": [sg["id"], sg["id"]],
                                                     "allowed_address_pairs": pairs}})["port"]
    assert port["security_groups"] == [sg["id"]]
    assert port["allowed_address_pairs"] == [{"ip_address": "10.0.0.200", "mac_address": port["mac_address"]},
                                             {"ip_address": "10.9.0.0/16", "mac_address": "fa:16:3e:00:00:99"}]
    stored = nb_call(nb_url, "get", "lport", port["id"])
    assert stored.security_groups == [sg["id"]] and stored.allowed_address_pairs[1].ip_address == "10.9.0.0/16"

    bare = neutron.create_port({"port": {"network_id": net["id"], "port_security_enabled": False}})["port"]
    assert bare["security_groups"] == [] and bare["port_security_enabled"] is False


def test_port_security_and_groups_conflicts_are_neutrons_errors(neutron, http, nb_url):
    net = neutron.create_network({"network": {"name": "n"}})["network"]
    neutron.create_subnet({"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4,
                                      "enable_dhcp": False}})
    sg = neutron.create_security_group({"security_group": {"name": "g"}})["security_group"]
    port = neutron.create_port({"port": {"network_id": net["id"], "security_groups": [sg["id"]]}})["port"]
    before = nb_snapshot(nb_url)
    refused(http.post("/ports", json={"port": {"network_id": net["id"], "port_security_enabled": False,
                                                  "security_groups": [sg["id"]]}}), 400,
            "PortSecurityAndIPRequiredForSecurityGroups")
    refused(http.post("/ports", json={"port": {"network_id": net["id"], "port_security_enabled": False,
                                                  "security_groups": [],
                                                  "allowed_address_pairs": [{"ip_address": "10.0.0.9"}]}}), 409,
            "AddressPairAndPortSecurityRequired")
    refused(http.put(f"/ports/{port['id']}", json={"port": {"port_security_enabled": False}}), 409,
            "PortSecurityPortHasSecurityGroup")
    refused(http.post("/ports", json={"port": {"network_id": net["id"], "security_groups": ["nope"]}}), 404,
            "SecurityGroupNotFound", "nope")
    refused(http.put(f"/ports/{port['id']}", json={"port": {"allowed_address_pairs": [
        {"ip_address": "10.0.0.9"}, {"ip_address": "10.0.0.9"}]}}), 400, "DuplicateAddressPairInRequest")
    refused(http.put(f"/ports/{port['id']}", json={"port": {"allowed_address_pairs": [
        {"ip_address": f"10.0.1.{i}"} for i in range(11)]}}), 400, "AllowedAddressPairExhausted")
    refused(http.put(f"/ports/{port['id']}", json={"port": {"allowed_address_pairs": [
        {"ip_address": "10.0.0.300"}]}}), 400, "HTTPBadRequest", "allowed_address_pairs")
    assert nb_snapshot(nb_url) == before
    # both at once is how Neutron turns port security off
    off = neutron.update_port(port["id"], {"port": {"port_security_enabled": False, "security_groups": []}})
    assert off["port"]["port_security_enabled"] is False and off["port"]["security_groups"] == []


def test_concurrent_first_requests_make_one_default_group(nb_url):
    async def run() -> list[str]:
        clients = [NbApi(nb_url) for _ in range(5)]
        try:
            return await asyncio.gather(*(ensure_default(clients[i % 5], "race") for i in range(50)))
        finally:
            for nb in clients:
                await nb.close()

    ids = asyncio.run(run())
    groups = [g for g in nb_call(nb_url, "list", "secgroup", "race") if g.is_default]
    assert len(groups) == 1 and set(ids) == {groups[0].id}
    rules = [r for r in nb_call(nb_url, "list", "secgroup_rule", "race")]
    assert len(rules) == 4 and {r.secgroup for r in rules} == {groups[0].id}


def test_concurrent_first_lists_through_the_api_make_one_default_group(api, nb_url):  # noqa: F811
    def first_list(_):
        return neutron_client(api.url).list_security_groups()["security_groups"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(first_list, range(50)))
    assert {tuple(g["id"] for g in r) for r in results} == {(results[0][0]["id"],)}
    assert len(nb_call(nb_url, "list", "secgroup")) == 1


def test_ipv6_rules_are_accepted_and_stored_as_neutron_does(neutron, nb_url):
    """The data plane carries no IPv6 (so these rules are not enforced), but the API takes IPv6 rules as
    Neutron does and keeps them in the NB, where a later data plane will find them."""
    sg = neutron.create_security_group({"security_group": {"name": "v6"}})["security_group"]
    base = {"security_group_id": sg["id"], "direction": "ingress", "ethertype": "IPv6"}
    bodies = [{"protocol": "ipv6-icmp", "port_range_min": 128, "port_range_max": 0},
              {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "::/0"},
              {"protocol": "udp", "remote_ip_prefix": "fd00:1::7/64"},
              {"remote_group_id": sg["id"]}]
    made = [neutron.create_security_group_rule({"security_group_rule": {**base, **body}})["security_group_rule"]
            for body in bodies]
    assert made[2]["remote_ip_prefix"] == "fd00:1::7/64" and made[2]["normalized_cidr"] == "fd00:1::/64"
    assert all(r["ethertype"] == "IPv6" for r in made)
    stored = {r.id: r for r in nb_call(nb_url, "list", "secgroup_rule") if r.secgroup == sg["id"]}
    for rule in made:
        kept = stored[rule["id"]]
        assert (kept.ethertype, kept.protocol, kept.port_range_min, kept.port_range_max, kept.remote_ip_prefix,
                kept.remote_group) == (rule["ethertype"], rule["protocol"], rule["port_range_min"],
                                       rule["port_range_max"], rule["remote_ip_prefix"], rule["remote_group_id"])
    shown = neutron.show_security_group(sg["id"])["security_group"]["security_group_rules"]
    assert {r["id"] for r in made} <= {r["id"] for r in shown}


def test_a_list_filtered_by_project_makes_that_projects_default_group(neutron):
    """As Neutron does for an admin listing another project's groups (how a user's tooling finds the
    `default` group to add rules to before the project has a port)."""
    groups = neutron.list_security_groups(project_id="tenant-b", name="default")["security_groups"]
    assert [(g["name"], g["project_id"]) for g in groups] == [("default", "tenant-b")]
    again = neutron.list_security_groups(project_id="tenant-b", name="default")["security_groups"]
    assert [g["id"] for g in again] == [groups[0]["id"]]
