"""Migration timelines: when each step happened and when each chassis applied its flows.

Kept beside the NB objects, not in them: chassis stamp their apply times here
without a compare-and-set on the port (which would be an NB event for every
subscriber in the middle of the migration it measures).

  {p}:migration:{id}     hash: port, source, chassis, strategy, <state> = time, applied:<chassis> = time
  {p}:migrations         sorted set of migration ids by start time
"""
from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from dfflow.models import MigrationRecord
from dfflow.nb.keys import Keys

MAX_KEPT = 10_000  # oldest timelines are dropped beyond this


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Timelines:
    def __init__(self, client: aioredis.Redis, keys: Keys):
        self.redis, self.keys = client, keys

    def _key(self, migration_id: str) -> str:
        return self.keys.migration(migration_id)

    @property
    def _index(self) -> str:
        return self.keys.migrations

    async def record(self, port_id: str, mig: MigrationRecord, state: str, when: float) -> None:
        """Stamp `state` (requested, activated, switched, done, aborted) of migration `mig`."""
        started = mig.timestamps.get("requested", when)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(mig.id), mapping={
                "port": port_id, "source": mig.source or "", "chassis": mig.chassis,
                "strategy": mig.strategy, **{k: repr(v) for k, v in mig.timestamps.items()},
                state: repr(when)})
            pipe.zadd(self._index, {mig.id: started})
            pipe.zremrangebyrank(self._index, 0, -MAX_KEPT - 1)
            await pipe.execute()

    async def applied(self, migration_id: str, chassis: str, state: str, when: float, first: bool = False) -> None:
        """Chassis `chassis` applied its flows for `state` of the migration at `when` (`first`: unless
        a stamp of that step is there already)."""
        write = self.redis.hsetnx if first else self.redis.hset
        await write(self._key(migration_id), f"applied:{chassis}:{state}", repr(when))

    async def get(self, migration_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self._key(migration_id))
        if not raw:
            return None
        entry: dict[str, Any] = {"id": migration_id, "applied": {}}
        for key, value in ((_text(k), _text(v)) for k, v in raw.items()):
            if key.startswith("applied:"):
                _, chassis, state = key.split(":", 2)
                entry["applied"].setdefault(state, {})[chassis] = float(value)
            elif key in ("port", "source", "chassis", "strategy"):
                entry[key] = value
            else:
                entry[key] = float(value)
        return entry

    async def ids(self) -> list[str]:
        """Every kept migration id, oldest first."""
        return [_text(i) for i in await self.redis.zrange(self._index, 0, -1)]

    async def list(self, port_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        ids = [_text(i) for i in await self.redis.zrevrange(self._index, 0, -1)]
        if port_id is not None:
            ids = [i for i in ids if i.rsplit("@", 1)[0] == port_id]
        found = []
        for migration_id in ids[:limit]:
            entry = await self.get(migration_id)
            if entry is not None:
                found.append(entry)
        return found
