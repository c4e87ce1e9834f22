"""NB publish/subscribe: per-topic events that survive a lost connection.

A `Subscriber` listens to the topics it is given (added and removed at run
time) and hands every event to a callback and/or an asyncio queue, and each
burst -- the events the connection holds when the first of them is read, in
order -- to a burst callback, which can handle them as one change. It keeps the
version of every object it has seen; an event not newer than that is stale and
dropped, so duplicates and reordering are harmless.

When the connection drops it reconnects, resubscribes, and resynchronises each
topic from a consistent snapshot of the store (one Lua script: revision,
members and objects at one instant). What changed while it was away comes out
as ordinary events, deletions included, marked `"resync": true` (each a burst
of its own).

A topic added while the NB does not answer (down, reconnecting, or a command
timing out on a connection that then recovers) stays pending: the listening
loop subscribes and resynchronises it as soon as the NB answers again, so its
objects arrive even when no reconnect happens.

Bad data is contained: an event that is not a well-formed event, or whose
object does not parse and validate as its table's model, is logged with its
key, counted (`bad_events`, `bad_objects`), kept in `bad` (the latest ones, for
status) and skipped; the subscriber goes on with the next one. A malformed
object met at resync is skipped the same way, and the version of it delivered
before stays in force (it is not deleted).

An NB db older than what was delivered (emptied by FLUSHDB, or a restart without
persistence, or restored from an older copy: its revision is below the highest
version delivered) is not trusted: nothing is resynchronised from it (no
deletions), `behind` says so, and the subscriber checks again every second
until the NB has caught up.

`follow_channel` follows one plain channel (no topics, no versions) for as long as its caller runs,
subscribing again after a failure: what the migration-event channel (`dfflow.nb.migration_events`)
and the sandbox's fault switches are carried on.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import hiredis
import orjson
import redis.asyncio as aioredis
from redis._parsers import hiredis as redis_hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dfflow.models import (MODELS, Chassis, FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, Model,
                           SecurityGroup, SecurityGroupRule, Subnet)
from dfflow.nb.connection import redis_client
from dfflow.nb.keys import Keys, make_event

LOG = logging.getLogger(__name__)
Event = dict[str, Any]
ACTIONS = ("create", "update", "delete")
BAD_KEPT = 20
RESUBSCRIBE_DELAY = 0.5  # s after a plain channel failed before following it again
MAX_BURST = 1000  # events read at once, when that many are buffered, before they are handed over
_NOT_ENOUGH_DATA = getattr(redis_hiredis, "NOT_ENOUGH_DATA", False)  # what the reader gives for an incomplete reply
# A resync hands over what an object refers to before the object (a network before its ports): a
# subscriber never computes a port for a network it has not heard of yet.
_RESYNC_ORDER = {m.table: i for i, m in enumerate((Chassis, LogicalSwitch, Subnet, SecurityGroup,
                                                   SecurityGroupRule, LogicalRouter, LogicalPort, FloatingIP))}

# KEYS[1] = topic set, KEYS[2] = revision counter; ARGV[1] = object key prefix ("{p}:obj:")
_SNAPSHOT_LUA = """
local members = redis.call('SMEMBERS', KEYS[1])
local out = {redis.call('GET', KEYS[2]) or '0'}
for _, member in ipairs(members) do
  local sep = string.find(member, ':', 1, true)
  local value = redis.call('GET', ARGV[1] .. string.sub(member, 1, sep - 1) .. ':' .. string.sub(member, sep + 1))
  if value then
    table.insert(out, member)
    table.insert(out, value)
  end
end
return out
"""


@dataclass(slots=True)
class _Seen:
    version: int
    topic: str
    alive: bool
    model: Model | None = None  # the version delivered, checked, of a model checked by field: the next
    # version's unchanged fields are its (the handler holds it too: the engine's view)


async def cancel(task: asyncio.Task) -> None:
    """Cancel `task` and wait for its end. redis-py's `get_message(timeout=...)` can swallow a cancellation
    that lands while its own timeout fires (seen after a reconnect), so cancel until the task ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        LOG.error("%s ended with an error:\n%s", task.get_name(),
                  "".join(traceback.format_exception(task.exception())))


async def follow_channel(redis: aioredis.Redis, channel: str, on_message: Callable[[bytes | str], None],
                         what: str, on_subscribed: Callable[[], Awaitable[None]] | None = None,
                         on_failure: Callable[[], None] | None = None,
                         on_lost: Callable[[], None] | None = None) -> None:
    """Hand each message's data on `channel` to `on_message`, until cancelled.

    `on_subscribed` runs once subscribed (what was missed before can be read then: anything later
    arrives as a message too). A failure (the NB lost, a callback's error) is logged with its
    traceback as `what` failing, told to `on_failure`, and the channel is followed again after
    RESUBSCRIBE_DELAY; `on_lost` runs each time a subscription ends."""
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            if on_subscribed is not None:
                await on_subscribed()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception:
            if on_failure is not None:
                on_failure()
            LOG.exception("%s failed; resubscribing", what)
            await asyncio.sleep(RESUBSCRIBE_DELAY)
        finally:
            if on_lost is not None:
                on_lost()
            await pubsub.aclose()


class Subscriber:
    def __init__(self, url: str, prefix: str = "dfflow",
                 callback: Callable[[Event], Awaitable[None] | None] | None = None,
                 queue: asyncio.Queue | None = None, reconnect_delay: float = 0.1,
                 max_reconnect_delay: float = 2.0,
                 burst_callback: Callable[[list[Event]], Awaitable[None] | None] | None = None):
        self.url = url
        self.keys = Keys(prefix)
        self.callback = callback
        self.burst_callback = burst_callback
        self.queue = queue
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.topics: set[str] = set()
        self.stats: Counter[str] = Counter()
        self.errors: deque[BaseException] = deque(maxlen=BAD_KEPT)  # the latest failures, for tests and status
        self.bad: deque[dict[str, Any]] = deque(maxlen=BAD_KEPT)  # the latest malformed events/objects
        self._bad_seen: set[tuple[str, str, Any]] = set()  # (table, id, version) reported already
        self.high_water = 0  # the highest NB revision delivered or resynchronised from
        self.behind: dict[str, int] | None = None  # {"revision", "delivered"} while the NB is older
        self.connected = asyncio.Event()
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._pending: set[str] = set()  # topics added but not yet subscribed and resynchronised
        self._subscribed: list[str] = []  # the topics the current connection subscribed to at its start
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one delivery path at a time: live events vs resync

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="nb-subscriber")
        await self.connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)
            self._task = None
        await self._close_connection()

    async def add_topic(self, topic: str) -> None:
        """Subscribe to `topic` and emit its current objects (those not seen yet) as events."""
        if topic in self.topics:
            return
        self.topics.add(topic)
        self._pending.add(topic)
        if self.connected.is_set():
            try:
                await self._sync_new_topic(topic)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # A timeout need not end the connection, so no reconnect may follow: the topic stays
                # pending and the listening loop adds it once the NB answers.
                self.stats["topic_retries"] += 1
                LOG.warning("NB did not answer while adding topic %s (%s); retrying it", topic, exc)
            except Exception as exc:
                self._topic_call_failed("adding", topic, exc)

    def _topic_call_failed(self, doing: str, topic: str, exc: Exception) -> None:
        """A (un)subscription that failed with something other than a connection error. The listening loop
        may have closed the connection under it: redis-py then fails the call on the closed connection's
        state (`'NoneType' object has no attribute 'writelines'`), and the reconnect takes the topic up. On
        a connection still up it is a failure of its own: logged with its traceback, counted and kept in
        `errors`; an added topic stays pending either way, never fatal to the caller."""
        if not self.connected.is_set():
            self.stats["topic_retries"] += 1
            LOG.warning("NB connection lost while %s topic %s (%r); the reconnect takes it up", doing, topic, exc)
            return
        self.stats["loop_errors"] += 1
        self.errors.append(exc)
        LOG.error("%s topic %s failed; it is retried by the listening loop", doing.capitalize(), topic,
                  exc_info=exc)

    async def remove_topic(self, topic: str) -> None:
        """Stop listening to `topic` and forget what was seen of it (no events are emitted)."""
        if topic not in self.topics:
            return
        self.topics.discard(topic)
        self._pending.discard(topic)
        for key in [k for k, s in self._seen.items() if s.topic == topic]:
            del self._seen[key]
        if self.connected.is_set():
            try:
                await self._pubsub.unsubscribe(self.keys.channel(topic))
            except (RedisConnectionError, RedisTimeoutError, OSError):
                pass  # the reconnect subscribes to self.topics only
            except Exception as exc:
                self._topic_call_failed("removing", topic, exc)

    def version_of(self, table: str, obj_id: str) -> int | None:
        seen = self._seen.get((table, obj_id))
        return seen.version if seen is not None and seen.alive else None

    # -- the loop ------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.reconnect_delay
        first = True
        while True:
            try:
                await self._connect()
                if not first:
                    self.stats["reconnects"] += 1
                first = False
                # the topics _connect subscribed to; any added from now on stay pending for _listen
                topics = self._subscribed
                for topic in topics:
                    await self._resync(topic)
                self._pending -= set(topics)
                self.connected.set()
                delay = self.reconnect_delay
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
                    self.stats["disconnects"] += 1
                    LOG.warning("NB bus connection lost (%s); reconnecting in %.1fs", exc, delay)
                else:  # a bug or an answer we did not expect: never a silent end of the subscriber
                    self.stats["loop_errors"] += 1
                    self.errors.append(exc)
                    LOG.exception("NB subscriber failed; reconnecting and resynchronising in %.1fs", delay)
                await self._close_connection()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)

    async def _connect(self) -> None:
        self._redis = redis_client(self.url, socket_connect_timeout=2.0)
        await self._redis.ping()
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._subscribed = sorted(self.topics)
        channels = [self.keys.channel(t) for t in self._subscribed]
        # A channel that nobody else uses keeps the connection in subscribed mode even with no topics.
        await self._pubsub.subscribe(self.keys.keepalive, *channels)
        if not isinstance(getattr(self._pubsub.connection._parser, "_reader", None), hiredis.Reader):
            raise RuntimeError("the NB bus reads its connection with hiredis (a dfflow dependency), which redis-py "
                               "does not use here: is it installed?")

    async def _close_connection(self) -> None:
        pubsub, client = self._pubsub, self._redis
        self._pubsub = self._redis = None
        for closer in (getattr(pubsub, "aclose", None), getattr(client, "aclose", None)):
            if closer is not None:
                try:
                    await closer()
                except Exception:  # already broken; nothing more to release
                    pass

    async def _sync_new_topic(self, topic: str) -> None:
        self._pending.discard(topic)  # taken: the listening loop does not start it a second time
        try:
            await self._pubsub.subscribe(self.keys.channel(topic))
            await self._resync(topic)
        except BaseException:
            if topic in self.topics:
                self._pending.add(topic)
            raise

    async def _listen(self) -> None:
        while True:
            for topic in sorted(self._pending & self.topics):
                await self._sync_new_topic(topic)  # an error here is a lost connection: reconnect
            burst: list[dict[str, Any]] = []
            await self._take_parsed(burst)
            if not burst and not await self._read(timeout=1.0):
                # also notices a dead server even when no events flow
                await self._check_revision(int(await self._redis.get(self.keys.rev) or 0))
                continue
            # Whatever else the connection holds already is one burst: handed over together.
            while len(burst) < MAX_BURST:
                await self._take_parsed(burst)
                if len(burst) >= MAX_BURST or not await self._read(timeout=0):
                    break
            events = [e for e in map(self._event_of, burst) if e is not None and e["topic"] in self.topics]
            if events:
                async with self._lock:
                    await self._deliver_all(events)
            # Released now, not when the next burst comes: the versions these events replaced (`changed_from`)
            # die with them, a cost of this burst (after an evacuation, ~2x the CPU of a lone move's event).
            del events

    async def _read(self, timeout: float) -> bool:
        """Feed the connection's hiredis reader what its socket brings within `timeout` s (0: only what
        is buffered already, never waiting); whether anything came. Read here, not through redis-py's
        `get_message`, whose timeout, retry and read layers cost a chassis more per burst than several
        events' parse. A closed connection raises: the subscriber reconnects and resynchronises."""
        parser = self._pubsub.connection._parser
        stream = parser._stream
        if timeout == 0 and not stream._buffer and not stream.at_eof():  # (redis-py's own `can_read` test)
            return False
        try:
            async with asyncio.timeout(timeout or None):
                await parser.read_from_socket()
        except TimeoutError:
            return False
        return True

    async def _take_parsed(self, burst: list[dict[str, Any]]) -> None:
        """Append to `burst` the messages the connection's hiredis reader holds complete, up to
        MAX_BURST. A reply that is not a published message (a subscription's confirmation) goes
        through redis-py's own handling (its record of the subscriptions); an error reply is raised."""
        reader = self._pubsub.connection._parser._reader
        while len(burst) < MAX_BURST:
            response = reader.gets()
            if response is _NOT_ENOUGH_DATA or response is False:
                return
            if isinstance(response, BaseException):
                raise response
            if isinstance(response, list) and len(response) == 3 and response[0] == b"message":
                burst.append({"type": "message", "pattern": None, "channel": response[1], "data": response[2]})
                continue
            message = await self._pubsub.handle_message(response, ignore_subscribe_messages=True)
            if message is not None:
                burst.append(message)

    def _event_of(self, message: dict[str, Any]) -> Event | None:
        """A pubsub message's NB event, or None (not an event message, or a malformed one: counted)."""
        if message.get("type") != "message":
            return None
        try:
            event = loads(message["data"])
        except (ValueError, TypeError) as exc:
            self._bad_data("bad_events", _channel_of(message), f"not JSON ({exc})", message.get("data"))
            return None
        problem = event_problem(event)
        if problem is not None:
            key = f"{event.get('table')}:{event.get('id')}" if isinstance(event, dict) else _channel_of(message)
            self._bad_data("bad_events", key, problem, message.get("data"))
            return None
        return event

    async def _resync(self, topic: str) -> None:
        raw = await self._redis.eval(_SNAPSHOT_LUA, 2, self.keys.topic(topic), self.keys.rev,
                                     self.keys.objects)
        revision = int(raw[0])
        if not await self._check_revision(revision, resyncing=True):
            return  # nothing from an NB older than what was delivered; checked again every second
        present: dict[tuple[str, str], dict[str, Any] | None] = {}  # None: present but unreadable
        for i in range(1, len(raw), 2):
            table, _, obj_id = _text(raw[i]).partition(":")
            try:
                obj = loads(raw[i + 1])
                if not isinstance(obj, dict) or not isinstance(obj.get("version"), int):
                    raise ValueError("not an object with an integer version")
            except (ValueError, TypeError) as exc:
                self._bad_data("bad_objects", f"{table}:{obj_id}", f"not a stored object ({exc})", raw[i + 1])
                obj = None
            present[(table, obj_id)] = obj
        self.stats["resyncs"] += 1
        async with self._lock:
            for (table, obj_id), obj in sorted(present.items(), key=lambda item: (
                    _RESYNC_ORDER.get(item[0][0], len(_RESYNC_ORDER)), item[0])):
                if obj is None or table not in MODELS:
                    continue
                seen = self._seen.get((table, obj_id))
                action = "update" if seen is not None and seen.alive else "create"
                event = make_event(action, table, obj_id, topic, obj["version"], obj)
                event["resync"] = True
                await self._deliver(event)
            for (table, obj_id), seen in list(self._seen.items()):
                if seen.topic == topic and seen.alive and (table, obj_id) not in present \
                        and seen.version <= revision:
                    event = make_event("delete", table, obj_id, topic, revision, None)
                    event["resync"] = True
                    await self._deliver(event)

    async def _check_revision(self, revision: int, resyncing: bool = False) -> bool:
        """Is the NB at `revision` at least as new as what was delivered? If not, say so (once per
        episode); when it has caught up again, resynchronise every topic."""
        if revision < self.high_water:
            if self.behind is None:
                self.stats["nb_behind"] += 1
                LOG.error("the NB db is at revision %d, older than revision %d delivered here: it was emptied "
                          "or restored from an older copy. Keeping everything delivered (nothing is deleted) "
                          "and waiting for the NB to catch up", revision, self.high_water)
            self.behind = {"revision": revision, "delivered": self.high_water}
            return False
        self.high_water = revision
        if self.behind is not None:
            LOG.warning("the NB db has caught up (revision %d); resynchronising", revision)
            self.behind = None
            if not resyncing:
                for topic in sorted(self.topics):
                    await self._resync(topic)
        return True

    async def _deliver(self, event: Event) -> None:
        await self._deliver_all([event])

    async def _deliver_all(self, events: list[Event]) -> None:
        """Hand over the events that are news, in order: each to `callback` and `queue`, and all of
        them at once to `burst_callback`."""
        news = [e for e in events if self._news(e)]
        if not news:
            return
        self.stats["bursts"] += 1
        for event in news:
            if self.queue is not None:
                self.queue.put_nowait(event)
            if self.callback is not None:
                await self._call(self.callback, event, f"{event['action']} {event['table']} {event['id']}")
        if self.burst_callback is not None:
            await self._call(self.burst_callback, news, f"a burst of {len(news)} events, the first "
                             f"{news[0]['action']} {news[0]['table']} {news[0]['id']}")

    def _news(self, event: Event) -> bool:
        """Is the event newer than what was delivered of its object, and valid? (It is then recorded
        as delivered, its object parsed and validated in event["model"]; when that was read from the
        version delivered before, event["changed_from"] is (that version, the fields in which the new
        one may differ from it: those whose raw values differ).)"""
        key = (event["table"], event["id"])
        seen = self._seen.get(key)
        deleting = event["action"] == "delete"
        if seen is not None and (event["version"] <= seen.version or (deleting and not seen.alive)):
            self.stats["stale"] += 1
            return False
        if seen is None and deleting:
            self.stats["stale"] += 1
            return False
        model = None
        if not deleting:
            held = seen.model if seen is not None and seen.alive else None
            model, changed, problem = checked_object(event, held)
            if problem is not None:
                if (event["table"], event["id"], event["version"]) not in self._bad_seen:
                    self._bad_seen.add((event["table"], event["id"], event["version"]))
                    self._bad_data("bad_objects", f"{event['table']}:{event['id']}", problem, event["object"])
                return False
            event["model"] = model  # parsed and validated: the subscriber's handler need not parse it again
            if changed is not None:  # (the handler holds `held` too: it need not compare them again)
                event["changed_from"] = (held, changed)
            if not model.checks_by_field:
                model = None  # (not kept: its next version is read whole anyway)
        if seen is None:
            self._seen[key] = _Seen(event["version"], event["topic"], not deleting, model)
        else:  # kept, not made again: one per object this chassis follows
            seen.version, seen.topic, seen.alive, seen.model = event["version"], event["topic"], not deleting, model
        self.high_water = max(self.high_water, event["version"])
        self.stats["events"] += 1
        return True

    async def _call(self, handler: Callable[[Any], Awaitable[None] | None], arg: Any, what: str) -> None:
        try:
            result = handler(arg)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a handler bug must not kill the bus, nor vanish
            self.stats["callback_errors"] += 1
            self.errors.append(exc)
            LOG.error("NB event handler failed on %s:\n%s", what, traceback.format_exc())


    def _bad_data(self, counter: str, key: str, problem: str, data: Any) -> None:
        self.stats[counter] += 1
        shown = _text(data)[:200] if isinstance(data, (bytes, str)) else json.dumps(data, default=str)[:200]
        self.bad.append({"kind": counter, "key": key, "problem": problem, "at": time.time()})
        LOG.error("skipped a malformed NB %s %s: %s; data: %s", counter[4:-1], key, problem, shown)


def event_problem(event: Any) -> str | None:
    """What makes `event` not an NB event, or None."""
    if not isinstance(event, dict):
        return f"an event must be a JSON object, not {type(event).__name__}"
    if event.get("table") not in MODELS:
        return f"unknown table {event.get('table')!r}"
    if event.get("action") not in ACTIONS:
        return f"unknown action {event.get('action')!r}"
    for name in ("id", "topic"):
        if not isinstance(event.get(name), str) or not event[name]:
            return f"no {name}"
    version = event.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        return f"version {version!r} is not an integer"
    if event["action"] != "delete" and not isinstance(event.get("object"), dict):
        return "a create or update without its object"
    return None


def checked_object(event: Event, held: Model | None = None
                   ) -> tuple[Model | None, list[str] | None, str | None]:
    """The event's object parsed and validated, the fields checked when it was read from `held` (else
    None), and None; or None, None and what makes it not a valid object of its table (the same one).
    `held`: the version delivered before it, checked; the fields whose values are still its are not
    checked again (an evacuation's binding change rewrites one field of a port)."""
    changed = None
    try:
        model = MODELS[event["table"]]
        update = model.updated(held, event["object"]) if held is not None else None
        if update is not None:
            obj, changed = update
            obj.check_changed(changed)
        else:
            obj = model.from_dict(event["object"])
            obj.check()
    except Exception as exc:  # untrusted data: whatever it breaks is a reason to skip it
        return None, None, f"{type(exc).__name__}: {exc}"
    if (obj.id, obj.topic, obj.version) != (event["id"], event["topic"], event["version"]):
        return None, None, (f"the object says {obj.table} {obj.id!r} topic {obj.topic!r} version {obj.version}, "
                            f"its event {event['id']!r} topic {event['topic']!r} version {event['version']}")
    return obj, changed, None


def loads(data: bytes | str) -> Any:
    """JSON `data` decoded by orjson (~4x faster than json on an NB event, which every chassis decodes);
    what orjson refuses goes to json, whose answer (a value, as NaN, or an error) stands."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _channel_of(message: dict[str, Any]) -> str:
    """The channel a malformed message came on, to name it (read only then: most messages are good)."""
    return _text(message.get("channel") or b"?")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
