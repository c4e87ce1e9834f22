"""The controller's long-lived tasks, kept running.

A task that dies is a bug or a fault its own retries did not cover: it is logged with its
traceback, counted (`task_restarts`, `task_restarts.<name>`) and started again after a back-off.
A task that dies `MAX_DEATHS` times within `WINDOW` seconds is a fault the controller cannot
handle: `on_fatal` is called with the reason, and the controller ends with a non-zero exit.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from typing import Any, Awaitable, Callable

from dfflow.retry import Backoff

LOG = logging.getLogger(__name__)
MAX_DEATHS, WINDOW = 5, 60.0


class TaskSupervisor:
    def __init__(self, stats: Counter[str], on_death: Callable[[str, BaseException], None],
                 on_fatal: Callable[[str], None], max_deaths: int = MAX_DEATHS, window: float = WINDOW):
        self.stats, self.on_death, self.on_fatal = stats, on_death, on_fatal
        self.max_deaths, self.window = max_deaths, window
        self.tasks: dict[str, asyncio.Task] = {}
        self._deaths: dict[str, deque[float]] = {}
        self._backoff: dict[str, Backoff] = {}

    def spawn(self, factory: Callable[[], Awaitable[Any]] | Awaitable[Any], name: str) -> asyncio.Task:
        """Run `factory()` as task `name`, and again whenever it dies. Given a coroutine object instead
        (it cannot be started twice), its death is fatal."""
        if asyncio.iscoroutine(factory):
            coroutine = factory
            factory = self._once(coroutine, name)
        task = asyncio.get_running_loop().create_task(self._keep(factory, name), name=name)
        self.tasks[name] = task
        return task

    def _once(self, coroutine: Awaitable[Any], name: str) -> Callable[[], Awaitable[Any]]:
        started = []

        async def run() -> Any:
            if started:
                self.on_fatal(f"task {name} died and cannot be started again (spawned as a coroutine)")
                await asyncio.Event().wait()  # the controller is stopping
            started.append(True)
            return await coroutine
        return run

    async def _keep(self, factory: Callable[[], Awaitable[Any]], name: str) -> None:
        deaths = self._deaths.setdefault(name, deque(maxlen=self.max_deaths))
        backoff = self._backoff.setdefault(name, Backoff(0.2, 5.0))
        while True:
            try:
                await factory()
                LOG.error("task %s returned; starting it again", name)
                raise RuntimeError(f"task {name} returned")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["task_restarts"] += 1
                self.stats[f"task_restarts.{name}"] += 1
                self.on_death(name, exc)
                now = time.monotonic()
                deaths.append(now)
                if len(deaths) == self.max_deaths and now - deaths[0] < self.window:
                    self.on_fatal(f"task {name} died {self.max_deaths} times in {now - deaths[0]:.0f} s; "
                                  f"last: {type(exc).__name__}: {exc}")
                    return
                await asyncio.sleep(backoff.next())

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()


class OneShots:
    """Tasks their starter does not await (a timeline stamp after an apply), kept until they end so
    none is lost to the garbage collector, and cancelled when the controller stops."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def start(self, coroutine: Awaitable[Any], name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
