"""The migration-event channel (`<prefix>:migration-events`): "chassis X saw EVENT for migration M at NOW".

The chassis that sees a migration's step-2 unplug publishes it here before its NB write starts; every chassis that follows the port runs the same pure transition on its own view and
applies it at once (`controller.migrator`). A message is only a head start: a chassis that misses it,
or whose view does not hold that migration, converges from the NB write's event, so a publish that
fails is logged and counted, never raised, and a lost subscription is followed again
(`dfflow.nb.bus.follow_channel`) without anything to resynchronise.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from dfflow.nb.bus import follow_channel

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationEvent:
    port: str
    event: str  # a controller.migration.Event's value
    chassis: str  # the chassis that saw it
    now: float  # when it saw it: the transition's time
    migration: str  # the migration's id: only a view holding that migration applies it
    ts: float  # when it was published (the receiver's bus latency)

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, data: bytes | str) -> "MigrationEvent":
        """The event in a message; ValueError, KeyError or TypeError when it is not one."""
        msg = json.loads(data)
        return cls(**{f.name: msg[f.name] for f in dataclasses.fields(cls)})


class MigrationEvents:
    """One chassis' end of the channel. `count(name)` counts its failures: event_publish_errors,
    event_channel_errors."""

    def __init__(self, nb: Any, count: Callable[[str], None]):
        self.nb, self.count = nb, count

    @property
    def channel(self) -> str:
        return self.nb.keys.migration_events

    async def publish(self, event: MigrationEvent) -> None:
        try:
            await self.nb.redis.publish(self.channel, event.encode())
        except Exception:
            self.count("event_publish_errors")
            LOG.exception("migration event of port %s not published (the NB write still is)", event.port)

    async def follow(self, on_event: Callable[[bytes | str, float], None]) -> None:
        """Hand every message to `on_event(data, received)` for as long as the controller runs."""
        await follow_channel(self.nb.redis, self.channel, lambda data: on_event(data, time.time()),
                             "migration-event channel (NB events still converge)",
                             on_failure=lambda: self.count("event_channel_errors"))
