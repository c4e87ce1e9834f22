"""The Interface rows of a chassis' OVSDB, followed on the asyncio loop over our own JSON-RPC.

A VIF's removal is the source's cue in a live migration, and python-ovs's IDL
thread delivered it ~1.2 ms later than the socket does (`dfflow.ovsdb.jsonrpc`).

A VIF is an Interface whose external_ids carry os-vif's `iface-id` and that has
an ofport: that is the port coming online here. Its removal (or an ofport of
-1, a failed interface) is the port going offline. Tunnel ports are the
controller's own, marked `external_ids:dfflow-peer=<chassis>`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dfflow.ovsdb.jsonrpc import JsonRpc, OvsdbProtocolError, datum
from dfflow.retry import Backoff

LOG = logging.getLogger(__name__)
PEER_KEY = "dfflow-peer"
DB = "Open_vSwitch"
MONITORED_COLUMNS = ("name", "ofport", "external_ids")
RECONNECT_DELAY = 0.2
MAX_RECONNECT_DELAY = 3.0  # an ovsdb-server away for long is tried every 3 s, not 5 times a second


@dataclass(frozen=True)
class IfaceUpdate:
    """One Interface row as we care about it (a frozen, loop-side copy)."""

    name: str
    ofport: int | None
    external_ids: dict[str, str]
    deleted: bool
    seen: float = 0.0  # time.time() when the IDL thread got the row (for the apply timings)

    @property
    def iface_id(self) -> str | None:
        return self.external_ids.get("iface-id")

    @property
    def peer(self) -> str | None:
        return self.external_ids.get(PEER_KEY)


def _ofport(value: Any) -> int | None:
    if not isinstance(value, int) or value <= 0:
        return None
    return value


def iface_update(row: dict[str, Any], deleted: bool, seen: float) -> IfaceUpdate:
    """An Interface row as OVSDB's monitor sends it (monitored columns, wire datums)."""
    name = row.get("name")
    if not isinstance(name, str):
        raise OvsdbProtocolError(f"OVSDB Interface row: name {name!r} is not a string")
    external_ids = datum(row.get("external_ids", ["map", []]))
    if not isinstance(external_ids, dict):
        raise OvsdbProtocolError(f"OVSDB Interface {name}: external_ids is not a map")
    return IfaceUpdate(name=name, ofport=_ofport(datum(row.get("ofport"))),
                       external_ids={str(k): str(v) for k, v in external_ids.items()},
                       deleted=deleted, seen=seen)


class InterfaceMonitor:
    """Interface rows from ovsdb-server straight into the loop, as `IfaceUpdate`s on `queue`.

    After a reconnect (ovsdb-server restarted) the new snapshot is compared with the rows known
    before: rows gone meanwhile are put as deleted, changed ones as updates, unchanged ones not at
    all. A broken connection or a row we cannot read is logged with its cause, counted in
    `stats` and followed by a reconnect."""

    def __init__(self, remote: str, queue: asyncio.Queue[IfaceUpdate], stats: Counter[str],
                 reconnect_delay: float = RECONNECT_DELAY):
        self.remote, self.queue, self.stats = remote, queue, stats
        self.reconnect_delay = reconnect_delay
        self.rows: dict[str, IfaceUpdate] = {}  # by row uuid
        self._rpc: JsonRpc | None = None
        self._held: list[tuple[Any, float]] | None = None  # updates that came before the snapshot
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Connected, with the first snapshot queued; then followed (and reconnected) in the background."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._connect()
                break
            except (OSError, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"OVSDB at {self.remote}: {exc}") from exc
                await asyncio.sleep(0.05)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None

    async def _connect(self) -> None:
        self._held = []
        rpc = await JsonRpc.open(self.remote, self._on_notify)
        try:
            snapshot = await rpc.call("monitor", [DB, None, {"Interface": {"columns": list(MONITORED_COLUMNS)}}])
            self._resync(snapshot or {}, time.time())
        except BaseException:
            await rpc.close()
            raise
        self._rpc = rpc
        held, self._held = self._held, None
        for params, received in held:
            self._on_update(params, received)

    async def _follow(self) -> None:
        while True:
            assert self._rpc is not None
            await self._rpc.closed.wait()
            error = self._rpc.error
            self.stats["monitor_disconnects"] += 1
            LOG.error("OVSDB monitor of %s lost: %s; reconnecting", self.remote, error,
                      exc_info=error if isinstance(error, OvsdbProtocolError) else None)
            await self._rpc.close()
            backoff = Backoff(self.reconnect_delay, MAX_RECONNECT_DELAY)
            while True:
                await asyncio.sleep(backoff.next())
                try:
                    await self._connect()
                    self.stats["monitor_reconnects"] += 1
                    break
                except Exception as exc:
                    self.stats["monitor_connect_errors"] += 1
                    LOG.warning("OVSDB monitor of %s: reconnect failed: %s", self.remote, exc)

    def _on_notify(self, method: str, params: Any, received: float) -> None:
        if method != "update":
            return
        if self._held is not None:
            self._held.append((params, received))
        else:
            self._on_update(params, received)

    def _on_update(self, params: Any, received: float) -> None:
        if not isinstance(params, list) or len(params) != 2 or not isinstance(params[1], dict):
            raise OvsdbProtocolError(f"OVSDB update: params {str(params)[:80]!r} are not [id, updates]")
        for uuid, change in (params[1].get("Interface") or {}).items():
            if "new" in change:
                self._put(uuid, iface_update(change["new"], False, received))
            elif "old" in change:
                self._put(uuid, iface_update(change["old"], True, received))

    def _resync(self, snapshot: dict[str, Any], received: float) -> None:
        rows = {uuid: iface_update(change["new"], False, received)
                for uuid, change in (snapshot.get("Interface") or {}).items()}
        for uuid in [u for u in self.rows if u not in rows]:
            gone = self.rows[uuid]
            self._put(uuid, IfaceUpdate(gone.name, gone.ofport, gone.external_ids, True, received))
        for uuid, update in rows.items():
            if _same_row(self.rows.get(uuid), update):
                continue
            self._put(uuid, update)

    def _put(self, uuid: str, update: IfaceUpdate) -> None:
        if update.deleted:
            self.rows.pop(uuid, None)
        else:
            self.rows[uuid] = update
        self.queue.put_nowait(update)


def _same_row(a: IfaceUpdate | None, b: IfaceUpdate) -> bool:
    return a is not None and (a.name, a.ofport, a.external_ids) == (b.name, b.ofport, b.external_ids)
