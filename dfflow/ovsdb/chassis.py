"""This chassis' OVSDB: br-int and its tunnels configured through ovsdbapp, and the Interface monitor.

Configuration (br-int, its controller, the tunnel ports) is rare, and goes
through ovsdbapp commands in explicit transactions with `check_error=True`, in a
worker thread, on a connection opened for it and closed after: no IDL thread
parses every VIF change in the background, competing with the loop for the GIL
when the unplug arrives. Interface rows come from `dfflow.ovsdb.monitor`.

Tunnel ports are ours: named `dft-<hash of the peer>`, marked
`external_ids:dfflow-peer=<chassis>`.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from typing import Any, Callable, Iterator

from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from dfflow.ovsdb.monitor import DB, PEER_KEY, IfaceUpdate, InterfaceMonitor
from dfflow.retry import retried

TABLES = ("Open_vSwitch", "Bridge", "Port", "Controller")
# Of Interface, only what we read and write: its statistics and status change every few seconds on
# every interface.
INTERFACE_COLUMNS = ("name", "type", "options", "ofport", "external_ids")
CONFIGURE_ATTEMPTS = 6  # a configuration transaction re-reads what it changes: safe to repeat


def tunnel_port_name(peer: str) -> str:
    return "dft-" + hashlib.blake2b(peer.encode(), digest_size=4).hexdigest()


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
