"""The event loop a controller runs on: uvloop (libuv) by default, asyncio's own on request.

A chassis' controller spends much of an NB event's cost in the loop itself (socket reads and
writes, timers, futures): uvloop does that work in C."""
from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

EVENT_LOOPS = ("uvloop", "asyncio")
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], kind: str = "uvloop") -> T:
    """Run `main` to its end on a new loop of `kind` (one of EVENT_LOOPS)."""
    if kind == "asyncio":
        return asyncio.run(main)
    if kind == "uvloop":
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    main.close()
    raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, not {kind!r}")
