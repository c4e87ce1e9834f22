"""Security groups and rules in the NB store on a real redis-server: a group written with its rules in one
transaction, deleted with them (an event for each), duplicate rules and references refused."""
import asyncio
import json

import pytest
import redis.asyncio as aioredis

from dfflow.errors import Conflict, InUse, NotFound, ValidationError
from dfflow.models import RuleError, SecurityGroup, SecurityGroupRule
from tests.nbtopo import TOPIC, network, port


def group(gid: str, **fields) -> SecurityGroup:
    return SecurityGroup(id=gid, topic=TOPIC, name=gid, **fields)


def rule(rid: str, gid: str, **fields) -> SecurityGroupRule:
    return SecurityGroupRule(id=rid, topic=TOPIC, secgroup=gid, **fields)


async def _contents(nb):
    return sorted([(o.table, o.id, o.version) for t in ("secgroup", "secgroup_rule") for o in await nb.list(t)])


async def test_a_group_and_its_rules_are_written_together_or_not_at_all(nb):
    await nb.create_all([group("g"), rule("r1", "g", direction="egress"),
                         rule("r2", "g", remote_group="g")])
    assert {r.id for r in await nb.list("secgroup_rule")} == {"r1", "r2"}
    before = await _contents(nb)
    with pytest.raises(NotFound) as info:  # the last rule names a group that does not exist
        await nb.create_all([group("h"), rule("r3", "h"), rule("r4", "h", remote_group="nowhere")])
    assert info.value.field == "remote_group"
    assert await _contents(nb) == before
    with pytest.raises(Conflict):  # two rules of the batch match the same traffic
        await nb.create_all([group("h"), rule("r3", "h", protocol="tcp"), rule("r4", "h", protocol="6")])
    assert await _contents(nb) == before


async def test_deleting_a_group_deletes_its_rules_with_an_event_each(nb, nb_url):
    await nb.create_all([group("g"), rule("r1", "g", direction="egress"), rule("r2", "g", remote_group="g")])
    client = aioredis.from_url(nb_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(nb.keys.channel(TOPIC))
    await pubsub.get_message(timeout=1)  # the subscription's confirmation
    await nb.delete("secgroup", "g")
    events = []
    while len(events) < 3:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None, events
        events.append(json.loads(message["data"]))
    await pubsub.aclose()
    await client.aclose()
    assert sorted((e["table"], e["id"], e["action"]) for e in events) == [
        ("secgroup", "g", "delete"), ("secgroup_rule", "r1", "delete"), ("secgroup_rule", "r2", "delete")]
    assert await _contents(nb) == []
    # the rule claims went with them: the same rules can be made again
    await nb.create_all([group("g"), rule("r1", "g", direction="egress")])


async def test_a_group_a_port_uses_is_in_use(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await nb.create_all([group("a"), group("b"), rule("ra", "a", remote_group="b")])
    p = await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    await nb.update(p.replace(security_groups=["a"]))
    before = await _contents(nb)
    with pytest.raises(InUse) as info:
        await nb.delete("secgroup", "a")
    assert info.value.referrers == ["lport:p1"]
    assert await _contents(nb) == before


async def test_deleting_a_group_deletes_the_other_groups_rules_naming_it_as_neutron_does(nb):
    """Neutron's remote_group_id is a foreign key that cascades: the group goes, and so do the rules of
    other groups that name it, in the same transaction; their groups and other rules stay."""
    await network(nb, "net1", "10.1.0.0/24", 101)
    await nb.create_all([group("a"), group("b"), rule("ra", "a", remote_group="b"),
                         rule("rb", "a", direction="egress"), rule("own", "b", remote_group="b")])
    p = await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    await nb.update(p.replace(security_groups=["a"]))  # `a` in use does not keep `b`
    await nb.delete("secgroup", "b")
    assert [(t, i) for t, i, _ in await _contents(nb)] == [("secgroup", "a"), ("secgroup_rule", "rb")]


async def test_one_default_group_per_topic(nb):
    await nb.create(group("d1", is_default=True))
    with pytest.raises(Conflict) as info:
        await nb.create(group("d2", is_default=True))
    assert info.value.field == "is_default"
    await nb.create(SecurityGroup(id="d3", topic="other-project", is_default=True))


async def test_concurrent_duplicate_rules_leave_exactly_one(nb):
    await nb.create(group("g"))
    results = await asyncio.gather(*(nb.create(rule(f"r{i}", "g", protocol="udp", port_range_min=53,
                                                    port_range_max=53)) for i in range(10)),
                                   return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))


@pytest.mark.parametrize("fields, field, kind", [
    (dict(protocol="tcp", port_range_min=100, port_range_max=10), "port_range_min", "SecurityGroupInvalidPortRange"),
    (dict(protocol="icmp", port_range_max=3), "port_range_max", "SecurityGroupMissingIcmpType"),
    (dict(protocol="nope"), "protocol", "SecurityGroupRuleInvalidProtocol"),
    (dict(remote_ip_prefix="10.0.0.0/8", remote_group="g"), "remote_ip_prefix",
     "SecurityGroupRemoteGroupAndRemoteIpPrefix"),
])
def test_malformed_rules_name_the_field_and_neutrons_error(fields, field, kind):
    with pytest.raises(RuleError) as info:
        rule("r", "g", **fields).check()
    assert (info.value.field, info.value.kind) == (field, kind)


def test_a_port_without_port_security_has_no_groups_or_pairs():
    from dfflow.models import AddressPair, LogicalPort
    base = LogicalPort(id="p", topic=TOPIC, lswitch="n", mac="fa:16:3e:00:00:01", port_security=False)
    for changes, field in ((dict(security_groups=["g"]), "security_groups"),
                           (dict(allowed_address_pairs=[AddressPair("10.0.0.9", "fa:16:3e:00:00:01")]),
                            "allowed_address_pairs")):
        with pytest.raises(ValidationError) as info:
            base.replace(**changes).check()
        assert info.value.field == field


@pytest.mark.parametrize("landed", [True, False])
async def test_a_batch_whose_exec_reply_was_lost_is_done_once(nb, monkeypatch, landed):
    """The connection drops around EXEC (redis-py then raises WatchError): the retry finds every object
    of the batch written by the lost attempt and returns them, or, if EXEC never ran, writes them."""
    from redis.asyncio.client import Pipeline
    from redis.exceptions import WatchError

    from dfflow.nb.store import _LOST

    real_execute, drops = Pipeline.execute, []

    async def execute_then_drop(pipe, *args, **kwargs):
        if not drops and pipe.explicit_transaction:
            drops.append(1)
            if landed:
                await real_execute(pipe, *args, **kwargs)
            else:
                await pipe.reset()
            raise WatchError(f"A ConnectionError {_LOST} one or more keys")
        return await real_execute(pipe, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute_then_drop)
    written = await nb.create_all([group("g"), rule("r1", "g", direction="egress")])
    assert drops == [1]
    assert [(o.table, o.id) for o in written] == [("secgroup", "g"), ("secgroup_rule", "r1")]
    assert await _contents(nb) == sorted((o.table, o.id, o.version) for o in written)
    with pytest.raises(Conflict):  # without a lost reply, the same batch again is a duplicate
        await nb.create_all([group("g"), rule("r1", "g", direction="egress")])
