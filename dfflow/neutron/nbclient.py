"""The NB db from neutron-server's threads: the asyncio `NbApi` run on one event-loop thread of its own.

neutron-server calls its drivers from plain (or green) threads that block; the NB client is asyncio. Each
call is handed to a private event loop running in a dedicated OS thread (`run_coroutine_threadsafe`) and
the caller waits for its result, so every NB rule and validation is the NbApi's own. The loop and its
thread are created on first use in the process that uses them: a WSGI server that forks its workers after
loading the application gets one per worker.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Awaitable, Callable, TypeVar

from dfflow.errors import NotFound
from dfflow.models import Model
from dfflow.nb.store import NbApi

T = TypeVar("T")


class NbClient:
    """Blocking NB calls: `NbApi`'s get, list, create, modify, delete, and `put`/`discard` (idempotent)."""

    def __init__(self, url: str, prefix: str = "dfflow", timeout: float = 30.0):
        self.url, self.prefix, self.timeout = url, prefix, timeout
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api: NbApi | None = None

    def _started(self) -> tuple[asyncio.AbstractEventLoop, NbApi]:
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child holding its parent's dead thread
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="dfflow-nb-loop", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
                self._api = NbApi(self.url, self.prefix)
            assert self._loop is not None and self._api is not None
            return self._loop, self._api

    def run(self, call: Callable[[NbApi], Awaitable[T]]) -> T:
        """Run `call(nb_api)` on the NB loop and wait for its result (or its exception)."""
        loop, api = self._started()
        future = asyncio.run_coroutine_threadsafe(call(api), loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the NB db at {self.url} did not answer within {self.timeout} s") from None

    def spawn(self, call: Callable[[NbApi], Awaitable[Any]]) -> concurrent.futures.Future:
        """Start `call(nb_api)` on the NB loop without waiting for it (a long-lived task)."""
        loop, api = self._started()
        return asyncio.run_coroutine_threadsafe(call(api), loop)

    def get(self, table: str, obj_id: str) -> Model | None:
        return self.run(lambda nb: nb.get(table, obj_id))

    def list(self, table: str) -> list[Model]:
        return self.run(lambda nb: nb.list(table=table))

    def create(self, obj: Model) -> Model:
        return self.run(lambda nb: nb.create(obj))

    def modify(self, table: str, obj_id: str, change: Callable[[Model], Model | None]) -> Model | None:
        return self.run(lambda nb: nb.modify(table, obj_id, change))

    def delete(self, table: str, obj_id: str) -> None:
        self.run(lambda nb: nb.delete(table, obj_id))

    def put(self, model: type[Model], obj_id: str, topic: str, fields: dict[str, Any]) -> Model:
        """Make NB object `obj_id` carry `fields` (creating it if missing); its other fields are kept.

        A compare-and-set update, so a concurrent change to a field not in `fields` (the controller
        moving a port's migration record) is never undone; writes nothing when nothing changes."""
        def change(current: Model) -> Model | None:
            wanted = current.replace(**fields)
            return None if wanted == current else wanted

        async def upsert(nb: NbApi) -> Model:
            try:
                return await nb.modify(model.table, obj_id, change)
            except NotFound as exc:
                if (exc.table, exc.id, exc.field) != (model.table, obj_id, None):
                    raise
            return await nb.create(model(id=obj_id, topic=topic, **fields))

        return self.run(upsert)

    def discard(self, table: str, obj_id: str) -> bool:
        """Delete NB object `obj_id` if it exists; False if it did not."""
        async def delete(nb: NbApi) -> bool:
            try:
                await nb.delete(table, obj_id)
                return True
            except NotFound as exc:
                if (exc.table, exc.id, exc.field) != (table, obj_id, None):
                    raise
                return False

        return self.run(delete)

    def close(self) -> None:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                return
            loop, api = self._loop, self._api
            self._loop, self._api, self._pid = None, None, None
        asyncio.run_coroutine_threadsafe(api.close(), loop).result(self.timeout)
        loop.call_soon_threadsafe(loop.stop)
