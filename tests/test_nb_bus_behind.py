"""An NB db that went back in time (FLUSHDB, a restart without persistence, an older backup) is not
trusted by a subscriber: nothing is deleted from it, and it says so until the NB has caught up."""
from __future__ import annotations

from dfflow.nb.bus import Subscriber
from nbtopo import TOPIC, network, port
from test_nb_bus import Mirror, eventually


async def test_a_flushed_nb_deletes_nothing_and_is_reported_until_it_catches_up(nb, nb_url):
    await network(nb, "net1", "10.1.0.0/24", 101)
    await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"])
    mirror = Mirror()
    sub = Subscriber(nb_url, callback=mirror, reconnect_delay=0.1, max_reconnect_delay=0.1)
    await sub.start()
    await sub.add_topic(TOPIC)
    await eventually(lambda: len(mirror.objects) == 3)
    delivered = sub.high_water
    await nb.redis.flushdb()
    await eventually(lambda: sub.behind is not None, timeout=5)  # noticed while idle
    assert sub.behind == {"revision": 0, "delivered": delivered}
    await nb.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # a reconnect resyncs
    await eventually(lambda: sub.stats["reconnects"] >= 1 and sub.connected.is_set())
    assert len(mirror.objects) == 3 and not any(e["action"] == "delete" for e in mirror.events)
    assert sub.stats["nb_behind"] == 1
    # The NB is rebuilt past what was delivered: it is trusted again, and what it lacks is deleted.
    await network(nb, "net1", "10.1.0.0/24", 101)
    while int(await nb.redis.get(nb.keys.rev)) <= delivered:
        await nb.redis.incr(nb.keys.rev)
    await eventually(lambda: sub.behind is None, timeout=5)
    await eventually(lambda: ("lport", "p1") not in mirror.objects)
    assert set(mirror.objects) == {("lswitch", "net1"), ("subnet", "net1-subnet")}
    await sub.stop()
