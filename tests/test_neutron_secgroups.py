"""Security groups through a real neutron-server with dfflow's ML2 driver: what Neutron creates, changes and
deletes (groups, rules, a port's groups and address pairs) is what the NB db holds."""
from __future__ import annotations

import openstack.exceptions
import pytest

from api_fixtures import nb_call, sdk

pytestmark = [pytest.mark.neutron,
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")]


@pytest.fixture
def conn(neutron):
    return sdk(neutron.url)


def _rules_of(nb_url: str, group_id: str) -> dict[str, tuple]:
    return {r.id: (r.direction, r.ethertype, r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix,
                   r.remote_group) for r in nb_call(nb_url, "list", "secgroup_rule") if r.secgroup == group_id}


def test_groups_and_rules_created_in_neutron_appear_in_the_nb_and_deleted_ones_go(conn, neutron):
    net = conn.network
    group = net.create_security_group(name="web", description="web tier")
    stored = nb_call(neutron.nb_url, "get", "secgroup", group.id)
    assert (stored.name, stored.description, stored.is_default, stored.topic) == (
        "web", "web tier", False, group.project_id)
    assert sorted(_rules_of(neutron.nb_url, group.id).values()) == [
        ("egress", "IPv4", None, None, None, None, None), ("egress", "IPv6", None, None, None, None, None)]

    rule = net.create_security_group_rule(security_group_id=group.id, direction="ingress", protocol="tcp",
                                          port_range_min=80, port_range_max=80, remote_ip_prefix="10.0.0.0/8")
    assert _rules_of(neutron.nb_url, group.id)[rule.id] == ("ingress", "IPv4", "tcp", 80, 80, "10.0.0.0/8", None)

    net.update_security_group(group, name="www")
    assert nb_call(neutron.nb_url, "get", "secgroup", group.id).name == "www"

    net.delete_security_group_rule(rule)
    assert rule.id not in _rules_of(neutron.nb_url, group.id)
    net.delete_security_group(group)
    assert nb_call(neutron.nb_url, "get", "secgroup", group.id) is None
    assert _rules_of(neutron.nb_url, group.id) == {}


def test_a_ports_default_group_groups_and_address_pairs_reach_the_nb(conn, neutron):
    net = conn.network
    network = net.create_network(name="sg-net")
    net.create_subnet(network_id=network.id, cidr="10.20.0.0/24", ip_version=4)
    port = net.create_port(network_id=network.id, device_owner="compute:nova", device_id="vm-sg")
    default = [g for g in net.security_groups(project_id=port.project_id) if g.name == "default"]
    assert len(default) == 1 and port.security_group_ids == [default[0].id]
    nb_default = nb_call(neutron.nb_url, "get", "secgroup", default[0].id)
    assert nb_default.is_default
    assert sorted(v[0] + v[1] + str(v[6] == default[0].id)
                  for v in _rules_of(neutron.nb_url, default[0].id).values()) == [
        "egressIPv4False", "egressIPv6False", "ingressIPv4True", "ingressIPv6True"]
    assert nb_call(neutron.nb_url, "get", "lport", port.id).security_groups == [default[0].id]

    other = net.create_security_group(name="app")
    port = net.update_port(port, security_group_ids=[other.id], allowed_address_pairs=[
        {"ip_address": "10.20.0.200"}, {"ip_address": "10.99.0.0/16", "mac_address": "fa:16:3e:00:00:42"}])
    lport = nb_call(neutron.nb_url, "get", "lport", port.id)
    assert lport.security_groups == [other.id]
    assert sorted((p.ip_address, p.mac_address) for p in lport.allowed_address_pairs) == [
        ("10.20.0.200", port.mac_address), ("10.99.0.0/16", "fa:16:3e:00:00:42")]

    net.delete_port(port)
    net.delete_security_group(other)
    net.delete_network(network)


def test_a_group_deleted_in_neutron_takes_the_rules_naming_it_out_of_the_nb(conn, neutron):
    net = conn.network
    app = net.create_security_group(name="app")
    web = net.create_security_group(name="web")
    rule = net.create_security_group_rule(security_group_id=app.id, direction="ingress", remote_group_id=web.id)
    assert _rules_of(neutron.nb_url, app.id)[rule.id][6] == web.id
    net.delete_security_group(web)  # Neutron deletes the rules naming it as their remote group with it
    assert rule.id not in _rules_of(neutron.nb_url, app.id)
    assert nb_call(neutron.nb_url, "get", "secgroup", web.id) is None
    assert nb_call(neutron.nb_url, "get", "secgroup", app.id) is not None
    net.delete_security_group(app)


def test_rules_neutron_holds_as_two_are_two_in_the_nb(conn, neutron):
    """Neutron compares prefixes as written: rules differing only in a prefix's host bits are two rules
    there, so the NB holds both (refusing the second would lose what it allows once the first goes)."""
    net = conn.network
    group = net.create_security_group(name="hosts")
    made = [net.create_security_group_rule(security_group_id=group.id, direction="ingress", protocol="tcp",
                                           remote_ip_prefix=prefix) for prefix in ("10.1.2.3/16", "10.1.0.0/16")]
    net.delete_security_group_rule(made[0])
    stored = _rules_of(neutron.nb_url, group.id)
    assert made[0].id not in stored and stored[made[1].id][5] == "10.1.0.0/16", stored
    net.delete_security_group(group)


def test_a_rule_naming_an_address_group_is_refused_rather_than_allowing_everyone(conn, neutron):
    """dfflow has no address groups: a rule whose remote end is one would reach the chassis with no remote,
    allowing any source. neutron-server refuses it (400 naming the field) and neither Neutron nor the NB
    holds it."""
    net = conn.network
    group = net.create_security_group(name="admins-only")
    admins = net.create_address_group(name="admins", addresses=["10.9.9.9/32"])
    before = _rules_of(neutron.nb_url, group.id)
    with pytest.raises(openstack.exceptions.BadRequestException) as info:
        net.create_security_group_rule(security_group_id=group.id, direction="ingress", protocol="tcp",
                                       port_range_min=22, port_range_max=22, remote_address_group_id=admins.id)
    assert "remote_address_group_id" in str(info.value), info.value
    assert _rules_of(neutron.nb_url, group.id) == before
    assert sorted(r.id for r in net.security_group_rules(security_group_id=group.id)) == sorted(before)
    net.delete_security_group(group)
    net.delete_address_group(admins)


def test_a_stateless_group_is_refused_rather_than_filtered_statefully(conn, neutron):
    """Every chassis filters with connection tracking: a stateless group would let in the replies its rules
    do not allow. neutron-server refuses to make one, or to turn a group stateless."""
    net = conn.network
    with pytest.raises(openstack.exceptions.ConflictException) as info:
        net.create_security_group(name="stateless", stateful=False)
    assert "stateful" in str(info.value), info.value
    assert not [g for g in net.security_groups(name="stateless")]
    assert not [g for g in nb_call(neutron.nb_url, "list", "secgroup") if g.name == "stateless"]
    group = net.create_security_group(name="stateful")
    with pytest.raises(openstack.exceptions.ConflictException):
        net.update_security_group(group, stateful=False)
    assert net.get_security_group(group.id).stateful is True
    net.delete_security_group(group)
