"""Remote groups as conjunctive matches, and Neutron's "port security without a group allows nothing",
on a real 2-chassis sandbox with real packets.

W (chassis-1, group `web`) serves TCP 5100-5199 to the members of group `clients`: M (chassis-2), whose
port has two allowed address pairs, so `clients` has 3 addresses and the rule's range 4 prefixes -- a
conjunctive match of 3 + 4 + 1 flows instead of 12. N (chassis-2) is in neither group. P (chassis-1) has
port security and no group; U (chassis-2) has no port security."""
from __future__ import annotations

import pytest

from controller.apps.secgroups import CONJUNCTION, SecurityGroupsApp
from controller_fixtures import dump_flows, pings, running_cloud, wait_until
from sg_oracle import range_prefixes
from test_secgroups_sandbox import neutron, tcp_opens

pytestmark = pytest.mark.ovs

W, M, N, P, U = "10.2.0.10", "10.2.0.20", "10.2.0.30", "10.2.0.40", "10.2.0.50"
M_PAIRS = ("10.2.0.21", "10.2.0.22")


def group(cloud, name: str) -> str:
    return neutron(cloud, "create_security_group", {"security_group": {"name": name, "project_id": "demo"}}
                   )["security_group"]["id"]


@pytest.fixture(scope="module")
def cloud():
    with running_cloud(2) as c:
        c.call("create_network", "net2", "10.2.0.0/24")
        web, clients, others = group(c, "web"), group(c, "clients"), group(c, "others")
        neutron(c, "create_security_group_rule", {"security_group_rule": {
            "security_group_id": web, "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 5100, "port_range_max": 5199, "remote_group_id": clients}})
        c.call("create_vm", "W", "chassis-1", "net2", W, port_attrs={"security_groups": [web]})
        c.call("create_vm", "M", "chassis-2", "net2", M, port_attrs={
            "security_groups": [clients], "allowed_address_pairs": [{"ip_address": ip} for ip in M_PAIRS]})
        c.call("create_vm", "N", "chassis-2", "net2", N, port_attrs={"security_groups": [others]})
        c.call("create_vm", "P", "chassis-1", "net2", P, port_attrs={"security_groups": []})
        c.call("create_vm", "U", "chassis-2", "net2", U, port_attrs={"port_security_enabled": False})
        wait_until(lambda: pings(c.sb, "M", U), 15, what="M -> U")
        yield c


def test_a_remote_group_over_a_port_range_is_one_conjunctive_match_in_ovs(cloud):
    cookie = SecurityGroupsApp().cookie(cloud.sb.vm("W").vifs[0].port_id)
    flows = [line for line in dump_flows(cloud.sb, "chassis-1")
             if f"cookie={cookie:#x}," in line and "table=48" in line and f"priority={CONJUNCTION}," in line]
    members, prefixes = 1 + len(M_PAIRS), len(range_prefixes(5100, 5199))
    assert sum("conjunction(" in line for line in flows) == members + prefixes, flows
    assert sum("conj_id=" in line for line in flows) == 1, flows
    assert len(flows) == members + prefixes + 1 < members * prefixes  # a sum, not a product


def test_the_member_gets_in_on_the_range_and_no_one_else_does(cloud):
    sb = cloud.sb
    assert tcp_opens(sb, "M", "W", W, 5150)
    assert tcp_opens(sb, "M", "W", W, 5100) and tcp_opens(sb, "M", "W", W, 5199)
    assert not tcp_opens(sb, "M", "W", W, 5200)  # outside the range
    assert not tcp_opens(sb, "N", "W", W, 5150)  # not a member
    assert not pings(sb, "M", W)  # only TCP


def test_a_port_with_port_security_and_no_group_opens_nothing_and_one_without_port_security_all(cloud):
    sb = cloud.sb
    assert not pings(sb, "U", P) and not pings(sb, "P", U)  # nothing in, nothing out
    assert not tcp_opens(sb, "U", "P", P, 5120) and not tcp_opens(sb, "P", "U", U, 5121)
    assert not pings(sb, "M", P)
    assert pings(sb, "N", U) and tcp_opens(sb, "N", "U", U, 5122)  # U is not filtered: anyone gets in
    assert pings(sb, "M", U) and tcp_opens(sb, "M", "U", U, 5123)
