"""The Nova notifier: VIF plugged/unplugged events, from the NB to Nova's `os-server-external-events` API.

    NovaNotifier(nb_url, NovaConfig(url="http://nova:8774/v2.1", token=...)).run()   # `dfflow api --nova-url`

It follows every topic of the NB bus (`AllTopics`), turns the chassis' VIF reports into Nova events
(`VifEvents`) and hands them to `NovaSender`, which POSTs them in batches
(`{"events": [{"name", "server_uuid", "tag", "status"}]}`) from a bounded queue, retrying a lost
connection, a timeout, a 5xx or a 429 with exponential back-off. Nothing here waits on the API's
request path: the queue is filled synchronously and drained by its own task. Failures are logged
(with the traceback where there is one) and counted in `status()`, which `GET /dfflow/status` shows.
"""
from __future__ import annotations

import asyncio
import logging
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import httpx

from dfflow.models import CHASSIS_TOPIC
from dfflow.nova.events import VifEvents
from dfflow.nova.follow import AllTopics
from dfflow.nova.keystone import AuthError, FixedToken, KeystoneCredentials, KeystoneToken

LOG = logging.getLogger(__name__)
EVENTS_PATH = "/os-server-external-events"
_RETRIED = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class NovaConfig:
    url: str  # Nova's compute endpoint, the events go to {url}/os-server-external-events
    token: str | None = None  # sent as X-Auth-Token
    credentials: KeystoneCredentials | None = None  # instead of a token: log in to Keystone, renew
    batch_window: float = 0.02  # events arriving within it go in one request
    max_batch: int = 100
    max_queue: int = 10_000  # beyond it the oldest events are dropped (and counted)
    retry_base: float = 0.1  # first back-off; doubles per retry up to retry_max
    retry_max: float = 5.0
    max_attempts: int = 8
    timeout: float = 10.0


class NovaSender:
    """A bounded queue of Nova events, drained in batches by one task, retried with back-off."""

    def __init__(self, config: NovaConfig, client: httpx.AsyncClient | None = None):
        self.config = config
        self.queue: deque[dict[str, str]] = deque()
        self.stats: Counter[str] = Counter()
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._client = client
        self.auth = KeystoneToken(config.credentials) if config.credentials else FixedToken(config.token)

    def submit(self, events: list[dict[str, str]]) -> None:
        """Queue events; never blocks. A full queue drops its oldest events (counted, logged)."""
        for event in events:
            if len(self.queue) >= self.config.max_queue:
                dropped = self.queue.popleft()
                self.stats["dropped_overflow"] += 1
                self._error(f"queue full ({self.config.max_queue}): dropped {dropped['name']} for port "
                            f"{dropped['tag']}")
            self.queue.append(event)
            self.stats["queued"] += 1
        if events:
            self._wake.set()

    async def run(self) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "OpenStack-API-Version": "compute 2.1", "X-OpenStack-Nova-API-Version": "2.1"}
        own = self._client is None
        client = self._client or httpx.AsyncClient(timeout=self.config.timeout)
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(self.config.batch_window)
                while self.queue:
                    batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.config.max_batch))]
                    try:
                        await self._deliver(client, headers, batch)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug here must not stop the notifier, nor vanish
                        self.stats["errors"] += 1
                        self._error(f"sending {len(batch)} events failed:\n{traceback.format_exc()}")
                if not self.queue:
                    self._wake.clear()
        finally:
            if own:
                await client.aclose()

    async def _deliver(self, client: httpx.AsyncClient, headers: dict[str, str], batch: list[dict]) -> None:
        url = self.config.url + EVENTS_PATH
        delay = self.config.retry_base
        failure: BaseException | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                token = await self.auth.get(client)
                resp = await client.post(url, json={"events": batch},
                                         headers=dict(headers, **({"X-Auth-Token": token} if token else {})))
            except (httpx.HTTPError, AuthError) as exc:
                failure, problem = exc, f"{type(exc).__name__}: {exc}"
            else:
                renewed = resp.status_code == 401 and self.auth.invalidate()  # a revoked or expired token
                if resp.status_code not in _RETRIED and not renewed:
                    self._answered(resp, batch)
                    return
                failure, problem = None, f"HTTP {resp.status_code}: {resp.text[:200]}"
            self.stats["retries"] += 1
            LOG.warning("Nova events POST to %s failed (%s), attempt %d/%d; retrying in %.2fs", url, problem,
                        attempt, self.config.max_attempts, delay)
            if attempt == self.config.max_attempts:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max)
        self.stats["dropped_failed"] += len(batch)
        self._error(f"gave up on {len(batch)} events after {self.config.max_attempts} attempts: {problem}", failure)

    def _answered(self, resp: httpx.Response, batch: list[dict]) -> None:
        self.stats["batches"] += 1
        if resp.status_code == 404:  # none of the servers exists (any more): nothing to tell
            self.stats["not_found"] += len(batch)
            LOG.info("Nova knows none of the servers of %d events: %s", len(batch), resp.text[:200])
            return
        if resp.status_code not in (200, 207):
            self.stats["rejected"] += len(batch)
            self._error(f"Nova refused {len(batch)} events: HTTP {resp.status_code}: {resp.text[:200]}")
            return
        self.stats["sent"] += len(batch)
        try:
            answers = resp.json().get("events", [])
        except (ValueError, AttributeError):
            answers = []
        for answer in answers:
            if isinstance(answer, dict) and answer.get("code", 200) != 200:
                self.stats["event_failures"] += 1
                LOG.warning("Nova did not take event %s", answer)

    def _error(self, message: str, exc: BaseException | None = None) -> None:
        self.last_error = message
        LOG.error("Nova notifier: %s", message, exc_info=exc)


class NovaNotifier:
    """NB bus -> `VifEvents` -> `NovaSender`, as tasks on the caller's event loop."""

    def __init__(self, nb_url: str, config: NovaConfig, prefix: str = "dfflow",
                 client: httpx.AsyncClient | None = None):
        self.config = config
        self.events = VifEvents()
        self.sender = NovaSender(config, client)
        self.topics = AllTopics(nb_url, self._on_event, prefix=prefix, skip=(CHASSIS_TOPIC,))
        self._tasks: list[asyncio.Task] = []
        self.ready = asyncio.Event()  # following the NB: what changes from now on is announced

    def _on_event(self, event: dict[str, Any]) -> None:
        self.sender.submit(self.events.apply(event))

    async def start(self) -> None:
        """Start sending, then follow the NB; the state found at start is recorded, not announced."""
        self._tasks.append(asyncio.create_task(self.sender.run(), name="nova-sender"))
        self.events.baseline = True
        try:
            await self.topics.start()
        finally:
            self.events.baseline = False
        self.ready.set()

    def launch(self) -> asyncio.Task:
        """`start` as a task of its own (the API serves meanwhile); a failure is logged and counted."""
        def ended(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                self.sender.stats["errors"] += 1
                exc = task.exception()
                self.sender._error("could not start: " + "".join(traceback.format_exception(exc)))
        task = asyncio.create_task(self.start(), name="nova-notifier-start")
        task.add_done_callback(ended)
        self._tasks.append(task)
        return task

    async def stop(self) -> None:
        await self.topics.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()

    def status(self) -> dict[str, Any]:
        bus = self.topics.subscriber
        return {"url": self.config.url, "ready": self.ready.is_set(), "queue": len(self.sender.queue),
                "events": dict(self.sender.stats), "last_error": self.sender.last_error,
                "topics": len(bus.topics), "bus": dict(bus.stats) | {f"discovery_{k}": v
                                                                     for k, v in self.topics.stats.items()},
                "errors": self.sender.stats["errors"] + self.sender.stats["dropped_failed"]
                + self.sender.stats["dropped_overflow"] + self.sender.stats["rejected"]
                + bus.stats["callback_errors"] + bus.stats["loop_errors"]}
