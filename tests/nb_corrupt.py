"""Writing bad data straight into the NB's Redis, as a buggy, hand-made or newer writer would."""
from __future__ import annotations

import json
import time
from typing import Any

from dfflow.nb.keys import Keys

KEYS = Keys()


async def publish_raw(redis: Any, topic: str, payload: str) -> None:
    """PUBLISH `payload` as it is on the topic's channel."""
    await redis.publish(KEYS.channel(topic), payload)


async def store_raw(redis: Any, table: str, obj_id: str, topic: str, text: str) -> None:
    """Store `text` as the object (with its id and topic indexes), publishing nothing."""
    await redis.set(KEYS.obj(table, obj_id), text)
    await redis.sadd(KEYS.ids(table), obj_id)
    await redis.sadd(KEYS.topic(topic), f"{table}:{obj_id}")


async def write_object(redis: Any, table: str, obj: dict[str, Any]) -> int:
    """Store `obj` (a dict, checked by nobody) at the next NB revision and publish its event."""
    version = int(await redis.incr(KEYS.rev))
    obj = dict(obj, version=version)
    await store_raw(redis, table, obj["id"], obj["topic"], json.dumps(obj))
    event = {"table": table, "action": "create", "id": obj["id"], "topic": obj["topic"], "version": version,
             "object": obj, "ts": time.time()}
    await publish_raw(redis, obj["topic"], json.dumps(event))
    return version
