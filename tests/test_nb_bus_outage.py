"""Topics added to an NB subscriber while the NB does not answer: they take effect, with their
objects resynchronised, once it answers again, whether or not the connection was lost meanwhile."""
from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from dfflow.nb.bus import Subscriber
from test_nb_bus import Mirror, eventually, store_state, switch


async def test_a_topic_added_while_redis_times_out_is_resynchronised_once_it_answers(nb, nb_url):
    """A timeout need not end the connection: the subscriber's own connection stays up and Redis
    answers again. The topic's snapshot, which timed out, must still be taken."""
    await nb.create(switch(1, "late"))
    mirror = Mirror()
    sub = Subscriber(f"{nb_url}?socket_timeout=0.3", callback=mirror)
    admin = aioredis.from_url(nb_url)
    try:
        await sub.start()
        await sub.add_topic("early")
        # Scripts (the snapshot) wait, reads and SUBSCRIBE go on: the subscriber's connection stays up.
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        await sub.add_topic("late")
        assert sub.stats["topic_retries"] == 1 and ("lswitch", "late-n1") not in mirror.objects
        await admin.execute_command("CLIENT", "UNPAUSE")
        await eventually(lambda: ("lswitch", "late-n1") in mirror.objects, timeout=5)
        await nb.create(switch(2, "late"))
        expected = await store_state(nb, "late")
        await eventually(lambda: {k: v for k, v in mirror.objects.items() if k[1].startswith("late")} == expected)
        assert not sub.errors
    finally:
        await sub.stop()
        await admin.aclose()


async def test_a_topic_added_while_the_subscriber_reconnects_is_subscribed_and_resynchronised(nb, nb_url):
    """Added after the reconnect subscribed to the topics it knew, before it took their snapshots
    (here: from the handler of a resynchronised event, as a controller follows a port's topic)."""
    await nb.create(switch(1, "first"))
    await nb.create(switch(2, "second"))
    mirror = Mirror()
    added: list[str] = []

    async def handler(event):
        mirror(event)
        if event.get("resync") and event["id"] == "first-n3" and not added:
            added.append("second")
            await sub.add_topic("second")

    sub = Subscriber(nb_url, callback=handler, reconnect_delay=0.3, max_reconnect_delay=0.3)
    admin = aioredis.from_url(nb_url)
    try:
        await sub.start()
        await sub.add_topic("first")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await nb.create(switch(3, "first"))  # met by the reconnect's resync, which adds "second"
        await eventually(lambda: added == ["second"], timeout=5)
        await eventually(lambda: ("lswitch", "second-n2") in mirror.objects, timeout=5)
        await nb.create(switch(4, "second"))  # and its events arrive: it is subscribed
        await eventually(lambda: ("lswitch", "second-n4") in mirror.objects, timeout=5)
        assert sub.stats["reconnects"] == 1 and not sub.errors
    finally:
        await sub.stop()
        await admin.aclose()


async def test_a_topic_added_while_redis_is_down_arrives_with_its_objects_when_it_is_back(nb, nb_url,
                                                                                         redis_server):
    mirror = Mirror()
    sub = Subscriber(nb_url, callback=mirror, reconnect_delay=0.1, max_reconnect_delay=0.3)
    try:
        await sub.start()
        await sub.add_topic("early")
        await asyncio.to_thread(redis_server.stop)
        await sub.add_topic("late")  # returns at once: nothing to wait for while the NB is away
        assert "late" in sub.topics
        await asyncio.to_thread(redis_server.start)  # empty (no persistence): written anew
        await nb.create(switch(1, "late"))
        await eventually(lambda: ("lswitch", "late-n1") in mirror.objects, timeout=10)
        assert sub.stats["reconnects"] >= 1 and not sub.errors
    finally:
        await sub.stop()


async def test_each_topic_added_on_a_healthy_connection_is_resynchronised_once(nb, nb_url):
    """The listening loop, woken by the subscription's confirmation, must not take the snapshot of a
    topic that add_topic is taking already."""
    sub = Subscriber(nb_url, callback=Mirror())
    try:
        await sub.start()
        for i in range(8):
            await nb.create(switch(i + 1, f"t{i}"))
            await sub.add_topic(f"t{i}")
            await asyncio.sleep(0.2)  # the loop wakes to each confirmation meanwhile
        await asyncio.sleep(1.2)
        assert sub.stats["resyncs"] == 8 and sub.stats["events"] == 8
    finally:
        await sub.stop()


async def test_a_subscription_cut_while_the_nb_stays_up_is_followed_by_a_resync_of_what_was_published_meanwhile(
        nb, nb_url):
    """The NB stays up; only the subscriber's connection is cut, and an object is written before it is back: the
    subscriber's own read of its connection sees the cut, and what was published meanwhile comes by the resync."""
    import json
    import time
    from nb_corrupt import KEYS

    await nb.create(switch(1, "t1"))
    mirror = Mirror()
    sub = Subscriber(nb_url, callback=mirror)
    admin = aioredis.from_url(nb_url)
    try:
        await sub.start()
        await sub.add_topic("t1")
        await eventually(lambda: ("lswitch", "t1-n1") in mirror.objects)
        late = switch(2, "t1").replace(version=int(await admin.get(KEYS.rev)) + 1)
        event = {"table": "lswitch", "action": "create", "id": late.id, "topic": "t1", "version": late.version,
                 "object": late.to_dict(), "ts": time.time()}
        async with admin.pipeline(transaction=False) as pipe:  # one packet: the cut, then the write and its publish
            pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            pipe.set(KEYS.rev, late.version)
            pipe.set(KEYS.obj("lswitch", late.id), json.dumps(late.to_dict()))
            pipe.sadd(KEYS.ids("lswitch"), late.id)
            pipe.sadd(KEYS.topic("t1"), f"lswitch:{late.id}")
            pipe.publish(KEYS.channel("t1"), json.dumps(event))
            await pipe.execute()
        await eventually(lambda: ("lswitch", "t1-n2") in mirror.objects, timeout=5)
        assert sub.stats["reconnects"] == 1 and sub.stats["resyncs"] >= 2
    finally:
        await sub.stop()
        await admin.aclose()


async def test_a_topic_whose_subscription_meets_the_connection_closed_under_it_is_taken_up_by_the_reconnect(
        nb, nb_url, monkeypatch):
    """The listening loop may see the NB go and close the connection while add_topic's SUBSCRIBE is on its way:
    redis-py then fails the call on the closed connection's state (an AttributeError, seen in CI), not with a
    connection error. That is a lost connection, not a failure: the topic comes with the reconnect."""
    await nb.create(switch(1, "late"))
    mirror = Mirror()
    sub = Subscriber(nb_url, callback=mirror, reconnect_delay=0.1, max_reconnect_delay=0.3)
    try:
        await sub.start()
        await sub.add_topic("early")
        pubsub = sub._pubsub

        async def closed_under_the_call(*channels):
            sub.connected.clear()  # what the loop does on seeing the connection go ...
            await pubsub.connection.disconnect()  # ... and redis-py on reading its end
            raise AttributeError("'NoneType' object has no attribute 'writelines'")

        monkeypatch.setattr(pubsub, "subscribe", closed_under_the_call)
        await sub.add_topic("late")  # returns: nothing fails for the caller
        assert (sub.stats["topic_retries"], list(sub.errors)) == (1, [])
        await eventually(lambda: ("lswitch", "late-n1") in mirror.objects, timeout=10)
        await nb.create(switch(2, "late"))
        await eventually(lambda: ("lswitch", "late-n2") in mirror.objects, timeout=10)
        assert sub.stats["reconnects"] >= 1 and not sub.errors
    finally:
        await sub.stop()


async def test_a_subscription_that_fails_on_a_live_connection_is_counted_kept_and_retried(nb, nb_url, monkeypatch):
    await nb.create(switch(1, "late"))
    mirror = Mirror()
    sub = Subscriber(nb_url, callback=mirror)
    try:
        await sub.start()
        pubsub = sub._pubsub
        subscribe = pubsub.subscribe
        failures = []

        async def fails_once(*channels):
            if not failures:
                failures.append(RuntimeError("an answer the subscriber did not expect"))
                raise failures[0]
            return await subscribe(*channels)

        monkeypatch.setattr(pubsub, "subscribe", fails_once)
        await sub.add_topic("late")
        assert list(sub.errors) == failures and sub.stats["loop_errors"] == 1
        await eventually(lambda: ("lswitch", "late-n1") in mirror.objects, timeout=10)  # the loop took it up
    finally:
        await sub.stop()
