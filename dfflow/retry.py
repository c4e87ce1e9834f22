"""Retrying what a transient fault broke: back-off, counting, and one place that says what is transient.

A Redis, OVSDB or OpenFlow connection that drops comes back; a controller waits for it with
exponential back-off instead of dying. Each failed attempt is logged (warning) and counted in the
caller's stats under `<what>.retries`; the last one is raised to the caller.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Awaitable, Callable, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

LOG = logging.getLogger(__name__)
T = TypeVar("T")

# redis-py's connection errors are not the built-in ConnectionError: name both.
TRANSIENT: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, ConnectionError,
                                              TimeoutError, asyncio.TimeoutError, OSError)


class Backoff:
    """Delays that double from `first` up to `limit`; `reset()` after a success."""

    def __init__(self, first: float = 0.1, limit: float = 5.0):
        self.first, self.limit = first, limit
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.limit)
        return delay

    def reset(self) -> None:
        self.delay = self.first


async def retried(attempt: Callable[[], Awaitable[T]], what: str, stats: Counter[str], attempts: int = 5,
                  retry_on: tuple[type[BaseException], ...] = TRANSIENT, backoff: Backoff | None = None) -> T:
    """`await attempt()` until it succeeds, at most `attempts` times; the last failure is raised.

    `attempt` must be safe to repeat (it re-reads what it changes)."""
    backoff = backoff or Backoff()
    for number in range(1, attempts + 1):
        try:
            return await attempt()
        except retry_on as exc:
            if number == attempts:
                stats[f"{what}.failures"] += 1
                raise
            stats[f"{what}.retries"] += 1
            delay = backoff.next()
            LOG.warning("%s failed (attempt %d of %d): %s; retrying in %.1f s", what, number, attempts,
                        exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
