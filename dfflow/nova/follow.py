"""Every topic's NB events, for a process that serves all tenants (the Nova notifier).

`dfflow.nb.bus.Subscriber` follows the topics it is given, with per-object versions (duplicates and
reordering are dropped) and a resync after a lost connection that emits only what changed.
`AllTopics` gives it every topic: the topics that exist (the NB's `{p}:topic:*` sets, listed at
start and after each reconnect of its own) and each new one as its first event is published (a
pattern subscription to `{p}:ev:*`, made before the listing so that no topic falls between). A
topic added late is resynchronised from a snapshot by the Subscriber, so the event that revealed it
is not lost.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dfflow.nb.bus import Event, Subscriber, cancel
from dfflow.nb.connection import redis_client
from dfflow.nb.keys import Keys

LOG = logging.getLogger(__name__)


class AllTopics:
    def __init__(self, url: str, callback: Callable[[Event], Awaitable[None] | None], prefix: str = "dfflow",
                 skip: tuple[str, ...] = (), reconnect_delay: float = 0.1, max_reconnect_delay: float = 2.0):
        self.url = url
        self.keys = Keys(prefix)
        self.skip = set(skip)
        self.subscriber = Subscriber(url, prefix, callback=callback, reconnect_delay=reconnect_delay,
                                     max_reconnect_delay=max_reconnect_delay)
        self.reconnect_delay, self.max_reconnect_delay = reconnect_delay, max_reconnect_delay
        self.stats: Counter[str] = Counter()
        self.started = asyncio.Event()  # the topics found at start are followed and resynchronised
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Follow every topic; returns once the topics that exist now have been delivered."""
        self._task = asyncio.create_task(self._discover(), name="nb-all-topics")
        started = asyncio.create_task(self.started.wait())
        await asyncio.wait({started, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            await self._task  # it ended: raise what ended it

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)
            self._task = None
        await self.subscriber.stop()

    async def _discover(self) -> None:
        delay = self.reconnect_delay
        while True:
            client = redis_client(self.url, socket_connect_timeout=2.0)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self.keys.channel("*"))
                for topic in await self._existing(client):
                    await self._follow(topic)
                if not self.started.is_set():
                    await self.subscriber.start()
                    self.started.set()
                delay = self.reconnect_delay
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        await client.ping()  # notices a dead server even when no events flow
                    elif message.get("type") == "pmessage":
                        await self._follow(self.keys.topic_of_channel(_text(message["channel"])))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.stats["disconnects"] += 1
                LOG.warning("NB topic discovery lost its connection (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)
            finally:
                await _close(pubsub, client)

    async def _existing(self, client: Any) -> list[str]:
        prefix = self.keys.topic("")
        return sorted({_text(key)[len(prefix):] async for key in client.scan_iter(match=prefix + "*", count=1000)})

    async def _follow(self, topic: str) -> None:
        if topic in self.skip or topic in self.subscriber.topics:
            return
        self.stats["topics"] += 1
        await self.subscriber.add_topic(topic)


async def _close(*closeables: Any) -> None:
    for item in closeables:
        try:
            await item.aclose()
        except Exception:  # already broken; nothing more to release
            pass


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
