"""The NB's Redis client: one server, or the primary that a set of sentinels names (followed across a
failover); a bounded pool for a server with many concurrent requests; riding out an outage."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dfflow.nb.nburl import parse_nb_url

LOG = logging.getLogger(__name__)
POOL_WAIT = 30.0  # s a call waits for a free connection of a bounded pool
SENTINEL_TIMEOUT = 1.0  # s for a sentinel to answer which server is the primary


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary that asks the sentinels where it is on every connect.

    redis-py's own asks only on a connection's first connect: one that was dropped (its primary
    killed) reconnects to the old address, and a client keeps failing after a failover."""

    async def _connect_retry(self) -> None:  # redis-py's first connect: the same lookup, in _connect
        if not self.is_connected:
            await self.connect_check_health(check_health=self.connection_pool.check_connection,
                                            retry_socket_connect=False)

    async def _connect(self) -> None:
        pool = self.connection_pool
        try:
            self.host, self.port = await pool.get_master_address()
        except MasterNotFoundError:
            asked = ",".join(f"{s.connection_pool.connection_kwargs.get('host')}:"
                             f"{s.connection_pool.connection_kwargs.get('port')}" for s in pool.sentinel_manager.sentinels)
            raise MasterNotFoundError(f"no sentinel of {asked} names a primary of {pool.service_name!r}") from None
        await super()._connect()


class SentinelRedis(aioredis.Redis):
    """A client of the primary a set of sentinels names; it asks them again on every new connection
    (so it follows a failover) and closes its connections to them with its own."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def redis_client(url: str, resend: bool = False, pool_size: int | None = None, **options: Any) -> aioredis.Redis:
    """A Redis client for the NB db at `url` (see dfflow.nb.nburl for the forms it takes).

    redis-py names itself to the server on every new connection and, unless told its version,
    reads it from the installed package's metadata each time (a parse of e-mail headers, several
    ms of CPU): a connection added to the pool in the middle of a migration paid that on the
    critical path."""
    nb_url = parse_nb_url(url)
    driver = DriverInfo(name="redis-py", lib_version=redis.__version__)
    if resend:
        # A command on a connection found dead (after a restart of redis-server every pooled one
        # is) is sent again on a new one. Inside a transaction that is safe: a connection lost
        # while WATCHing raises WatchError, and the whole write is redone. Not for a subscriber:
        # it must see the loss, to resynchronise what it missed.
        options.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), 3))
        options.setdefault("retry_on_error", [RedisConnectionError, RedisTimeoutError])
    if not nb_url.is_sentinel:
        if pool_size is not None:
            # At most `pool_size` connections; a request beyond waits for one (the default pool refuses
            # it with "Too many connections", a ConnectionError indistinguishable from an outage).
            pool = aioredis.BlockingConnectionPool.from_url(nb_url.url, max_connections=pool_size,
                                                            timeout=POOL_WAIT, driver_info=driver, **options)
            return aioredis.Redis.from_pool(pool)
        return aioredis.from_url(nb_url.url, driver_info=driver, **options)
    timeouts = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}
    sentinel = Sentinel(list(nb_url.sentinels), sentinel_kwargs=timeouts)
    client = sentinel.master_for(nb_url.service, redis_class=SentinelRedis, db=nb_url.db,
                                 username=nb_url.username, password=nb_url.password, driver_info=driver,
                                 connection_class=PrimaryConnection, **options)
    client.sentinel = sentinel
    return client


class Outage:
    """The NB db unreachable: wait with a jittered, growing back-off until `wait` s have passed."""

    def __init__(self, wait: float):
        self.deadline = time.monotonic() + wait
        self.delay = 0.05

    async def wait_or_raise(self, exc: Exception) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise exc
        LOG.warning("NB db unreachable (%s); retrying for %.1f s more", exc, left)
        await asyncio.sleep(min(left, self.delay * random.uniform(0.5, 1.5)))
        self.delay = min(self.delay * 2, 1.0)
