"""The listener: accepts switch connections, one :class:`Datapath` each, and runs the callbacks."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import stat
from collections import Counter
from typing import Any, Sequence

from dfflow.openflow.datapath import Callback, Datapath
from dfflow.openflow.protocol import OFP13, PROTOCOLS, ConnectionLost

LOG = logging.getLogger("dfflow.openflow")


class OpenFlowServer:
    """Accepts switch connections on ``host:port`` (``port=0`` picks a free port, see
    :attr:`port` after :meth:`start`), on an already bound listening TCP socket
    ``sock`` (e.g. one created inside the chassis' network namespace), or on the unix
    socket ``path`` (OVS target ``unix:PATH``; works across network namespaces).

    Callbacks (functions or coroutine functions):
    ``on_connect(dp)`` after each successful handshake (again after every reconnect);
    ``on_disconnect(dp, exc: ConnectionLost)`` when a connected datapath goes away;
    ``on_packet_in(dp, msg)`` with os-ken ``OFPPacketIn`` (``msg.match['in_port']``, ``msg.data``);
    ``on_message(dp, msg)`` for every other unsolicited message (port status, flow
    removed, errors nobody waited for).

    ``versions``: OpenFlow versions we accept (the highest common one wins);
    ``miss_send_len``: sent with SET_CONFIG (default: whole packets, no buffering);
    ``echo_interval``: after this many idle seconds we send ECHO_REQUEST (0: never),
    and drop the connection if the reply takes more than ``echo_timeout``;
    ``handshake_timeout``: HELLO..FEATURES..SET_CONFIG must finish within it;
    ``request_timeout``: default timeout of requests (barrier, dumps, bundles).

    ``stats`` counts, over all connections: connections, handshakes, disconnects,
    handshake_failures, protocol_errors (bad framing/version), parse_errors
    (unparseable body), of_errors (OFPT_ERROR received), unsolicited_errors, errors
    (exceptions in callbacks or in our own handling -- never silent), packet_in,
    async_msgs, echo_requests (answered), echoes_sent, echo_timeouts,
    request_timeouts, bundles, bundles_failed, msgs_rx, msgs_tx, bytes_rx, bytes_tx.
    Each :class:`Datapath` has the same counters for itself in ``dp.stats``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6653, *,
                 on_connect: Callback | None = None,
                 on_disconnect: Callback | None = None,
                 on_packet_in: Callback | None = None,
                 on_message: Callback | None = None,
                 versions: Sequence[int] = (OFP13,),
                 miss_send_len: int = 0xFFFF,
                 echo_interval: float = 5.0,
                 echo_timeout: float = 5.0,
                 handshake_timeout: float = 10.0,
                 request_timeout: float = 30.0,
                 sock: socket.socket | None = None,
                 path: str | None = None) -> None:
        unknown = set(versions) - set(PROTOCOLS)
        if not versions or unknown:
            raise ValueError(f"unsupported OpenFlow versions: {sorted(unknown) or 'none given'}")
        self.host = host
        self.port = port
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_packet_in = on_packet_in
        self.on_message = on_message
        self.versions = tuple(sorted(set(versions)))
        self.miss_send_len = miss_send_len
        self.echo_interval = echo_interval
        self.echo_timeout = echo_timeout
        self.handshake_timeout = handshake_timeout
        self.request_timeout = request_timeout
        self.sock = sock
        self.path = path
        self.stats: Counter[str] = Counter()
        self.datapaths: dict[int, Datapath] = {}
        self._connections: set[Datapath] = set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._waiters: list[tuple[int | None, asyncio.Future]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(self.path).st_mode):
                    os.unlink(self.path)  # stale socket of a previous run
            self._server = await loop.create_unix_server(lambda: Datapath(self), path=self.path)
            LOG.info("OpenFlow server listening on unix:%s", self.path)
            return
        if self.sock is not None:
            self._server = await loop.create_server(lambda: Datapath(self), sock=self.sock)
            self.host, self.port = self.sock.getsockname()[:2]
        else:
            self._server = await loop.create_server(lambda: Datapath(self), self.host, self.port,
                                                    reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        LOG.info("OpenFlow server listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close every connection (on_disconnect fires for each)."""
        if self._server is not None:
            self._server.close()
        for dp in list(self._connections):
            dp.close("server stopped")
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
            if self.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for _dpid, fut in self._waiters:
            if not fut.done():
                fut.set_exception(ConnectionLost("server stopped"))
        self._waiters.clear()

    async def __aenter__(self) -> "OpenFlowServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def connections(self) -> frozenset[Datapath]:
        """Every open connection, including those still in the handshake."""
        return frozenset(self._connections)

    async def wait_for_datapath(self, dpid: int | None = None, timeout: float | None = None) -> Datapath:
        """Return the connected datapath ``dpid`` (any if None), waiting for it if needed."""
        for dp in self.datapaths.values():
            if dpid is None or dp.id == dpid:
                return dp
        fut = asyncio.get_running_loop().create_future()
        entry = (dpid, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _register(self, dp: Datapath) -> None:
        assert dp.id is not None
        old = self.datapaths.get(dp.id)
        if old is not None and old is not dp:
            LOG.info("datapath 0x%016x reconnected from %s; dropping the old connection", dp.id, dp.peer)
            old.abort("replaced by a new connection")
        self.datapaths[dp.id] = dp
        self._invoke("on_connect", self.on_connect, dp)
        for entry in list(self._waiters):
            dpid, fut = entry
            if (dpid is None or dpid == dp.id) and not fut.done():
                fut.set_result(dp)
                self._waiters.remove(entry)

    def _unregister(self, dp: Datapath, exc: ConnectionLost) -> None:
        self._connections.discard(dp)
        if dp._ready and dp.id is not None and self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
        if dp._ready:
            self._invoke("on_disconnect", self.on_disconnect, dp, exc)

    def _invoke(self, name: str, cb: Callback | None, dp: Datapath, *args: Any) -> None:
        """Call ``cb(dp, *args)``; exceptions (raised, or from the coroutine it returns) are
        logged with their traceback and counted in ``stats["errors"]`` (server and dp)."""
        if cb is None:
            return
        try:
            result = cb(dp, *args)
        except Exception:
            LOG.exception("%s callback %r for %s raised", name, cb, dp)
            dp._count("errors")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._callback_done(t, name, cb, dp))

    def _callback_done(self, task: asyncio.Task, name: str, cb: Callback, dp: Datapath) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            LOG.error("%s callback %r for %s raised", name, cb, dp, exc_info=exc)
            dp._count("errors")
