"""This chassis' OVSDB: VIF events from our own monitor; bridge and tunnels set up through ovsdbapp.

Interface rows come from `InterfaceMonitor`, one JSON-RPC connection of our own
read by the asyncio loop (`controller.ovsdb_jsonrpc`): a VIF's removal is the
source's cue in a live migration, and python-ovs's IDL thread delivered it ~1.2
ms later than the socket does. Configuration (br-int, its controller, the tunnel
ports) is rare, and goes through ovsdbapp commands in explicit transactions with
`check_error=True`, in a worker thread, on a connection opened for it and closed
after: no IDL thread parses every VIF change in the background, competing with
the loop for the GIL when the unplug arrives.

A VIF is an Interface whose external_ids carry os-vif's `iface-id` and that has
an ofport: that is the port coming online here. Its removal (or an ofport of
-1, a failed interface) is the port going offline. Tunnel ports are ours: named
`dft-<hash of the peer>`, marked `external_ids:dfflow-peer=<chassis>`.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from controller.ovsdb_jsonrpc import JsonRpc, OvsdbProtocolError, datum
from controller.retry import Backoff, retried
from controller.view import Vif

LOG = logging.getLogger(__name__)
PEER_KEY = "dfflow-peer"
DB = "Open_vSwitch"
TABLES = ("Open_vSwitch", "Bridge", "Port", "Controller")
# Of Interface, only what we read and write: its statistics and status change every few seconds on
# every interface.
INTERFACE_COLUMNS = ("name", "type", "options", "ofport", "external_ids")
MONITORED_COLUMNS = ("name", "ofport", "external_ids")
RECONNECT_DELAY = 0.2
MAX_RECONNECT_DELAY = 3.0  # an ovsdb-server away for long is tried every 3 s, not 5 times a second
CONFIGURE_ATTEMPTS = 6  # a configuration transaction re-reads what it changes: safe to repeat


def tunnel_port_name(peer: str) -> str:
    return "dft-" + hashlib.blake2b(peer.encode(), digest_size=4).hexdigest()


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


class Ovsdb:
    """The chassis' OVSDB: configure br-int and its tunnels, and stream Interface updates."""

    def __init__(self, remote: str, bridge: str, timeout: float = 10.0):
        self.remote, self.bridge, self.timeout = remote, bridge, timeout
        self.updates: asyncio.Queue[IfaceUpdate] = asyncio.Queue()
        self.stats: Counter[str] = Counter()
        self.monitor = InterfaceMonitor(remote, self.updates, self.stats)
        # One owner of the rows this controller configures (br-int, its controller, the tunnel
        # ports): two transactions adding the same port at once violate the Port name index.
        self._configuring = asyncio.Lock()

    async def start(self) -> None:
        await self.monitor.start(self.timeout)

    async def stop(self) -> None:
        await self.monitor.stop()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """An ovsdbapp API on a connection of its own, closed after (call in a worker thread)."""
        helper = idlutils.get_schema_helper(self.remote, DB)
        for table in TABLES:
            helper.register_table(table)
        helper.register_columns("Interface", list(INTERFACE_COLUMNS))
        idl = connection.OvsdbIdl(self.remote, helper)
        # ovsdbapp keeps its connection in a class attribute: a class per session, so that each
        # session has its own.
        backend = type("ChassisOvsdb", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        api = backend(connection.Connection(idl, timeout=self.timeout))
        try:
            yield api
        finally:
            api.ovsdb_connection.stop()

    async def _configure(self, work: Callable[[Any], None]) -> None:
        """Run `work` in a session, one configuration at a time; a failed transaction (a lost
        connection, a row changed under us) is tried again with back-off."""
        def run() -> None:
            with self._session() as api:
                work(api)
        async with self._configuring:
            await retried(lambda: asyncio.to_thread(run), "ovsdb_configure", self.stats,
                          attempts=CONFIGURE_ATTEMPTS, retry_on=(Exception,))

    async def setup_bridge(self, of_target: str, datapath_type: str = "system") -> None:
        """br-int with `datapath_type` (system: the kernel's; netdev: userspace), in secure fail mode,
        OpenFlow 1.3/1.4, our controller out of band, reconnect fast."""
        br = self.bridge

        def work(api: Any) -> None:
            with api.transaction(check_error=True) as txn:
                txn.add(api.add_br(br, may_exist=True, datapath_type=datapath_type))
                txn.add(api.db_set("Bridge", br, ("fail_mode", "secure"),
                                   ("protocols", ["OpenFlow13", "OpenFlow14"]),
                                   ("other_config", {"disable-in-band": "true"})))
                txn.add(api.set_controller(br, [of_target]))
            with api.transaction(check_error=True) as txn:
                for row in api.db_find_rows("Controller", ("target", "=", of_target)).execute(
                        check_error=True):
                    txn.add(api.db_set("Controller", row.uuid, ("max_backoff", 1000),
                                       ("inactivity_probe", 5000), ("connection_mode", "out-of-band")))
        await self._configure(work)

    async def ensure_tunnels(self, peers: dict[str, str], local_ip: str, tunnel_type: str = "geneve") -> None:
        """Exactly one tunnel port per peer chassis (name -> tunnel IP); others removed."""
        br = self.bridge
        wanted = {tunnel_port_name(peer): (peer, ip) for peer, ip in peers.items()}

        def work(api: Any) -> None:
            existing = {r.name: dict(r.external_ids) for r in
                        api.db_find_rows("Interface", ("external_ids", "!=", {})).execute(check_error=True)
                        if PEER_KEY in r.external_ids}
            commands = [api.del_port(name, bridge=br, if_exists=True) for name in existing if name not in wanted]
            for name, (peer, ip) in wanted.items():
                if name in existing and existing[name].get("remote-ip") == ip:
                    continue
                options = {"remote_ip": ip, "local_ip": local_ip, "key": "flow"}
                commands.append(api.add_port(br, name, may_exist=True))
                commands.append(api.db_set("Interface", name, ("type", tunnel_type), ("options", options),
                                           ("external_ids", {PEER_KEY: peer, "remote-ip": ip})))
            if commands:
                with api.transaction(check_error=True) as txn:
                    for command in commands:
                        txn.add(command)
                self.stats["tunnel_changes"] += 1
        await self._configure(work)


class InterfaceTracker:
    """Folds Interface updates into what the controller acts on: VIFs and tunnel ofports."""

    def __init__(self) -> None:
        self.by_name: dict[str, IfaceUpdate] = {}

    def apply(self, update: IfaceUpdate) -> None:
        if update.deleted:
            self.by_name.pop(update.name, None)
        else:
            self.by_name[update.name] = update

    def vifs(self) -> dict[str, Vif]:
        found: dict[str, Vif] = {}
        for row in sorted(self.by_name.values(), key=lambda r: r.name):
            if row.iface_id and row.ofport is not None and row.peer is None:
                found[row.iface_id] = Vif(row.iface_id, row.name, row.ofport,
                                          row.external_ids.get("attached-mac"))
        return found

    def tunnels(self) -> dict[str, int]:
        return {row.peer: row.ofport for row in self.by_name.values()
                if row.peer is not None and row.ofport is not None}
