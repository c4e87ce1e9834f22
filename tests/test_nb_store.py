"""The NB store on a real redis-server: CRUD, versions, references, atomicity."""
import json

import pytest
import redis.asyncio as aioredis

from dfflow.errors import Conflict, InUse, NotFound, ValidationError, VersionConflict
from dfflow.models import FloatingIP, LogicalSwitch, Subnet, Chassis, CHASSIS_TOPIC
from tests.nbtopo import TOPIC, network, port, router


async def test_create_get_update_delete_round_trip(nb):
    ls, sn = await network(nb, "net1", "10.1.0.0/24", 101)
    p = await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    assert p.version > 0
    assert await nb.get("lport", "p1") == p
    moved = await nb.update(p.replace(binding_chassis="chassis-2"))
    assert moved.version > p.version
    assert (await nb.get("lport", "p1")).binding_chassis == "chassis-2"
    assert [o.id for o in await nb.list("lport")] == ["p1"]
    assert {o.id for o in await nb.list(topic=TOPIC)} == {"net1", "net1-subnet", "p1"}
    await nb.delete("lport", "p1")
    assert await nb.get("lport", "p1") is None
    assert await nb.list("lport") == []


async def test_update_with_a_stale_version_is_a_conflict_and_writes_nothing(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    p = await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    first = await nb.update(p.replace(binding_chassis="a"))
    with pytest.raises(VersionConflict) as info:
        await nb.update(p.replace(binding_chassis="b"))  # still quotes the old version
    assert info.value.field == "version"
    assert (await nb.get("lport", "p1")) == first


async def test_modify_retries_through_concurrent_writers(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    import asyncio

    async def rename(i):
        await nb.modify("lport", "p1", lambda p: p.replace(name=p.name + f"<{i}>"))

    await asyncio.gather(*(rename(i) for i in range(10)))
    name = (await nb.get("lport", "p1")).name
    assert sorted(name.strip("<>").split("><"), key=int) == [str(i) for i in range(10)]


async def test_versions_grow_across_delete_and_recreate(nb):
    ls = await nb.create(LogicalSwitch(id="n", topic=TOPIC, segmentation_id=5))
    await nb.delete("lswitch", "n")
    again = await nb.create(LogicalSwitch(id="n", topic=TOPIC, segmentation_id=5))
    assert again.version > ls.version


async def test_reference_to_a_missing_object_names_the_field(nb):
    with pytest.raises(NotFound) as info:
        await nb.create(Subnet(id="s", topic=TOPIC, lswitch="nowhere", cidr="10.0.0.0/24"))
    assert info.value.field == "lswitch"
    assert await nb.get("subnet", "s") is None


async def test_fixed_ip_outside_the_switch_subnets_is_refused(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    with pytest.raises(ValidationError) as info:
        await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5", "10.2.0.5"])
    assert info.value.field == "ips[1]"
    assert await nb.list("lport") == []


async def test_duplicate_mac_or_ip_on_one_switch_is_refused_but_fine_on_another(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await network(nb, "net2", "10.1.0.0/24", 102)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    with pytest.raises(Conflict) as info:
        await port(nb, "p2", "net1", "fa:16:3e:00:00:01", ["10.1.0.6"])
    assert info.value.field == "mac"
    with pytest.raises(Conflict) as info:
        await port(nb, "p2", "net1", "fa:16:3e:00:00:02", ["10.1.0.5"])
    assert info.value.field == "ips[0]"
    # the same MAC and IP on another network: isolated, allowed
    await port(nb, "p3", "net2", "fa:16:3e:00:00:01", ["10.1.0.5"])
    # releasing a claim on update frees it for others
    p1 = await nb.get("lport", "p1")
    await nb.update(p1.replace(ips=["10.1.0.9"]))
    await port(nb, "p2", "net1", "fa:16:3e:00:00:02", ["10.1.0.5"])


async def test_duplicate_vni_is_refused(nb):
    await nb.create(LogicalSwitch(id="a", topic=TOPIC, segmentation_id=7))
    with pytest.raises(Conflict) as info:
        await nb.create(LogicalSwitch(id="b", topic=TOPIC, segmentation_id=7))
    assert info.value.field == "segmentation_id"


async def test_overlapping_subnets_on_one_switch_are_refused(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    with pytest.raises(Conflict) as info:
        await nb.create(Subnet(id="s2", topic=TOPIC, lswitch="net1", cidr="10.1.0.128/25"))
    assert info.value.field == "cidr"


async def test_deleting_a_referenced_object_is_refused(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    with pytest.raises(InUse) as info:
        await nb.delete("lswitch", "net1")
    assert "lport:p1" in str(info.value)
    with pytest.raises(InUse):
        await nb.delete("subnet", "net1-subnet")  # p1 has an address in it
    assert await nb.get("lswitch", "net1") is not None
    await nb.delete("lport", "p1")
    await nb.delete("subnet", "net1-subnet")
    await nb.delete("lswitch", "net1")


async def test_router_port_must_sit_on_the_subnet_gateway_and_a_subnet_attaches_once(nb):
    _, sn1 = await network(nb, "net1", "10.1.0.0/24", 101)
    await router(nb, "r1", [sn1])
    with pytest.raises(Conflict) as info:
        await router(nb, "r2", [sn1])
    assert info.value.field == "ports[0].subnet"
    with pytest.raises(InUse):
        await nb.delete("subnet", "net1-subnet")


async def _fip_setup(nb):
    _, sn1 = await network(nb, "net1", "10.1.0.0/24", 101)
    await network(nb, "public", "172.24.4.0/24", 900, external=True)
    await router(nb, "r1", [sn1], external={"lswitch": "public", "ip": "172.24.4.2",
                                             "mac": "fa:16:3e:aa:00:01"})
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])


async def test_floating_ip_rules(nb):
    await _fip_setup(nb)
    ok = dict(id="f1", topic=TOPIC, floating_ip="172.24.4.10", lswitch="public", mac="fa:16:3e:bb:00:01",
              port="p1", fixed_ip="10.1.0.5", router="r1")
    with pytest.raises(ValidationError) as info:  # not an external network
        await nb.create(FloatingIP(**{**ok, "lswitch": "net1", "floating_ip": "10.1.0.77"}))
    assert info.value.field == "lswitch"
    with pytest.raises(ValidationError) as info:  # fixed ip not on the port
        await nb.create(FloatingIP(**{**ok, "fixed_ip": "10.1.0.6"}))
    assert info.value.field == "fixed_ip"
    await nb.create(FloatingIP(**ok))
    with pytest.raises(Conflict) as info:  # two floating IPs for one fixed IP
        await nb.create(FloatingIP(**{**ok, "id": "f2", "floating_ip": "172.24.4.11",
                                      "mac": "fa:16:3e:bb:00:02"}))
    assert info.value.field == "fixed_ip"
    with pytest.raises(InUse):
        await nb.delete("lport", "p1")
    # disassociate, then the port may go
    f1 = await nb.get("floatingip", "f1")
    await nb.update(f1.replace(port=None, fixed_ip=None, router=None))
    await nb.delete("lport", "p1")


async def test_topic_cannot_change_on_update(nb):
    ls = await nb.create(LogicalSwitch(id="n", topic=TOPIC, segmentation_id=5))
    with pytest.raises(ValidationError) as info:
        await nb.update(ls.replace(topic="other"))
    assert info.value.field == "topic"


async def test_a_failure_between_write_and_publish_leaves_neither(nb, nb_url):
    client = aioredis.from_url(nb_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(nb.keys.channel(TOPIC))
    await pubsub.get_message(timeout=0.1)

    async def explode():
        raise RuntimeError("injected failure before publish")

    nb.before_publish = explode
    with pytest.raises(RuntimeError):
        await nb.create(LogicalSwitch(id="n", topic=TOPIC, segmentation_id=5))
    assert await nb.get("lswitch", "n") is None
    assert await client.keys("dfflow:ids:*") == [] and await client.keys("dfflow:uniq:*") == []
    assert await pubsub.get_message(timeout=0.3) is None
    nb.before_publish = None
    await nb.create(LogicalSwitch(id="n", topic=TOPIC, segmentation_id=5))
    event = json.loads((await pubsub.get_message(timeout=2.0))["data"])
    assert (event["table"], event["action"], event["id"]) == ("lswitch", "create", "n")
    # the same for deletes
    nb.before_publish = explode
    with pytest.raises(RuntimeError):
        await nb.delete("lswitch", "n")
    assert await nb.get("lswitch", "n") is not None
    assert await pubsub.get_message(timeout=0.3) is None
    await pubsub.aclose()
    await client.aclose()


async def test_chassis_rows_live_on_the_chassis_topic(nb):
    await nb.create(Chassis(id="chassis-1", topic=CHASSIS_TOPIC, tunnel_ip="172.31.0.1"))
    assert [c.id for c in await nb.list(topic=CHASSIS_TOPIC)] == ["chassis-1"]


async def test_ports_are_indexed_by_the_chassis_they_are_bound_to_or_migrating_between(nb):
    from dfflow.models import MigrationRecord
    await network(nb, "net1", "10.1.0.0/24", 101)
    p = await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"], chassis="c1")
    assert [x.id for x in await nb.ports_of_chassis("c1")] == ["p1"]
    p = await nb.update(p.replace(migration=MigrationRecord(chassis="c2", source="c1")))
    assert [x.id for x in await nb.ports_of_chassis("c2")] == ["p1"]
    p = await nb.update(p.replace(migration=None, binding_chassis="c2"))
    assert await nb.ports_of_chassis("c1") == []
    await nb.delete("lport", "p1")
    assert await nb.ports_of_chassis("c2") == []
