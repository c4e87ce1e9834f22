"""The NB database on Redis: versioned objects, written atomically with their events.

Where each thing lives in Redis is `dfflow.nb.keys`; the connection to it (a server, or the primary
a set of sentinels names) is `dfflow.nb.connection`.

Every write is one optimistic transaction: WATCH what it reads, check, then
MULTI/EXEC of the data, the indexes and the PUBLISH of its event. Either all of
it happens or none does; a concurrent change to anything read retries the whole
write. An object's `version` is the NB revision of its last write, so versions
only grow, also across delete and re-create of an id.

The reads of a write go in as few round trips as what they depend on allows
(`_TxnContext.read`: a WATCH and the reads it covers in one packet): the object,
its claims, what it references and its unique keys' holders together, with the
next revision; then what the table's rule reads. A port's update is three round
trips of reads and its EXEC (`modify` adds the read `change` starts from). A
write refused by a check leaves a gap in the revisions, as a write that lost a
race always did.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from dfflow.errors import BadObject, InUse, NotFound, ValidationError, VersionConflict, Conflict
from dfflow.models import Model, model_for
from dfflow.nb import rules
from dfflow.nb.connection import Outage, redis_client
from dfflow.nb.keys import Keys, make_event
from dfflow.nb.nburl import parse_nb_url

LOG = logging.getLogger(__name__)
MAX_RETRIES = 50
_LOST = "occurred while watching"  # redis-py's WatchError for a connection lost during a transaction
# Advances a counter that only grows, never below a floor (ARGV[1]); returns the new value.
_ADVANCE = """
local v = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if v < floor then redis.call('SET', KEYS[1], floor); v = floor end
return v
"""
UNREPLICATED_HOLD = 5.0  # s of writes not waiting for replicas after a WAIT that timed out
# The members of a set (KEYS[1]) that begin with ARGV[1]: a network's subnets among its referrers, which
# are mostly its ports (hundreds or thousands), filtered where they are rather than sent and parsed.
_MEMBERS_WITH_PREFIX = """
local out = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(member, 1, #ARGV[1]) == ARGV[1] then out[#out + 1] = member end
end
return out
"""


def decode(table: str, raw: bytes | str | None, obj_id: str = "?", checked: bool = False) -> Model | None:
    """The stored object, or BadObject naming it. `checked` also validates its fields (reads for
    others do; a write reads the old object leniently, so that a malformed one can be replaced)."""
    if raw is None:
        return None
    try:
        obj = model_for(table).from_dict(json.loads(raw))
        if checked:
            obj.check()
        return obj
    except (ValueError, TypeError, AttributeError, ValidationError) as exc:
        raise BadObject(table, obj_id, str(exc) or type(exc).__name__) from None


class _TxnContext:
    """What a write reads inside its transaction: every read is WATCHed (but a set of referrers read
    with `watch=False`), and reads known together go in one round trip."""

    def __init__(self, pipe: Any, keys: Keys):
        self.pipe, self.keys = pipe, keys
        self.cache: dict[tuple[str, str], Model | None] = {}
        # Objects written earlier in the same transaction (a batch), and what they reference.
        self.pending_refs: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.pending_claims: dict[str, str] = {}
        # (table, id, of_table) -> its referrers of that table, read unwatched ahead of the rule that asks
        # (rules.REFERRERS_READ_AHEAD), in the write's first round trip
        self.referrers_ahead: dict[tuple[str, str, str], list[Any]] = {}

    async def read(self, watch: list[str], commands: list[tuple[Any, ...]]) -> list[Any]:
        """WATCH `watch`, then `commands` (reads), in one round trip on the transaction's connection;
        their replies, raw as Redis sends them (redis-py would send each on its own once watching).

        As redis-py does for a watching pipeline: on a connection that drops before anything is
        watched the packet is sent again on a new one; once keys are watched the drop raises
        WatchError (`_LOST`), and the write is redone."""
        pipe = self.pipe
        conn = pipe.connection
        if conn is None:
            conn = pipe.connection = await pipe.connection_pool.get_connection()
        sent = ([("WATCH", *watch)] if watch else []) + commands
        packet = conn.pack_commands(sent)

        async def exchange() -> list[Any]:
            await conn.send_packed_command(packet)
            replies, error = [], None
            for _ in sent:  # every reply read, so that none is left for the connection's next user
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    error = error or exc
                    replies.append(None)
            if error is not None:
                raise error
            return replies

        async def dropped(error: Exception, failures: int = 0) -> None:
            await conn.disconnect()
            if pipe.watching:
                pipe.watching = False
                await pipe.reset()
                raise WatchError(f"A {type(error).__name__} {_LOST} one or more keys")

        try:
            replies = await conn.retry.call_with_retry(exchange, dropped, with_failure_count=True)
        except BaseException:
            await conn.disconnect()  # replies may be unread: the connection's next user must not get them
            raise
        if watch:
            pipe.watching = True
            return replies[1:]
        return replies

    async def get(self, table: str, obj_id: str) -> Model | None:
        return (await self.get_many([(table, obj_id)]))[0]

    async def get_many(self, pairs: list[tuple[str, str]]) -> list[Model | None]:
        """The objects (None for one that does not exist), those not read yet in one round trip."""
        missing = list(dict.fromkeys(pair for pair in pairs if pair not in self.cache))
        if missing:
            found_keys = [self.keys.obj(table, obj_id) for table, obj_id in missing]
            (raws,) = await self.read(found_keys, [("MGET", *found_keys)])
            self.remember(missing, raws)
        return [self.cache[pair] for pair in pairs]

    def remember(self, pairs: list[tuple[str, str]], raws: list[Any]) -> None:
        for (table, obj_id), raw in zip(pairs, raws):
            self.cache[(table, obj_id)] = decode(table, raw, obj_id)

    async def referrers(self, table: str, obj_id: str, watch: bool = True,
                        of_table: str | None = None) -> list[tuple[str, str]]:
        """`watch=False`: the caller WATCHes the referrers it uses instead of the whole set (which every
        new port of a network changes: watching it would make concurrent creates retry each other).
        `of_table`: only the referrers of that table, chosen by Redis (the set is read whole there)."""
        key = self.keys.refs(table, obj_id)
        found = self.referrers_ahead.pop((table, obj_id, of_table), None) if not watch and of_table else None
        if found is None:
            (found,) = await self.read([key] if watch else [], [referrers_read(key, of_table)])
        members = {tuple(_s(m).split(":", 1)) for m in found}
        pending = self.pending_refs.get((table, obj_id), set())
        if of_table is not None:
            pending = {pair for pair in pending if pair[0] == of_table}
        return sorted(members | pending)

    def add_pending(self, obj: Model) -> None:
        self.cache[(obj.table, obj.id)] = obj
        for _, table, ref_id in obj.references():
            self.pending_refs.setdefault((table, ref_id), set()).add((obj.table, obj.id))


def referrers_read(key: str, of_table: str | None) -> tuple[Any, ...]:
    """The command reading the referrer set `key` (of_table: only the members of that table, chosen by Redis)."""
    return ("SMEMBERS", key) if of_table is None else ("EVAL", _MEMBERS_WITH_PREFIX, 1, key, f"{of_table}:")


def _chassis_of(obj: Model | None) -> set[str]:
    """The chassis a port is tied to: its binding and both ends of its migration."""
    if obj is None or obj.table != "lport":
        return set()
    names = {obj.binding_chassis}
    if obj.migration is not None:
        names |= {obj.migration.chassis, obj.migration.source}
    return {n for n in names if n}


def _same(stored: Model, written: Model) -> bool:
    """Equal but for the version: the write found stored is this one."""
    return dataclasses.replace(stored, version=0) == dataclasses.replace(written, version=0)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NbApi:
    """Create, update (compare-and-set), delete, get and list NB objects."""

    def __init__(self, url: str, prefix: str = "dfflow", outage_wait: float = 0.0, pool_size: int | None = None):
        """`outage_wait`: for how long (s) a call rides out an NB that cannot be reached, retrying with
        back-off, before it raises redis-py's ConnectionError (the API waits as Neutron waits for its
        database; a controller, which resynchronises on its own, fails at once). `pool_size`: at most
        so many connections, callers beyond wait for one (a server with many concurrent requests)."""
        self.url = url
        self.keys = Keys(prefix)
        self.outage_wait = outage_wait
        nb_url = parse_nb_url(url)
        self.wait_replicas, self.wait_timeout_ms = nb_url.wait_replicas, nb_url.wait_timeout_ms
        self.redis = redis_client(url, resend=True, pool_size=pool_size)
        self.stats: Counter[str] = Counter()  # replicated / unreplicated writes
        self._unreplicated_until = 0.0
        # Test hook: awaited after the data is queued and before its event is; raising aborts.
        self.before_publish: Callable[[], Awaitable[None]] | None = None

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return await self.redis.ping()

    async def _reachable(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()`, again after a connection failure until `outage_wait` has passed."""
        outage = Outage(self.outage_wait)
        while True:
            try:
                return await call()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                await outage.wait_or_raise(exc)

    async def advance(self, counter: str, floor: int) -> int:
        """The next value of a counter that only grows (at least `floor`)."""
        return int(await self._reachable(lambda: self.redis.eval(_ADVANCE, 1, self.keys.counter(counter), floor)))

    # -- reads -------------------------------------------------------------------
    async def get(self, table: str, obj_id: str) -> Model | None:
        raw = await self._reachable(lambda: self.redis.get(self.keys.obj(table, obj_id)))
        return decode(table, raw, obj_id, checked=True)

    async def get_or_raise(self, table: str, obj_id: str) -> Model:
        obj = await self.get(table, obj_id)
        if obj is None:
            raise NotFound(table, obj_id)
        return obj

    async def list(self, table: str | None = None, topic: str | None = None,
                   bad: list[BadObject] | None = None) -> list[Model]:
        """Objects of `table` and/or `topic`. A malformed one raises BadObject, or with `bad` given is
        appended there and skipped."""
        if topic is not None:
            found = await self._reachable(lambda: self.redis.smembers(self.keys.topic(topic)))
            members = [_s(m).split(":", 1) for m in found]
            pairs = [(t, i) for t, i in members if table is None or t == table]
        elif table is not None:
            model_for(table)
            found = await self._reachable(lambda: self.redis.smembers(self.keys.ids(table)))
            pairs = [(table, _s(i)) for i in found]
        else:
            raise ValidationError("table", "list needs a table or a topic")
        return await self.get_many(pairs, bad)

    async def referrers(self, table: str, obj_id: str) -> list[tuple[str, str]]:
        """(table, id) of the objects that reference this one (a network's ports, subnets, ...)."""
        found = await self._reachable(lambda: self.redis.smembers(self.keys.refs(table, obj_id)))
        return sorted(tuple(_s(m).split(":", 1)) for m in found)

    async def get_raw_many(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The stored JSON objects, parsed but not validated (a fast read of a few fields of many
        objects, e.g. the addresses held on a network); an unparsable one is logged and left out."""
        found = []
        for (table, obj_id), raw in await self._raw_pairs(pairs):
            try:
                value = json.loads(raw) if raw is not None else None
            except ValueError as exc:
                LOG.error("skipped: %s", BadObject(table, obj_id, str(exc)))
                continue
            if isinstance(value, dict):
                found.append(value)
        return found

    async def _raw_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[tuple[str, str], Any]]:
        if not pairs:
            return []
        raws = await self._reachable(lambda: self.redis.mget([self.keys.obj(t, i) for t, i in pairs]))
        return list(zip(pairs, raws))

    async def chassis_seen(self, chassis: str, when: float) -> None:
        """The chassis' controller is alive at `when` (a heartbeat: written beside the NB objects,
        published to no one)."""
        await self.redis.hset(self.keys.chassis_seen, chassis, repr(when))

    async def chassis_last_seen(self) -> dict[str, float]:
        """Each chassis' last heartbeat."""
        return {_s(k): float(v) for k, v in (await self.redis.hgetall(self.keys.chassis_seen)).items()}

    async def ports_of_chassis(self, chassis: str) -> list[Model]:
        """Ports bound to `chassis`, or migrating from or to it (what its controller must follow)."""
        ids = await self.redis.smembers(self.keys.chassis_ports(chassis))
        bad: list[BadObject] = []
        ports = await self.get_many([("lport", _s(i)) for i in ids], bad)
        for exc in bad:
            LOG.error("skipped: %s", exc)
        return ports

    async def get_many(self, pairs: list[tuple[str, str]], bad: list[BadObject] | None = None) -> list[Model]:
        found = []
        for (table, obj_id), raw in await self._raw_pairs(pairs):
            try:
                obj = decode(table, raw, obj_id, checked=True)
            except BadObject as exc:
                if bad is None:
                    raise
                bad.append(exc)
                continue
            if obj is not None:
                found.append(obj)
        return sorted(found, key=lambda o: (o.table, o.id))

    # -- writes ------------------------------------------------------------------
    async def create(self, obj: Model, requires: tuple[tuple[str, str], ...] = ()) -> Model:
        """`requires`: (table, id) of objects that must exist when the write commits (NotFound if one
        does not; one deleted meanwhile makes the write re-check), without referring to them."""
        return await self._write("create", obj, requires)

    async def create_all(self, objs: list[Model]) -> list[Model]:
        """Create several objects in one transaction, in order (a later one may reference an earlier
        one): all of them, or none."""
        copies = []
        for obj in objs:
            copy = model_for(obj.table).from_dict(obj.to_dict())
            copy.check()
            copies.append(copy)
        expected = [copy.version for copy in copies]
        return await self._transact(lambda pipe, lost: self._write_all_in(pipe, "create", copies, expected, lost))

    async def update(self, obj: Model, requires: tuple[tuple[str, str], ...] = ()) -> Model:
        """Write `obj` if the stored version still equals `obj.version` (`requires`: as for create)."""
        return await self._write("update", obj, requires)

    async def delete(self, table: str, obj_id: str, version: int | None = None) -> None:
        model_for(table)
        await self._transact(lambda pipe, lost: self._delete_in(pipe, table, obj_id, version, lost))

    async def modify(self, table: str, obj_id: str, change: Callable[[Model], Model | None]) -> Model | None:
        """Read-modify-write with compare-and-set, retried on version conflicts.

        `change` gets the current object and returns the new one (or None to leave it).
        """
        for _ in range(MAX_RETRIES):
            current = await self.get_or_raise(table, obj_id)
            wanted = change(current)
            if wanted is None:
                return current
            try:
                return await self.update(wanted.replace(version=current.version))
            except VersionConflict:
                continue
        raise Conflict(f"{table} {obj_id!r} kept changing; gave up after {MAX_RETRIES} tries")

    async def _write(self, action: str, obj: Model, requires: tuple[tuple[str, str], ...] = ()) -> Model:
        obj = model_for(obj.table).from_dict(obj.to_dict())  # a private copy, re-parsed
        obj.check()
        expected = obj.version
        return await self._transact(lambda pipe, lost: self._write_in(pipe, action, obj, expected, lost,
                                                                      requires))

    async def _write_in(self, pipe: Any, action: str, obj: Model, expected: int, lost: bool,
                        requires: tuple[tuple[str, str], ...] = ()) -> Model:
        return (await self._write_all_in(pipe, action, [obj], [expected], lost, requires))[0]

    async def _write_all_in(self, pipe: Any, action: str, objs: list[Model], expected: list[int],
                            lost: bool, requires: tuple[tuple[str, str], ...] = ()) -> list[Model]:
        """`expected`: each object's version as the caller gave it (an attempt sets obj.version);
        `requires`: as for create, checked with each object."""
        ctx = _TxnContext(pipe, self.keys)
        staged = [await self._stage_write(pipe, ctx, action, obj, version, lost, requires)
                  for obj, version in zip(objs, expected)]
        landed = [s for s in staged if isinstance(s, Model)]
        if landed:
            if len(landed) == len(staged):
                return landed  # an earlier attempt's EXEC landed; only its reply was lost
            # The transaction is atomic: ours did not land, the objects found are another writer's.
            return await self._write_all_in(pipe, action, objs, expected, False, requires)
        pipe.multi()
        for queue in staged:
            queue()
        if self.before_publish is not None:
            await self.before_publish()
        await pipe.execute()
        return objs

    async def _transact(self, body: Callable[[Any, bool], Awaitable[Any]]) -> Any:
        """Run `body(pipe, lost)` until it commits. A connection lost in the middle (redis-py then
        raises WatchError) may have lost only EXEC's reply: `lost` tells the next attempt to take
        its own write, found already there, for done rather than for a conflict."""
        lost, races = False, 0
        outage = Outage(self.outage_wait)
        while races < MAX_RETRIES:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    result = await body(pipe, lost)
                except WatchError as exc:
                    if _LOST in str(exc):
                        lost = True
                    else:
                        races += 1
                    continue
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    failure = exc
                else:
                    await self._replicated()
                    return result
            await outage.wait_or_raise(failure)
        raise Conflict(f"NB write kept racing with others; gave up after {MAX_RETRIES} tries")

    async def _replicated(self) -> None:
        """Return once `wait_replicas` replicas hold the write just made, or after `wait_timeout_ms`.

        WAIT waits for the writes of its own connection, and the transaction's connection went back
        to the pool: so a marker is published on this one first. The replication stream is ordered,
        so a replica that has the marker has the transaction too. A WAIT that times out (no replica
        connected: during a failover, or with the replica down) is logged and counted, and the
        writes of the next UNREPLICATED_HOLD seconds do not wait either: they are the only ones a
        failover can lose."""
        if not self.wait_replicas:
            return
        if time.monotonic() < self._unreplicated_until:
            self.stats["unreplicated_writes"] += 1
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.publish(self.keys.replicated, b"")
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            _, acked = await pipe.execute()
        if int(acked) >= self.wait_replicas:
            self.stats["replicated_writes"] += 1
            return
        self.stats["unreplicated_writes"] += 1
        self.stats["replica_wait_timeouts"] += 1
        self._unreplicated_until = time.monotonic() + UNREPLICATED_HOLD
        LOG.warning("NB write held by %d of %d replicas after %d ms: writes go on without waiting for "
                    "%.0f s (a failover now may lose them)", int(acked), self.wait_replicas,
                    self.wait_timeout_ms, UNREPLICATED_HOLD)

    async def _stage_write(self, pipe: Any, ctx: _TxnContext, action: str, obj: Model, expected: int,
                           lost: bool, requires: tuple[tuple[str, str], ...] = ()) -> Callable[[], None] | Model:
        """Read and check what writing `obj` needs (WATCHing it all); return what queues the write,
        or, after a `lost` reply, the stored object if it is this write, already done."""
        keys = self.keys
        key = keys.obj(obj.table, obj.id)
        claims_key = keys.claims(obj.table, obj.id)
        # One round trip: the object, its claims, what it references or requires (those not read
        # yet in this transaction), the holders of its own unique keys, and its revision.
        needed = [(table, ref_id) for _, table, ref_id in obj.references()] + list(requires)
        unread = [pair for pair in dict.fromkeys(needed) if pair not in ctx.cache and pair != (obj.table, obj.id)]
        unread_keys = [keys.obj(table, ref_id) for table, ref_id in unread]
        own_claims = obj.unique_keys()
        own_holder_keys = [keys.uniq(claim) for _, claim in own_claims]
        # and, unwatched, the referrers its table's rule will read unwatched (rules.REFERRERS_READ_AHEAD)
        ahead = rules.REFERRERS_READ_AHEAD[obj.table](obj) if obj.table in rules.REFERRERS_READ_AHEAD else []
        commands: list[tuple[Any, ...]] = [("GET", key), ("SMEMBERS", claims_key), ("INCR", keys.rev)]
        commands += [("MGET", *unread_keys)] if unread_keys else []
        commands += [("MGET", *own_holder_keys)] if own_holder_keys else []
        commands += [referrers_read(keys.refs(table, ref_id), of_table) for table, ref_id, of_table in ahead]
        replies = await ctx.read([key, claims_key, *unread_keys, *own_holder_keys], commands)
        raw, stored_claims, version = replies[:3]
        if unread_keys:
            ctx.remember(unread, replies[3])
        if ahead:
            ctx.referrers_ahead.update(zip(ahead, replies[-len(ahead):]))
            replies = replies[:-len(ahead)]
        holders = dict(zip((claim for _, claim in own_claims), replies[-1] if own_holder_keys else []))
        old = decode(obj.table, raw, obj.id)
        if lost and old is not None and old.version != expected and _same(old, obj):
            return old
        if (obj.table, obj.id) in ctx.cache and ctx.cache[(obj.table, obj.id)] is not None:
            old = ctx.cache[(obj.table, obj.id)]
        if action == "create" and old is not None:
            raise Conflict(f"{obj.table} {obj.id!r} already exists", field="id")
        if action == "update":
            if old is None:
                raise NotFound(obj.table, obj.id)
            if old.version != expected:
                raise VersionConflict(obj.table, obj.id, expected, old.version)
            for name in ("topic",) + rules.IMMUTABLE.get(obj.table, ()):
                if getattr(old, name) != getattr(obj, name):
                    raise ValidationError(name, "cannot be changed once set", obj.table)
        ctx.add_pending(obj)
        for name, table, ref_id in obj.references():
            if await ctx.get(table, ref_id) is None:
                raise NotFound(table, ref_id, field=name)
        for table, ref_id in requires:
            if await ctx.get(table, ref_id) is None:
                raise NotFound(table, ref_id)
        claims = list(own_claims)
        rule = rules.WRITE_RULES.get(obj.table)
        if rule is not None:
            claims += await rule(obj, ctx)
        rule_claims = list(dict.fromkeys(claim for _, claim in claims if claim not in holders))
        if rule_claims:
            rule_holder_keys = [keys.uniq(claim) for claim in rule_claims]
            (raws,) = await ctx.read(rule_holder_keys, [("MGET", *rule_holder_keys)])
            holders.update(zip(rule_claims, raws))
        old_claims = {_s(m) for m in stored_claims}
        me = f"{obj.table}:{obj.id}"
        for name, claim in claims:
            stored = holders[claim]
            holder = ctx.pending_claims.get(claim, _s(stored) if stored is not None else None)
            if holder is not None and holder != me:
                raise Conflict(f"{claim.split(':')[-1]} is already used by {holder}", field=name)
        new_claims = {k for _, k in claims}
        ctx.pending_claims.update((claim, me) for claim in new_claims)

        obj.version = int(version)
        body = obj.to_dict()
        return lambda: self._queue_write(pipe, action, old, obj, body, old_claims, new_claims)

    def _queue_write(self, pipe: Any, action: str, old: Model | None, obj: Model, body: dict[str, Any],
                     old_claims: set[str], new_claims: set[str]) -> None:
        keys, key, me = self.keys, self.keys.obj(obj.table, obj.id), f"{obj.table}:{obj.id}"
        claims_key = keys.claims(obj.table, obj.id)
        pipe.set(key, json.dumps(body, separators=(",", ":")))
        pipe.sadd(keys.ids(obj.table), obj.id)
        pipe.sadd(keys.topic(obj.topic), me)
        old_refs = {(t, i) for _, t, i in old.references()} if old is not None else set()
        new_refs = {(t, i) for _, t, i in obj.references()}
        for t, i in old_refs - new_refs:
            pipe.srem(keys.refs(t, i), me)
        for t, i in new_refs - old_refs:
            pipe.sadd(keys.refs(t, i), me)
        old_chassis, new_chassis = _chassis_of(old), _chassis_of(obj)
        for name in old_chassis - new_chassis:
            pipe.srem(keys.chassis_ports(name), obj.id)
        for name in new_chassis - old_chassis:
            pipe.sadd(keys.chassis_ports(name), obj.id)
        for claim in old_claims - new_claims:
            pipe.delete(keys.uniq(claim))
        for claim in new_claims - old_claims:
            pipe.set(keys.uniq(claim), me)
        pipe.delete(claims_key)
        if new_claims:
            pipe.sadd(claims_key, *sorted(new_claims))
        event = make_event(action, obj.table, obj.id, obj.topic, obj.version, body)
        pipe.publish(keys.channel(obj.topic), json.dumps(event, separators=(",", ":")))

    async def _delete_in(self, pipe: Any, table: str, obj_id: str, version: int | None, lost: bool) -> None:
        keys = self.keys
        key = keys.obj(table, obj_id)
        refs_key = keys.refs(table, obj_id)
        ctx = _TxnContext(pipe, keys)
        raw, referrers = await ctx.read([key, refs_key], [("GET", key), ("SMEMBERS", refs_key)])
        old = decode(table, raw, obj_id)
        if old is None:
            if lost:
                return  # gone: by an earlier attempt whose reply was lost, or by another writer
            raise NotFound(table, obj_id)
        if version is not None and old.version != version:
            raise VersionConflict(table, obj_id, version, old.version)
        # What goes with the object (a group's rules, and the rules naming it) goes; any other referrer keeps it.
        going, users = [], []
        refs = sorted(_s(m) for m in referrers)
        pairs = [(ref_table, ref_id) for ref_table, ref_id in (ref.split(":", 1) for ref in refs)]
        for ref, referrer in zip(refs, await ctx.get_many(pairs)):
            if referrer is not None and (table, obj_id) in referrer.deleted_with():
                going.append(referrer)
            else:
                users.append(ref)
        if users:
            raise InUse(table, obj_id, users)
        delete_rule = rules.DELETE_RULES.get(table)
        if delete_rule is not None:
            await delete_rule(old, ctx)
        gone = going + [old]
        claims_keys = [keys.claims(obj.table, obj.id) for obj in gone]
        replies = await ctx.read(claims_keys, [command for claims_key in claims_keys
                                               for command in (("SMEMBERS", claims_key), ("INCR", keys.rev))])
        doomed = [(obj, {_s(m) for m in claims}, int(version))
                  for obj, claims, version in zip(gone, replies[::2], replies[1::2])]
        pipe.multi()
        for obj, claims, new_version in doomed:
            self._queue_delete(pipe, obj, claims, new_version)
        if self.before_publish is not None:
            await self.before_publish()
        await pipe.execute()

    def _queue_delete(self, pipe: Any, old: Model, claims: set[str], new_version: int) -> None:
        keys, table, obj_id = self.keys, old.table, old.id
        me = f"{table}:{obj_id}"
        pipe.delete(keys.obj(table, obj_id))
        pipe.srem(keys.ids(table), obj_id)
        pipe.srem(keys.topic(old.topic), me)
        for _, t, i in old.references():
            pipe.srem(keys.refs(t, i), me)
        for claim in claims:
            pipe.delete(keys.uniq(claim))
        pipe.delete(keys.claims(table, obj_id))
        for name in _chassis_of(old):
            pipe.srem(keys.chassis_ports(name), obj_id)
        event = make_event("delete", table, obj_id, old.topic, new_version, None)
        pipe.publish(keys.channel(old.topic), json.dumps(event, separators=(",", ":")))
