"""A controller's heartbeat keeps its chassis row registered and up, and stamps its liveness where no
chassis hears it: a beat that every chassis heard would cost N^2 NB events (200,000 a second at 1,000
chassis beating every 5 s), for a timestamp no flow depends on."""
from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

import controller.daemon as daemon_module
from controller.daemon import ControllerDaemon
from dfflow.models import CHASSIS_TOPIC, Chassis


async def chassis_events_during(nb_url, nb, body) -> list:
    """The messages published on the chassis topic while `body` runs."""
    client = aioredis.Redis.from_url(nb_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(nb.keys.channel(CHASSIS_TOPIC))
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    await body()
    heard, deadline = [], time.monotonic() + 0.3
    while time.monotonic() < deadline:
        if (message := await pubsub.get_message(timeout=0.05)) is not None:
            heard.append(message)
    await pubsub.aclose()
    await client.aclose()
    return heard


async def test_heartbeats_are_stamped_unheard_and_keep_the_row_registered_and_up(nb_url, nb, monkeypatch):
    monkeypatch.setattr(daemon_module, "HEARTBEAT_INTERVAL", 0.02)
    daemon = ControllerDaemon("c1", "192.0.2.1", nb_url, "unix:/nonexistent/db.sock", "br-int", "127.0.0.1:0")
    await daemon._register_chassis()
    beats = asyncio.create_task(daemon._heartbeat_loop())
    try:
        started = time.time()
        heard = await chassis_events_during(nb_url, nb, lambda: asyncio.sleep(0.3))
        assert heard == [], "a heartbeat was published to every chassis"
        assert (await nb.chassis_last_seen())["c1"] > started

        await nb.modify(Chassis.table, "c1", lambda c: c.replace(status="down"))
        await asyncio.sleep(0.2)
        assert (await nb.get(Chassis.table, "c1")).status == "up"

        await nb.delete(Chassis.table, "c1")  # an NB db that lost the row (a Redis restart)
        await asyncio.sleep(0.2)
        row = await nb.get(Chassis.table, "c1")
        assert row is not None and row.status == "up" and row.tunnel_ip == "192.0.2.1"
        assert daemon.stats["handler_errors"] == 0 and daemon.errors == []
    finally:
        beats.cancel()
        await daemon.nb.close()
