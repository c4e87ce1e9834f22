"""In each neutron-server process: the start-up sync, repairs of NB writes that failed, an optional periodic sync.

A post-commit NB write that fails after Neutron committed (an update or a delete: ML2 only logs it) is
counted (in this process, and per kind in `<prefix>:neutron:write-failures`, which `dfflow neutron-sync`
shows) and marks the object dirty, in this process and in the NB's Redis (`<prefix>:neutron:dirty`, so
any server's maintenance sees it); every `maintenance_interval` seconds a process finding dirty objects
runs the sync in repair mode, and forgets the marks once it fixed everything. The sync also runs once when
the API process has loaded its plugins (`sync_on_startup`) and every `sync_interval` seconds if set.

Several API workers (and servers) share the NB: a sync runs under a Redis lock (`<prefix>:neutron:sync-lock`,
SET NX with an expiry, released by its holder only), and a process that finds it held skips that round.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterator

from dfflow.nb.keys import Keys
from dfflow.neutron import sync
from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)

RELEASE_IF_HOLDER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def dirty_key(prefix: str) -> str:
    return Keys(prefix).neutron("dirty")


def lock_key(prefix: str) -> str:
    return Keys(prefix).neutron("sync-lock")


def failures_key(prefix: str) -> str:
    return Keys(prefix).neutron("write-failures")


def recorded_failures(nb: NbClient) -> dict[str, int]:
    """The NB writes that failed after Neutron committed, per kind ("update_port" ...), in every server."""
    raw = nb.run(lambda api: api.redis.hgetall(failures_key(nb.prefix)))
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


class DirtyMarks:
    """The NB objects whose post-commit write failed, as "table/id"; kept in this process and in Redis
    (which, when the NB itself was the failure, may be unreachable too: the local marks still count)."""

    def __init__(self, nb: NbClient):
        self.nb = nb
        self._lock = threading.Lock()
        self._local: set[str] = set()
        self.stats: Counter[str] = Counter()

    def mark(self, table: str, obj_id: str, what: str) -> None:
        mark = f"{table}/{obj_id}"
        self.stats[f"failed_{what}"] += 1
        with self._lock:
            self._local.add(mark)
        async def record(api: Any) -> None:
            async with api.redis.pipeline(transaction=True) as pipe:
                pipe.sadd(dirty_key(self.nb.prefix), mark)
                pipe.hincrby(failures_key(self.nb.prefix), what, 1)
                await pipe.execute()
        try:
            self.nb.run(record)
        except Exception:
            self.stats["mark_errors"] += 1
            LOG.exception("%s: could not record in Redis that it needs the sync; this process will repair it",
                          mark)

    def pending(self) -> set[str]:
        with self._lock:
            marks = set(self._local)
        marks |= {m.decode() if isinstance(m, bytes) else m
                  for m in self.nb.run(lambda api: api.redis.smembers(dirty_key(self.nb.prefix)))}
        return marks

    def clear(self, marks: set[str]) -> None:
        with self._lock:
            self._local -= marks
        if marks:
            self.nb.run(lambda api: api.redis.srem(dirty_key(self.nb.prefix), *marks))


_PROCESS_MARKS: dict[tuple[str, str], DirtyMarks] = {}
_PROCESS_MARKS_LOCK = threading.Lock()


def process_marks(nb: NbClient) -> DirtyMarks:
    """This process' marks for the NB at `nb.url`: the ML2 driver and the router plugin (two objects
    Neutron makes apart) mark into them, the maintenance task of this process repairs them."""
    with _PROCESS_MARKS_LOCK:
        return _PROCESS_MARKS.setdefault((nb.url, nb.prefix), DirtyMarks(nb))


@contextlib.contextmanager
def marked_on_failure(marks: DirtyMarks, table: str, obj_id: str, what: str) -> Iterator[None]:
    """A failure inside (Neutron has committed already) marks the object for the sync, then passes on."""
    try:
        yield
    except Exception:
        marks.mark(table, obj_id, what)
        raise


class Maintenance:
    """The sync, run under the Redis lock, from a thread of its own (`start`) or once (`sync_once`)."""

    def __init__(self, nb: NbClient, read_neutron: Callable[[], sync.NeutronState], dirty: DirtyMarks, *,
                 on_startup: bool = True, interval: float = 0.0, check_every: float = 5.0,
                 lock_seconds: float = 600.0):
        self.nb, self.read_neutron, self.dirty = nb, read_neutron, dirty
        self.on_startup, self.interval, self.check_every = on_startup, interval, check_every
        self.lock_seconds = lock_seconds
        self.stats: Counter[str] = Counter()
        self.last: sync.Drift | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="dfflow-neutron-maintenance", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sync_once(self, reason: str) -> sync.Drift | None:
        """Repair the NB under the lock; None if another process holds it (it is doing the same)."""
        token = uuid.uuid4().hex
        key = lock_key(self.nb.prefix)
        if not self.nb.run(lambda api: api.redis.set(key, token, nx=True, px=int(self.lock_seconds * 1000))):
            self.stats["skipped_locked"] += 1
            LOG.info("neutron-sync (%s): another process is syncing; skipped", reason)
            return None
        try:
            drift = sync.run(self.nb, self.read_neutron, "repair")
        finally:
            self.nb.run(lambda api: api.redis.eval(RELEASE_IF_HOLDER, 1, key, token))
        self.stats["syncs"] += 1
        self.stats["fixed"] += sum(t.fixed for t in drift.tables.values())
        self.stats["failed"] += drift.failed
        self.last = drift
        log = LOG.warning if drift.count or drift.failed else LOG.info
        log("neutron-sync (%s): %d differences, %d failed\n%s", reason, drift.count, drift.failed, drift.summary())
        return drift

    def _repair_dirty(self) -> None:
        marks = self.dirty.pending()
        if not marks:
            return
        drift = self.sync_once(f"{len(marks)} objects whose NB write failed: {', '.join(sorted(marks)[:5])}")
        if drift is not None and not drift.failed:
            self.dirty.clear(marks)

    def _loop(self) -> None:
        startup_due = self.on_startup  # retried each round until it ran (the NB may be down at start)
        next_full = time.monotonic() + self.interval if self.interval > 0 else None
        while True:
            if startup_due:
                startup_due = not self._guarded(lambda: self.sync_once("start-up"))
            elif next_full is not None and time.monotonic() >= next_full:
                next_full = time.monotonic() + self.interval
                self._guarded(lambda: self.sync_once("periodic"))
            else:
                self._guarded(self._repair_dirty)
            if self._stop.wait(self.check_every):
                return

    def _guarded(self, body: Callable[[], Any]) -> bool:
        try:
            body()
            return True
        except Exception:
            self.stats["errors"] += 1
            LOG.exception("neutron-sync maintenance failed; retrying in %.0f s", self.check_every)
            return False
