"""Bad data in the NB db is contained: named, counted, skipped; nothing stops reading after it."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from click.testing import CliRunner

from api_fixtures import api  # noqa: F401
from dfflow.cli import main
from dfflow.errors import BadObject
from dfflow.nb.bus import Subscriber
from nb_corrupt import publish_raw, store_raw, write_object
from nbtopo import TOPIC, network, port
from test_nb_bus import eventually


def port_dict(port_id, mac="fa:16:3e:00:00:09", **extra):
    return {"id": port_id, "topic": TOPIC, "lswitch": "net1", "mac": mac, "ips": [], **extra}


async def test_malformed_events_are_counted_and_skipped_and_later_events_still_arrive(nb, nb_url):
    await network(nb, "net1", "10.1.0.0/24", 101)
    got = []
    sub = Subscriber(nb_url, callback=got.append)
    await sub.start()
    await sub.add_topic(TOPIC)
    await eventually(lambda: len(got) == 2)  # the switch and its subnet
    redis = nb.redis
    await publish_raw(redis, TOPIC, "{not json")
    await publish_raw(redis, TOPIC, json.dumps({"table": "lport", "action": "create", "id": "p-none",
                                                "topic": TOPIC, "version": 10**6}))  # no object
    await publish_raw(redis, TOPIC, json.dumps(["a", "list"]))
    await write_object(redis, "lport", port_dict("p-bad", mac="not-a-mac"))
    await write_object(redis, "lport", port_dict("p-new", mac="fa:16:3e:00:00:0a", qos_policy="gold"))
    await port(nb, "p-good", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    await eventually(lambda: {e["id"] for e in got} >= {"p-new", "p-good"})
    assert "p-bad" not in {e["id"] for e in got} and "p-none" not in {e["id"] for e in got}
    assert sub.stats["bad_events"] == 3 and sub.stats["bad_objects"] == 1
    bad = {b["key"]: b["problem"] for b in sub.bad}
    assert "lport.mac" in bad["lport:p-bad"] and "not-a-mac" in bad["lport:p-bad"]
    assert bad["lport:p-none"] == "a create or update without its object"
    # what names no object is named by the channel it came on
    channel = sub.keys.channel(TOPIC)
    assert [(b["key"], b["problem"][:8]) for b in sub.bad if not b["key"].startswith("lport:")] == [
        (channel, "not JSON"), (channel, "an event")]
    await sub.stop()


async def test_a_malformed_object_met_at_resync_is_skipped_and_its_last_good_version_kept(nb, nb_url):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    await store_raw(nb.redis, "lport", "p-junk", TOPIC, "{{{")
    got = []
    sub = Subscriber(nb_url, callback=got.append, reconnect_delay=0.1, max_reconnect_delay=0.1)
    await sub.start()
    await sub.add_topic(TOPIC)  # a resync of the topic
    await eventually(lambda: "p1" in {e["id"] for e in got})
    assert sub.stats["bad_objects"] == 1 and sub.bad[-1]["key"] == "lport:p-junk"
    # p1 corrupted in place, then the connection drops: the resync neither delivers nor deletes it
    await store_raw(nb.redis, "lport", "p1", TOPIC, json.dumps({"id": "p1", "version": "x"}))
    await nb.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await eventually(lambda: sub.stats["reconnects"] >= 1 and sub.connected.is_set())
    await port(nb, "p2", "net1", "fa:16:3e:00:00:02", ["10.1.0.6"])
    await eventually(lambda: "p2" in {e["id"] for e in got})
    assert not any(e["id"] == "p1" and e["action"] == "delete" for e in got)
    assert sub.stats["bad_objects"] >= 2
    await sub.stop()


async def test_listing_names_a_malformed_object_or_skips_it_when_asked(nb):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    await store_raw(nb.redis, "lport", "p-junk", TOPIC, json.dumps(port_dict("p-junk", mac=7)))
    with pytest.raises(BadObject) as info:
        await nb.list("lport")
    assert "lport 'p-junk' in the NB db is malformed" in str(info.value) and "mac" in str(info.value)
    bad = []
    assert [p.id for p in await nb.list("lport", bad=bad)] == ["p1"]
    assert [b.id for b in bad] == ["p-junk"]


def test_nb_list_prints_the_good_objects_and_names_the_bad_one(nb_url):
    async def seed():
        from dfflow.nb.store import NbApi
        nb = NbApi(nb_url)
        await network(nb, "net1", "10.1.0.0/24", 101)
        await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
        await store_raw(nb.redis, "lport", "p-junk", TOPIC, "not json at all")
        await nb.close()
    asyncio.run(seed())
    result = CliRunner().invoke(main, ["nb", "list", "lport", "--nb", nb_url])
    assert result.exit_code == 1
    assert "p1" in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert "skipped: lport 'p-junk' in the NB db is malformed" in result.stderr


def test_api_port_list_with_a_corrupt_record_answers_json_naming_it(api, nb_url):  # noqa: F811
    async def seed():
        from dfflow.nb.store import NbApi
        nb = NbApi(nb_url)
        await network(nb, "net1", "10.1.0.0/24", 101)
        await store_raw(nb.redis, "lport", "p-junk", TOPIC, "{")
        await nb.close()
    asyncio.run(seed())
    reply = httpx.get(f"{api.url}/v2.0/ports")
    assert reply.status_code == 500
    error = reply.json()["NeutronError"]
    assert "lport 'p-junk' in the NB db is malformed" in error["message"]


async def test_an_unexpected_error_in_the_subscriber_is_counted_and_it_resynchronises(nb, nb_url):
    got = []
    sub = Subscriber(nb_url, callback=got.append, reconnect_delay=0.1, max_reconnect_delay=0.1)
    await sub.start()
    await sub.add_topic(TOPIC)
    check, failures = sub._check_revision, []

    async def failing_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug in the idle check")
        return await check(*args, **kwargs)

    sub._check_revision = failing_once
    await eventually(lambda: sub.stats["loop_errors"] == 1)
    await network(nb, "net1", "10.1.0.0/24", 101)
    await eventually(lambda: {e["id"] for e in got} >= {"net1", "net1-subnet"})
    assert isinstance(sub.errors[-1], RuntimeError)
    await sub.stop()
