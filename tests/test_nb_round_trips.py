"""An NB write's round trips to Redis, counted on a real redis-server, and its atomicity under concurrency.

The counts are exact so that a change adding a round trip to the write path shows here (lower them
when a change removes one)."""
import asyncio
import json

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from dfflow.errors import ValidationError
from dfflow.models import LogicalPort, LogicalSwitch, Subnet
from dfflow.nb.store import NbApi, _TxnContext
from tests.nbtopo import TOPIC, network, port, router


@pytest.fixture
def round_trips(monkeypatch):
    """Counts the packets sent to Redis (each is answered before the sender goes on: a round trip)."""
    sent = [0]
    real_send = AbstractConnection.send_packed_command

    async def counting_send(self, *args, **kwargs):
        sent[0] += 1
        return await real_send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)

    async def count(write):
        sent[0] = 0
        result = await write
        return sent[0], result
    return count


async def test_a_port_write_takes_a_fixed_small_number_of_round_trips(nb, round_trips):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await nb.get("lport", "none")  # the pool's connection opened outside the counts
    assert (await round_trips(port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])))[0] == 3
    # modify: the read, then (WATCH and reads: the port, its claims, the switch, its MAC and IP
    # holders, the revision; and, read ahead, the switch's subnet referrers), its subnets, and the MULTI/EXEC
    trips, moved = await round_trips(nb.modify("lport", "p1", lambda p: p.replace(binding_chassis="c2")))
    assert trips == 4 and moved.binding_chassis == "c2"
    trips, _ = await round_trips(nb.modify("lswitch", "net1", lambda s: s.replace(mtu=1400)))
    assert trips == 3
    assert (await round_trips(nb.delete("lport", "p1")))[0] == 3


async def test_a_port_write_reads_its_networks_subnets_and_none_of_its_other_ports(nb, monkeypatch):
    await network(nb, "net1", "10.1.0.0/16", 101)
    await nb.create(Subnet(id="net1-v6", topic=TOPIC, lswitch="net1", cidr="fd00:1::/64"))
    for i in range(30):
        await port(nb, f"p{i}", "net1", f"fa:16:3e:00:00:{i + 1:02x}", [f"10.1.0.{i + 10}"])
    received = []
    real_read = _TxnContext.read

    async def recording(ctx, watch, commands):
        replies = await real_read(ctx, watch, commands)
        received.append(repr(replies))
        return replies

    monkeypatch.setattr(_TxnContext, "read", recording)
    moved = await nb.modify("lport", "p0", lambda p: p.replace(ips=["10.1.0.10", "fd00:1::a"]))
    assert moved.ips == ["10.1.0.10", "fd00:1::a"]
    assert any("subnet:net1-v6" in reply for reply in received)  # both subnets were read and checked
    assert not [i for i in range(1, 30) if any(f"lport:p{i}'" in reply for reply in received)]
    with pytest.raises(ValidationError, match=r"ips\[0\]: 10.9.0.1 is in no subnet of switch 'net1' "
                                              r"\(subnets: 10.1.0.0/16, fd00:1::/64\)"):
        await nb.modify("lport", "p1", lambda p: p.replace(ips=["10.9.0.1"]))


async def test_a_subnet_created_with_a_port_in_one_transaction_is_the_ports_subnet(nb):
    await nb.create(LogicalSwitch(id="net2", topic=TOPIC, name="net2", segmentation_id=102))
    created = await nb.create_all([Subnet(id="net2-subnet", topic=TOPIC, lswitch="net2", cidr="10.2.0.0/24"),
                                   LogicalPort(id="p", topic=TOPIC, lswitch="net2", mac="fa:16:3e:00:01:02",
                                               ips=["10.2.0.7"])])
    assert [o.id for o in created] == ["net2-subnet", "p"]
    assert (await nb.get("lport", "p")).ips == ["10.2.0.7"]


async def test_a_router_write_reads_its_rule_claims_holders_in_one_round_trip(nb, round_trips):
    _, a = await network(nb, "a", "10.1.0.0/24", 101)
    _, b = await network(nb, "b", "10.2.0.0/24", 102)
    await nb.get("lrouter", "none")
    # (WATCH and reads: the router, claims, both subnets, revision), the holders of its ports' IPs and
    # MACs, MULTI/EXEC
    trips, _ = await round_trips(router(nb, "r", [a, b]))
    assert trips == 3


async def test_a_connection_dropped_while_a_write_reads_redoes_the_write_once(nb, nb_url, monkeypatch):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    killer = aioredis.from_url(nb_url)
    real_read, reads = _TxnContext.read, []

    async def read_after_a_drop(ctx, watch, commands):
        reads.append(1)
        if len(reads) == 2:  # keys are watched by now: the connection dies under the transaction
            await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        return await real_read(ctx, watch, commands)

    monkeypatch.setattr(_TxnContext, "read", read_after_a_drop)
    before = await killer.get(nb.keys.rev)
    moved = await nb.modify("lport", "p1", lambda p: p.replace(binding_chassis="c2"))
    assert len(reads) > 3  # the write's reads were done again after the drop
    stored = await nb.get("lport", "p1")
    assert stored == moved and stored.binding_chassis == "c2" and stored.version > int(before)
    await killer.aclose()


async def test_concurrent_modifies_of_one_port_from_many_clients_never_lose_an_update(nb, nb_url):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    subscriber = aioredis.from_url(nb_url)
    pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(nb.keys.channel(TOPIC))
    await pubsub.get_message(timeout=0.1)  # the subscription's confirmation (returned as None)
    clients = [NbApi(nb_url) for _ in range(4)]

    async def append(client, token):
        await client.modify("lport", "p1", lambda p: p.replace(name=f"{p.name}<{token}>"))

    try:
        await asyncio.gather(*(append(clients[n % 4], n) for n in range(40)))
        final = await nb.get("lport", "p1")
        assert sorted(int(t) for t in final.name.strip("<>").split("><")) == list(range(40))
        updates = []
        while len(updates) < 40:
            message = await pubsub.get_message(timeout=2.0)
            assert message is not None, f"only {len(updates)} of 40 update events published"
            updates.append(json.loads(message["data"]))
        assert [e["action"] for e in updates] == ["update"] * 40
        assert [e["version"] for e in updates] == sorted(e["version"] for e in updates)
        assert updates[-1]["version"] == final.version
        assert await pubsub.get_message(timeout=0.2) is None  # one event per write that landed
    finally:
        for client in clients:
            await client.close()
        await pubsub.aclose()
        await subscriber.aclose()
