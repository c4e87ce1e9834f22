"""NB pub/sub on a real redis-server: per-topic delivery, topics at run time, resync."""
import asyncio
import random

import pytest
import redis.asyncio as aioredis

from dfflow.errors import Conflict, NotFound
from dfflow.models import LogicalSwitch
from dfflow.nb.bus import Subscriber


class Mirror:
    """Applies events to a dict, as a controller's cache would."""

    def __init__(self):
        self.objects = {}
        self.events = []

    def __call__(self, event):
        self.events.append(event)
        key = (event["table"], event["id"])
        if event["action"] == "delete":
            self.objects.pop(key, None)
        else:
            self.objects[key] = event["object"]


async def store_state(nb, topic):
    return {(o.table, o.id): o.to_dict() for o in await nb.list(topic=topic)}


async def eventually(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def switch(i, topic):
    return LogicalSwitch(id=f"{topic}-n{i}", topic=topic, segmentation_id=i)


async def test_two_subscribers_get_exactly_their_topics_events(nb, nb_url):
    a, b = Mirror(), Mirror()
    sub_a, sub_b = Subscriber(nb_url, callback=a), Subscriber(nb_url, callback=b)
    await sub_a.start(), await sub_b.start()
    await sub_a.add_topic("ta")
    await sub_b.add_topic("tb")
    for i in range(1, 6):
        await nb.create(switch(i, "ta"))
        await nb.create(switch(100 + i, "tb"))
    await nb.delete("lswitch", "ta-n1")
    await eventually(lambda: len(a.events) == 6 and len(b.events) == 5)
    await asyncio.sleep(0.2)  # nothing more arrives
    assert {e["topic"] for e in a.events} == {"ta"} and {e["topic"] for e in b.events} == {"tb"}
    assert a.objects == await store_state(nb, "ta")
    assert b.objects == await store_state(nb, "tb")
    assert [e["action"] for e in a.events] == ["create"] * 5 + ["delete"]
    await sub_a.stop(), await sub_b.stop()


async def test_topics_added_at_run_time_replay_existing_objects_and_removed_ones_go_quiet(nb, nb_url):
    seen = Mirror()
    sub = Subscriber(nb_url, callback=seen)
    await sub.start()
    await nb.create(switch(1, "late"))
    await sub.add_topic("late")
    await eventually(lambda: ("lswitch", "late-n1") in seen.objects)
    await nb.create(switch(2, "late"))
    await eventually(lambda: ("lswitch", "late-n2") in seen.objects)
    await sub.remove_topic("late")
    count = len(seen.events)
    await nb.create(switch(3, "late"))
    await asyncio.sleep(0.3)
    assert len(seen.events) == count
    await sub.stop()


async def test_queue_delivery_and_stale_events_are_dropped(nb, nb_url):
    queue = asyncio.Queue()
    sub = Subscriber(nb_url, queue=queue)
    await sub.start()
    await sub.add_topic("t")
    ls = await nb.create(switch(1, "t"))
    event = await asyncio.wait_for(queue.get(), 5)
    assert (event["action"], event["version"]) == ("create", ls.version)
    # a replayed (duplicate) event is stale and dropped
    await sub._deliver(dict(event))
    assert queue.empty() and sub.stats["stale"] == 1
    await sub.stop()


async def test_handler_exceptions_are_counted_and_kept_not_fatal(nb, nb_url):
    calls = []

    def handler(event):
        calls.append(event)
        if len(calls) == 1:
            raise ValueError("handler bug")

    sub = Subscriber(nb_url, callback=handler)
    await sub.start()
    await sub.add_topic("t")
    await nb.create(switch(1, "t"))
    await nb.create(switch(2, "t"))
    await eventually(lambda: len(calls) == 2)
    assert sub.stats["callback_errors"] == 1
    assert isinstance(sub.errors[0], ValueError)
    await sub.stop()


async def _churn(nb, topic, rounds, rng):
    """Random creates, updates and deletes; two churns may overlap, so each step reads first."""
    for i in range(rounds):
        name = f"{topic}-n{rng.randrange(1, 40)}"
        try:
            current = await nb.get("lswitch", name)
            if current is None:
                await nb.create(switch(int(name.rsplit("n", 1)[1]), topic))
            elif rng.random() < 0.5:
                await nb.delete("lswitch", name, version=current.version)
            else:
                await nb.update(current.replace(name=f"v{i}"))
        except (Conflict, NotFound):
            pass  # the other churn got there first
        except (ConnectionError, OSError, aioredis.ConnectionError):
            await asyncio.sleep(0.05)  # server away; the writer retries later, as a real one would
        await asyncio.sleep(0.005)


@pytest.mark.persistent_redis
async def test_resync_after_redis_restart_ends_with_exactly_the_store_state(nb, nb_url, redis_server):
    mirror = Mirror()
    sub = Subscriber(nb_url, callback=mirror, reconnect_delay=0.3, max_reconnect_delay=0.3)
    await sub.start()
    await sub.add_topic("t")
    rng = random.Random(7)
    await _churn(nb, "t", 60, rng)
    churn = asyncio.create_task(_churn(nb, "t", 200, rng))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(redis_server.stop)
    await asyncio.sleep(0.2)
    await asyncio.to_thread(redis_server.start)
    # writes and deletes land while the subscriber is still away (it waits 0.3 s to reconnect)
    await _churn(nb, "t", 30, rng)
    await churn
    expected = await store_state(nb, "t")
    await eventually(lambda: mirror.objects == expected)
    assert sub.stats["reconnects"] >= 1
    assert any(e.get("resync") for e in mirror.events[1:])
    await sub.stop()


async def test_resync_after_a_cut_connection_reports_deletions_made_meanwhile(nb, nb_url):
    mirror = Mirror()
    sub = Subscriber(nb_url, callback=mirror, reconnect_delay=0.5, max_reconnect_delay=0.5)
    await sub.start()
    await sub.add_topic("t")
    for i in range(1, 6):
        await nb.create(switch(i, "t"))
    await eventually(lambda: len(mirror.objects) == 5)
    admin = aioredis.from_url(nb_url)
    await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await nb.delete("lswitch", "t-n2")
    await nb.delete("lswitch", "t-n3")
    await nb.create(switch(9, "t"))
    expected = await store_state(nb, "t")
    await eventually(lambda: mirror.objects == expected)
    resynced = [(e["action"], e["id"]) for e in mirror.events if e.get("resync")]
    assert ("delete", "t-n2") in resynced and ("delete", "t-n3") in resynced
    assert ("create", "t-n9") in resynced
    await admin.aclose()
    await sub.stop()
