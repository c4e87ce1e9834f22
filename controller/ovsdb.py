"""This chassis' OVSDB, through ovsdbapp: bridge set-up, tunnel ports, and VIF events.

ovsdbapp's IDL runs in its own thread. Row events are frozen copies, handed to
the asyncio loop in exactly one place (`_Idl.notify`, via
`call_soon_threadsafe`, straight from the IDL's thread); commands run in explicit transactions with
`check_error=True`, in a worker thread so the loop never blocks.

A VIF is an Interface whose external_ids carry os-vif's `iface-id` and that has
an ofport: that is the port coming online here. Its removal (or an ofport of
-1, a failed interface) is the port going offline. Tunnel ports are ours: named
`dft-<hash of the peer>`, marked `external_ids:dfflow-peer=<chassis>`.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ovs.db.idl import ROW_DELETE
from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from controller.view import Vif

LOG = logging.getLogger(__name__)
PEER_KEY = "dfflow-peer"
TABLES = ("Open_vSwitch", "Bridge", "Port", "Controller")
# Of Interface, only what we read and write: its statistics and status change every few seconds on
# every interface, and each change would be parsed (in pure Python) by the IDL thread that also
# brings the VIF events.
INTERFACE_COLUMNS = ("name", "type", "options", "ofport", "external_ids")


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


def _ofport(row: Any) -> int | None:
    value = getattr(row, "ofport", None)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None or value <= 0:
        return None
    return int(value)


class _Idl(connection.OvsdbIdl):
    """The IDL, handing every Interface change straight from its thread to the asyncio loop.

    Rows are copied here, in the IDL's thread, while they are consistent (python-ovs updates them in
    place afterwards); no notification thread in between (ovsdbapp's RowEventHandler would add one
    more thread hop, and a GIL hand-over, to every event)."""

    def __init__(self, remote: str, helper: Any, loop: asyncio.AbstractEventLoop,
                 queue: asyncio.Queue, stats: Counter[str]):
        super().__init__(remote, helper)
        self.loop, self.queue, self.stats = loop, queue, stats

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if row._table.name != "Interface":
            return
        try:
            update = IfaceUpdate(name=row.name, ofport=_ofport(row),
                                 external_ids=dict(getattr(row, "external_ids", {}) or {}),
                                 deleted=event == ROW_DELETE, seen=time.time())
            self.loop.call_soon_threadsafe(self.queue.put_nowait, update)
        except Exception:
            self.stats["notify_errors"] += 1
            LOG.exception("OVSDB %s of an Interface row not handed over", event)


class Ovsdb:
    """The chassis' OVSDB: configure br-int and its tunnels, and stream Interface updates."""

    def __init__(self, remote: str, bridge: str, timeout: float = 10.0):
        self.remote, self.bridge, self.timeout = remote, bridge, timeout
        self.updates: asyncio.Queue[IfaceUpdate] = asyncio.Queue()
        self.stats: Counter[str] = Counter()
        self.api: Any = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def connect() -> Any:
            helper = idlutils.get_schema_helper(self.remote, "Open_vSwitch")
            for table in TABLES:
                helper.register_table(table)
            helper.register_columns("Interface", list(INTERFACE_COLUMNS))
            idl = _Idl(self.remote, helper, loop, self.updates, self.stats)
            return impl_idl.OvsdbIdl(connection.Connection(idl, timeout=self.timeout))

        self.api = await asyncio.to_thread(connect)

    async def stop(self) -> None:
        if self.api is not None:
            await asyncio.to_thread(self.api.ovsdb_connection.stop)
            self.api = None

    async def _execute(self, *commands: Any) -> None:
        def run() -> None:
            with self.api.transaction(check_error=True) as txn:
                for command in commands:
                    txn.add(command)
        await asyncio.to_thread(run)

    async def setup_bridge(self, of_target: str) -> None:
        """br-int in secure fail mode, OpenFlow 1.3/1.4, our controller out of band, reconnect fast."""
        api, br = self.api, self.bridge
        await self._execute(
            api.add_br(br, may_exist=True, datapath_type="netdev"),
            api.db_set("Bridge", br, ("fail_mode", "secure"),
                       ("protocols", ["OpenFlow13", "OpenFlow14"]),
                       ("other_config", {"disable-in-band": "true"})),
            api.set_controller(br, [of_target]),
        )

        def tune_controller() -> None:
            with self.api.transaction(check_error=True) as txn:
                for row in self.api.db_find_rows("Controller", ("target", "=", of_target)).execute(
                        check_error=True):
                    txn.add(self.api.db_set("Controller", row.uuid, ("max_backoff", 1000),
                                            ("inactivity_probe", 5000),
                                            ("connection_mode", "out-of-band")))
        await asyncio.to_thread(tune_controller)

    async def ensure_tunnels(self, peers: dict[str, str], local_ip: str, tunnel_type: str = "geneve") -> None:
        """Exactly one tunnel port per peer chassis (name -> tunnel IP); others removed."""
        api, br = self.api, self.bridge
        existing = await asyncio.to_thread(
            lambda: {r.name: dict(r.external_ids) for r in
                     api.db_find_rows("Interface", ("external_ids", "!=", {})).execute(check_error=True)
                     if PEER_KEY in r.external_ids})
        commands = []
        wanted = {tunnel_port_name(peer): (peer, ip) for peer, ip in peers.items()}
        for name in existing:
            if name not in wanted:
                commands.append(api.del_port(name, bridge=br, if_exists=True))
        for name, (peer, ip) in wanted.items():
            options = {"remote_ip": ip, "local_ip": local_ip, "key": "flow"}
            if name in existing and existing[name].get("remote-ip") == ip:
                continue
            commands.append(api.add_port(br, name, may_exist=True))
            commands.append(api.db_set("Interface", name, ("type", tunnel_type), ("options", options),
                                       ("external_ids", {PEER_KEY: peer, "remote-ip": ip})))
        if commands:
            await self._execute(*commands)
            self.stats["tunnel_changes"] += 1


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
