"""One OpenFlow connection (one switch): handshake, framing, keepalive, requests by xid, bundles.

One class of ~750 lines: the connection's state (pending xids, error sinks, the
transport) is shared by every method, and splitting it would scatter the
invariants that keep replies and errors attributed to the right call.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence, Union, cast

from os_ken.ofproto import ofproto_common, ofproto_parser, ofproto_v1_3
from os_ken.ofproto.ofproto_parser import MsgBase

from dfflow.openflow.framing import XidAllocator, XidBlock, hello_frame, hello_versions, iter_frames, wrap_bundle_adds
from dfflow.openflow.protocol import (OFP13, OFP_HEADER, OFP_HEADER_LEN, OFPET_HELLO_FAILED, OFPHFC_INCOMPATIBLE,
                                      OFPT_BARRIER_REPLY, OFPT_BUNDLE_CONTROL, OFPT_ECHO_REPLY, OFPT_ECHO_REQUEST,
                                      OFPT_ERROR, OFPT_EXPERIMENTER, OFPT_HELLO, PROTOCOLS,
                                      BundleError, ConnectionLost, FlowModError, OpenFlowError, ProtocolError,
                                      RequestTimeout, msg_type_name)

if TYPE_CHECKING:
    from dfflow.openflow.server import OpenFlowServer

LOG = logging.getLogger("dfflow.openflow")

Callback = Callable[..., Union[None, Awaitable[None]]]
Messages = Union[Sequence[MsgBase], bytes, bytearray, memoryview]


class BundleFramer(Protocol):
    """Messages that pack and frame themselves as one OpenFlow 1.3 bundle (controller.compiler's
    PlanBundle: the packer writes the open, the adds and the commit in one call)."""

    def frame_bundle(self, dp: Any, bundle_id: int, flags: int, commit: bool) -> tuple[bytearray, Sequence[int], int]:
        """(framed open + adds [+ commit], the adds' xids, the open's xid; the commit's is the next)."""


@dataclass
class _Pending:
    future: asyncio.Future
    request_type: int
    multipart: bool = False
    parts: list = field(default_factory=list)
    bare: bool = False  # a barrier or a bundle control: its waiter needs the reply's header only


@dataclass(frozen=True)
class BundleCtrlReply:
    """A bundle control reply, read from its header (the sender needs no more of it)."""
    bundle_id: int
    type: int
    flags: int


_ONF_BUNDLE_CTRL = struct.Struct("!IIIHH")  # experimenter, exp_type, bundle_id, type, flags
_OF14_BUNDLE_CTRL = struct.Struct("!IHH")  # bundle_id, type, flags


def bare_reply(version: int, mtype: int, frame: bytes) -> tuple[bool, Any]:
    """(True, result) for a barrier reply (result None) or a bundle control reply (a BundleCtrlReply),
    read from the frame without os-ken; (False, None) for anything else."""
    if mtype == OFPT_BARRIER_REPLY:
        return True, None
    if version == OFP13 and mtype == OFPT_EXPERIMENTER and len(frame) >= OFP_HEADER_LEN + _ONF_BUNDLE_CTRL.size:
        experimenter, exp_type, bundle_id, type_, flags = _ONF_BUNDLE_CTRL.unpack_from(frame, OFP_HEADER_LEN)
        if experimenter == ofproto_common.ONF_EXPERIMENTER_ID and exp_type == ofproto_v1_3.ONF_ET_BUNDLE_CONTROL:
            return True, BundleCtrlReply(bundle_id, type_, flags)
    elif mtype == OFPT_BUNDLE_CONTROL and version != OFP13 and len(frame) >= OFP_HEADER_LEN + _OF14_BUNDLE_CTRL.size:
        return True, BundleCtrlReply(*_OF14_BUNDLE_CTRL.unpack_from(frame, OFP_HEADER_LEN))
    return False, None


@dataclass
class _ErrorSink:
    """Collects errors for a set of xids (fire-and-forget messages followed by a barrier)."""
    errors: list[OpenFlowError] = field(default_factory=list)


class _ErrorSinks:
    """Which sink collects the errors of which xid: one entry per xid, or one per block of consecutive
    xids (a plan's bundle numbers its flow mods from one block: one entry however many it has, where an
    entry per xid cost ~0.15 us a flow mod of every bundle of every chassis)."""

    def __init__(self) -> None:
        self._by_xid: dict[int, _ErrorSink] = {}
        self._blocks: list[tuple[range | XidBlock, _ErrorSink]] = []

    def add(self, xids: Sequence[int], sink: _ErrorSink) -> None:
        if type(xids) is XidBlock or (isinstance(xids, range) and xids.step == 1):
            self._blocks.append((xids, sink))
        else:
            for x in xids:
                self._by_xid[x] = sink

    def remove(self, xids: Sequence[int], sink: _ErrorSink) -> None:
        if type(xids) is XidBlock or (isinstance(xids, range) and xids.step == 1):
            for i, (block, block_sink) in enumerate(self._blocks):
                if block_sink is sink and block == xids:
                    del self._blocks[i]
                    return
        else:
            for x in xids:
                if self._by_xid.get(x) is sink:
                    del self._by_xid[x]

    def get(self, xid: int) -> _ErrorSink | None:
        sink = self._by_xid.get(xid)
        if sink is None:
            for block, block_sink in reversed(self._blocks):  # the latest first, as a later entry per xid wins
                if xid in block:
                    return block_sink
        return sink


class Datapath(asyncio.Protocol):
    """One OpenFlow connection (one switch).  Created by :class:`OpenFlowServer`.

    Attributes: ``id`` (datapath id, after the handshake), ``version``, ``ofproto``,
    ``ofproto_parser`` (os-ken modules of the negotiated version), ``features``
    (OFPSwitchFeatures), ``peer`` (address), ``xids`` (:class:`XidAllocator`),
    ``stats`` (Counter, per connection; the server's ``stats`` aggregates).
    """

    def __init__(self, server: "OpenFlowServer") -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.id: int | None = None
        self.version: int | None = None
        # os-ken's ofproto_v1_x / ofproto_v1_x_parser modules (dynamic: typed Any)
        self.ofproto: Any = None
        self.ofproto_parser: Any = None
        self.features: Any = None
        self.xids = XidAllocator()
        self.stats: Counter[str] = Counter()
        self.close_reason: str | None = None
        self._buf = bytearray()
        self._pending: dict[int, _Pending] = {}
        self._sinks = _ErrorSinks()
        self._hello: asyncio.Future = self.loop.create_future()
        self._ready = False  # handshake completed, on_connect fired
        self._closed = False
        self._last_rx = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        self._writable = asyncio.Event()
        self._writable.set()
        self._bundle_ids = 0

    def __repr__(self) -> str:
        dpid = f"0x{self.id:016x}" if self.id is not None else "?"
        return f"<Datapath {dpid} peer={self.peer} {'closed' if self._closed else 'open'}>"

    # ---- state

    @property
    def is_connected(self) -> bool:
        """True once the handshake is done and until the connection drops."""
        return self._ready and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """Number of requests waiting for a reply."""
        return len(self._pending)

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n
        self.server.stats[key] += n

    def _desc(self) -> str:
        dpid = f"dpid=0x{self.id:016x}" if self.id is not None else "dpid=?"
        return f"{dpid} peer={self.peer}"

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=4 << 20)
        self._count("connections")
        LOG.info("OpenFlow connection from %s", self.peer)
        self.server._connections.add(self)
        self._write(hello_frame(self.server.versions))
        self._spawn(self._handshake())

    def data_received(self, data: bytes) -> None:
        self._count("bytes_rx", len(data))
        self._last_rx = time.monotonic()
        buf = self._buf
        buf += data
        off, end = 0, len(buf)
        unpack = OFP_HEADER.unpack_from
        with memoryview(buf) as view:  # released before buf is resized below
            off = self._frames(view, off, end, unpack)
        if off and not self._closed:
            del buf[:off]

    def _frames(self, buf: memoryview, off: int, end: int, unpack: Callable[..., tuple]) -> int:
        """Dispatch every complete message in buf[off:end]; return the offset consumed."""
        while end - off >= OFP_HEADER_LEN and not self._closed:
            version, mtype, length, xid = unpack(buf, off)
            if length < OFP_HEADER_LEN:
                self._protocol_error(f"bad message length {length} (type {mtype}, xid {xid})")
                return off
            if self.version is None:
                if not 1 <= version <= 0x06 or mtype != OFPT_HELLO:
                    self._protocol_error(f"expected HELLO, got version=0x{version:02x} type={mtype} "
                                         f"length={length} (not an OpenFlow peer?)")
                    return off
            elif version != self.version:
                self._protocol_error(f"message version 0x{version:02x} on a 0x{self.version:02x} "
                                     f"connection (type {mtype}, xid {xid}, length {length})")
                return off
            if end - off < length:
                break
            frame = bytes(buf[off:off + length])
            off += length
            try:
                self._dispatch(version, mtype, length, xid, frame)
            except Exception:  # a bug of ours; never let it kill the connection silently
                LOG.exception("%s: error handling %s xid=%d", self._desc(),
                              msg_type_name(version, mtype), xid)
                self._count("errors")
        return off

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._teardown(self.close_reason or (f"connection lost: {exc}" if exc else "closed by peer"))

    # ---- closing

    def close(self, reason: str = "closed by controller") -> None:
        """Close the connection (flushing what was written); in-flight requests fail."""
        if self.transport is not None and not self._closed:
            self.close_reason = reason
            self.transport.close()
        self._teardown(reason)

    def abort(self, reason: str) -> None:
        """Drop the connection at once, discarding unsent data."""
        if self.transport is not None and not self._closed:
            self.close_reason = reason
            self.transport.abort()
        self._teardown(reason)

    def _teardown(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = self.close_reason or reason
        self._writable.set()
        exc = ConnectionLost(f"{self._desc()}: {self.close_reason}")
        pending, self._pending = self._pending, {}
        self._sinks = _ErrorSinks()
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
        if not self._hello.done():
            self._hello.cancel()
        current = asyncio.current_task() if self.loop.is_running() else None
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._count("disconnects")
        LOG.info("OpenFlow connection %s closed: %s", self._desc(), self.close_reason)
        self.server._unregister(self, exc)

    def _protocol_error(self, what: str) -> None:
        LOG.warning("OpenFlow protocol error from %s: %s; closing the connection", self._desc(), what)
        self._count("protocol_errors")
        self.abort(f"protocol error: {what}")

    # ---- tasks and callbacks

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        try:
            self._tasks.remove(task)
        except ValueError:
            pass
        if not task.cancelled() and task.exception() is not None:
            LOG.error("%s: internal task failed", self._desc(), exc_info=task.exception())
            self._count("errors")

    # ---- handshake and keepalive

    async def _handshake(self) -> None:
        server = self.server
        try:
            async with asyncio.timeout(server.handshake_timeout):
                await self._hello
                parser, ofp = self.ofproto_parser, self.ofproto
                assert parser is not None and ofp is not None
                self.features = await self.request(parser.OFPFeaturesRequest(self))
                self.id = self.features.datapath_id
                self.send_msg(parser.OFPSetConfig(self, ofp.OFPC_FRAG_NORMAL, server.miss_send_len))
                await self.barrier()
        except (ConnectionLost, asyncio.CancelledError):
            return
        except (TimeoutError, RequestTimeout, OpenFlowError) as exc:
            LOG.warning("OpenFlow handshake with %s failed: %r", self._desc(), exc)
            self._count("handshake_failures")
            self.abort(f"handshake failed: {exc!r}")
            return
        self._ready = True
        self._count("handshakes")
        LOG.info("OpenFlow datapath %s connected (OpenFlow 0x%02x)", self._desc(), self.version)
        server._register(self)
        if server.echo_interval:
            self._spawn(self._keepalive())

    def _on_hello(self, version: int, frame: bytes) -> None:
        if self._hello.done():
            self._count("duplicate_hellos")  # harmless, ignore
            LOG.warning("%s: duplicate HELLO ignored", self._desc())
            return
        ours = set(self.server.versions)
        theirs = hello_versions(frame)
        if theirs is None:  # no bitmap: the peer supports up to `version`
            common = {v for v in ours if v <= version}
            common = {max(common)} if common and max(common) == min(version, max(ours)) else set()
        else:
            common = ours & theirs
        supported = common & set(PROTOCOLS)
        if not supported:
            LOG.warning("OpenFlow version negotiation with %s failed: we %s, peer %s",
                        self._desc(), sorted(ours), sorted(theirs) if theirs else f"<= {version}")
            self._count("handshake_failures")
            text = b"no common OpenFlow version"
            self._write(OFP_HEADER.pack(max(ours), OFPT_ERROR, 12 + len(text), 0)
                        + struct.pack("!HH", OFPET_HELLO_FAILED, OFPHFC_INCOMPATIBLE) + text)
            self.close("version negotiation failed")
            return
        self.version = max(supported)
        proto = PROTOCOLS[self.version]
        self.ofproto, self.ofproto_parser = proto.ofproto, proto.ofproto_parser
        self._hello.set_result(self.version)

    async def _keepalive(self) -> None:
        interval, timeout = self.server.echo_interval, self.server.echo_timeout
        while not self._closed:
            idle = time.monotonic() - self._last_rx
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                await self.echo(timeout=timeout)
            except RequestTimeout:
                LOG.warning("%s: no ECHO_REPLY within %.1fs; peer is dead", self._desc(), timeout)
                self._count("echo_timeouts")
                self.abort("echo timeout")
                return
            except ConnectionLost:
                return
            await asyncio.sleep(interval)

    # ---- receiving

    def _dispatch(self, version: int, mtype: int, length: int, xid: int, frame: bytes) -> None:
        self._count("msgs_rx")
        if mtype == OFPT_HELLO:
            self._on_hello(version, frame)
            return
        if mtype == OFPT_ECHO_REQUEST:
            self._count("echo_requests")
            reply = bytearray(frame)
            reply[1] = OFPT_ECHO_REPLY
            self._write(reply)
            return
        if not self._hello.done():
            self._protocol_error(f"{msg_type_name(version, mtype)} before HELLO")
            return
        pending = self._pending.get(xid)
        if pending is not None and pending.bare:
            # A barrier or bundle control reply: the sender waits on one per bundle, and os-ken's
            # parse of it cost more than the rest of the reply's handling.
            bare, result = bare_reply(version, mtype, frame)
            if bare:
                del self._pending[xid]
                if not pending.future.done():
                    pending.future.set_result(result)
                return
        err: Exception | None = None
        try:
            msg = ofproto_parser.msg(self, version, mtype, length, xid, frame)
        except Exception as exc:
            msg, err = None, exc
        if msg is None:
            LOG.warning("%s: unparseable %s xid=%d length=%d (%r): %s", self._desc(),
                        msg_type_name(version, mtype), xid, length, err, frame[:64].hex())
            self._count("parse_errors")
            self.abort(f"unparseable {msg_type_name(version, mtype)}")
            return
        if mtype == OFPT_ERROR:
            self._on_error(msg)
            return
        if pending is not None and mtype != self.ofproto.OFPT_PACKET_IN:
            if pending.multipart:
                if mtype != self.ofproto.OFPT_MULTIPART_REPLY:
                    LOG.warning("%s: unexpected %s for multipart xid=%d", self._desc(),
                                msg_type_name(version, mtype), xid)
                    self._count("unexpected_replies")
                    return
                pending.parts.append(msg)
                if msg.flags & self.ofproto.OFPMPF_REPLY_MORE:
                    return
                result: Any = pending.parts
            else:
                result = msg
            del self._pending[xid]
            if not pending.future.done():
                pending.future.set_result(result)
            return
        if mtype == self.ofproto.OFPT_PACKET_IN:
            self._count("packet_in")
            self.server._invoke("on_packet_in", self.server.on_packet_in, self, msg)
            return
        self._count("async_msgs")
        self.server._invoke("on_message", self.server.on_message, self, msg)

    def _on_error(self, msg: Any) -> None:
        err = OpenFlowError.from_msg(msg)
        self._count("of_errors")
        pending = self._pending.pop(err.xid, None)
        sink = self._sinks.get(err.xid)
        waiter = "request" if pending else ("batch" if sink else "nobody")
        LOG.warning("OpenFlow error from %s: %s (waiting: %s)", self._desc(), err.describe(), waiter)
        if pending is not None:
            if not pending.future.done():
                pending.future.set_exception(err)
        if sink is not None:
            sink.errors.append(err)
        if pending is None and sink is None:
            self._count("unsolicited_errors")
            self.server._invoke("on_message", self.server.on_message, self, msg)

    # ---- sending

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self.transport is None:
            raise ConnectionLost(f"{self._desc()}: {self.close_reason or 'not connected'}")
        self.transport.write(data)
        self._count("bytes_tx", len(data))

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._writable.wait()
        if self._closed:
            raise ConnectionLost(f"{self._desc()}: {self.close_reason}")

    def _require_version(self) -> int:
        if self.version is None:
            raise ConnectionLost(f"{self._desc()}: handshake not done")
        return self.version

    def _pack(self, msgs: Messages) -> tuple[bytes | bytearray | memoryview, list[int]]:
        """Serialize os-ken messages (fresh xids unless set) or validate a raw buffer."""
        version = self._require_version()
        if isinstance(msgs, (bytes, bytearray, memoryview)):
            try:
                return msgs, [xid for _o, _l, _t, xid in iter_frames(msgs, version)]
            except ValueError as exc:
                raise ValueError(f"bad raw OpenFlow buffer: {exc}") from None
        objs = cast(Sequence[MsgBase], msgs)
        out = bytearray()
        xids: list[int] = []
        need = sum(1 for m in objs if m.xid is None)
        xid = self.xids.alloc(need) if need else 0
        for m in objs:
            if m.xid is None:
                m.set_xid(xid)
                xid += 1
            m.serialize()
            if m.version != version:
                raise ValueError(f"{type(m).__name__} is OpenFlow 0x{m.version:02x}, "
                                 f"connection is 0x{version:02x}")
            out += m.buf
            xids.append(m.xid)
        return out, xids

    def send_msg(self, msg: MsgBase) -> int:
        """Send one os-ken message (allocating its xid if unset); returns the xid."""
        buf, xids = self._pack([msg])
        self._write(buf)
        self._count("msgs_tx")
        return xids[0]

    def send_msgs(self, msgs: Sequence[MsgBase]) -> list[int]:
        """Send many os-ken messages with one socket write; returns their xids."""
        buf, xids = self._pack(msgs)
        self._write(buf)
        self._count("msgs_tx", len(xids))
        return xids

    def send_raw(self, buf: bytes | bytearray | memoryview) -> None:
        """Send pre-packed messages as is (one write).  See the module doc for xids.

        Errors for these messages reach ``on_message`` (nobody waits on them); use
        :meth:`send_flow_mods` to have them raised.
        """
        self._write(buf)

    def _expect(self, xid: int, request_type: int, multipart: bool = False, bare: bool = False) -> asyncio.Future:
        if xid in self._pending:
            raise RuntimeError(f"xid {xid} already in flight")
        fut = self.loop.create_future()
        self._pending[xid] = _Pending(fut, request_type, multipart, bare=bare)
        return fut

    async def _wait(self, xid: int, fut: asyncio.Future, timeout: float | None, what: str) -> Any:
        timeout = self.server.request_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            self._count("request_timeouts")
            raise RequestTimeout(f"{self._desc()}: no reply to {what} xid={xid} within {timeout}s") from None
        finally:
            p = self._pending.get(xid)
            if p is not None and p.future is fut:
                del self._pending[xid]

    async def request(self, msg: MsgBase, *, timeout: float | None = None) -> Any:
        """Send a request and return its (single) reply message; an OFPT_ERROR raises
        :class:`OpenFlowError`, a drop :class:`ConnectionLost`."""
        return await self._request(msg, timeout, multipart=False)

    async def request_multipart(self, msg: MsgBase, *, timeout: float | None = None) -> list[Any]:
        """Send a multipart request; return all reply messages (following OFPMPF_REPLY_MORE)."""
        return await self._request(msg, timeout, multipart=True)

    async def _request(self, msg: MsgBase, timeout: float | None, multipart: bool) -> Any:
        if msg.xid is None:
            msg.set_xid(self.xids.alloc())
        fut = self._expect(msg.xid, msg.cls_msg_type, multipart=multipart)
        try:
            self.send_msg(msg)
        except BaseException:
            self._pending.pop(msg.xid, None)
            raise
        return await self._wait(msg.xid, fut, timeout, type(msg).__name__)

    def _barrier_bytes(self, xid: int) -> bytes:
        assert self.ofproto is not None
        return OFP_HEADER.pack(self.version, self.ofproto.OFPT_BARRIER_REQUEST, OFP_HEADER_LEN, xid)

    async def barrier(self, *, timeout: float | None = None) -> None:
        """BARRIER_REQUEST; returns when the switch has processed everything sent before."""
        self._require_version()
        xid = self.xids.alloc()
        fut = self._expect(xid, self.ofproto.OFPT_BARRIER_REQUEST, bare=True)
        try:
            self._write(self._barrier_bytes(xid))
        except BaseException:
            self._pending.pop(xid, None)
            raise
        await self._wait(xid, fut, timeout, "BARRIER_REQUEST")

    async def echo(self, data: bytes = b"", *, timeout: float | None = None) -> float:
        """ECHO_REQUEST; returns the round-trip time in seconds."""
        version = self._require_version()
        xid = self.xids.alloc()
        fut = self._expect(xid, OFPT_ECHO_REQUEST)
        self._count("echoes_sent")
        start = time.monotonic()
        try:
            self._write(OFP_HEADER.pack(version, OFPT_ECHO_REQUEST, OFP_HEADER_LEN + len(data), xid) + data)
        except BaseException:
            self._pending.pop(xid, None)
            raise
        await self._wait(xid, fut, timeout, "ECHO_REQUEST")
        return time.monotonic() - start

    async def dump_flows(self, table: int | None = None, cookie: int = 0, cookie_mask: int = 0,
                         match: Any = None, out_port: int | None = None, out_group: int | None = None,
                         *, timeout: float | None = None) -> list[Any]:
        """Return the switch's flows (os-ken ``OFPFlowStats``), optionally filtered by table,
        cookie/cookie_mask, match (non-strict), out_port, out_group."""
        self._require_version()
        ofp, parser = self.ofproto, self.ofproto_parser
        req = parser.OFPFlowStatsRequest(
            self, 0, ofp.OFPTT_ALL if table is None else table,
            ofp.OFPP_ANY if out_port is None else out_port,
            ofp.OFPG_ANY if out_group is None else out_group,
            cookie, cookie_mask, match if match is not None else parser.OFPMatch())
        replies = await self.request_multipart(req, timeout=timeout)
        return [stats for reply in replies for stats in reply.body]

    async def _send_and_barrier(self, buf: bytes | bytearray | memoryview, xids: Sequence[int],
                                timeout: float | None) -> list[OpenFlowError]:
        """Send buf + BARRIER_REQUEST; return the errors received for ``xids``."""
        sink = _ErrorSink()
        sinks = self._sinks  # (a teardown replaces them: the entries below go with these)
        sinks.add(xids, sink)
        bxid = self.xids.alloc()
        fut = self._expect(bxid, self.ofproto.OFPT_BARRIER_REQUEST, bare=True)
        try:
            # One write (one send(2), one wake-up of the switch) for the messages and their barrier.
            if isinstance(buf, bytearray):
                buf += self._barrier_bytes(bxid)
                self._write(buf)
            else:
                self._write(b"".join((buf, self._barrier_bytes(bxid))))
            await self._wait(bxid, fut, timeout, "BARRIER_REQUEST")
        finally:
            self._pending.pop(bxid, None)
            sinks.remove(xids, sink)
        return sink.errors

    async def send_flow_mods(self, msgs: Messages, *, timeout: float | None = None) -> None:
        """Send messages (os-ken objects or one raw buffer) in one write, then a barrier.

        Raises :class:`FlowModError` listing every error the switch returned for them.
        No atomicity: the messages that did not fail are applied.
        """
        buf, xids = self._pack(msgs)
        self._count("msgs_tx", len(xids))
        errors = await self._send_and_barrier(buf, xids, timeout)
        if errors:
            raise FlowModError(errors)

    async def _send_pipelined_bundle(self, framed: bytearray, xids: Sequence[int], ctrl_xids: tuple[int, int],
                                     ctrl_type: int, bundle_id: int, timeout: float | None) -> None:
        replies = [self._expect(xid, ctrl_type, bare=True) for xid in ctrl_xids]
        errors: list[OpenFlowError] = []
        try:
            errors = await self._send_and_barrier(framed, xids, timeout)
            for reply, what in zip(replies, ("open", "commit")):
                if not reply.done():
                    raise ProtocolError(f"{self._desc()}: no reply to bundle {bundle_id} {what} before barrier")
                try:
                    reply.result()  # raises OpenFlowError if the switch refused it
                except OpenFlowError as exc:
                    errors.append(exc)
        finally:
            for xid in ctrl_xids:
                self._pending.pop(xid, None)
        if errors:
            self._count("bundles_failed")
            raise BundleError(bundle_id, "pipelined", errors)

    def _bundle_ctrl(self, bundle_id: int, type_: int, flags: int) -> MsgBase:
        parser = self.ofproto_parser
        if self.version == OFP13:
            return parser.ONFBundleCtrlMsg(self, bundle_id, type_, flags, [])
        return parser.OFPBundleCtrlMsg(self, bundle_id, type_, flags, [])

    def _bundle_consts(self) -> tuple[int, int, int, int, int]:
        """(OPEN_REQUEST, COMMIT_REQUEST, DISCARD_REQUEST, ATOMIC, ORDERED) of this version."""
        if self.version == OFP13:
            o = ofproto_v1_3
            return (o.ONF_BCT_OPEN_REQUEST, o.ONF_BCT_COMMIT_REQUEST, o.ONF_BCT_DISCARD_REQUEST,
                    o.ONF_BF_ATOMIC, o.ONF_BF_ORDERED)
        o = self.ofproto
        return (o.OFPBCT_OPEN_REQUEST, o.OFPBCT_COMMIT_REQUEST, o.OFPBCT_DISCARD_REQUEST,
                o.OFPBF_ATOMIC, o.OFPBF_ORDERED)

    async def send_bundle(self, msgs: Messages | BundleFramer, *, flags: int | None = None,
                          timeout: float | None = None, pipelined: bool = False) -> None:
        """Apply messages (os-ken objects, one raw buffer of plain messages, or a BundleFramer on an
        OpenFlow 1.3 channel) atomically.

        open + bundle-adds + barrier go out in one write; if the switch rejected no add,
        COMMIT (ATOMIC|ORDERED by default) follows and its reply is awaited.  If anything
        is rejected the bundle is discarded and :class:`BundleError` (with the OpenFlow
        error type/code and the failing xid) is raised; nothing of it is applied.

        ``pipelined``: open + adds + COMMIT + barrier in one write, one round trip instead
        of two. The commit is still atomic, but Open vSwitch leaves a rejected add out and
        commits the others; :class:`BundleError` (stage "pipelined") then says so, and the
        caller must reconcile. For messages already validated (dfflow's packer checks
        every row), where a rejection means the switch changed under us.
        """
        version = self._require_version()
        _, commit_t, discard_t, atomic, ordered = self._bundle_consts()
        if flags is None:
            flags = atomic | ordered
        self._bundle_ids = self._bundle_ids % 0xFFFFFFFF + 1
        bundle_id = self._bundle_ids
        # The open (and, pipelined, the commit) framed around the adds in one compiled call.
        if hasattr(msgs, "frame_bundle"):
            if version != OFP13:
                raise ValueError(f"{self._desc()}: a BundleFramer writes OpenFlow 1.3 bundles, the channel speaks "
                                 f"version {version}")
            framed, xids, open_xid = msgs.frame_bundle(self, bundle_id, flags, pipelined)
        else:
            buf = msgs if isinstance(msgs, (bytes, bytearray, memoryview)) else self._pack(msgs)[0]
            open_xid = self.xids.alloc(2 if pipelined else 1)
            framed, xids = wrap_bundle_adds(buf, version, bundle_id, flags, open_xid=open_xid,
                                            commit_xid=open_xid + 1 if pipelined else None)
        ctrl_type = ofproto_v1_3.OFPT_EXPERIMENTER if version == OFP13 else self.ofproto.OFPT_BUNDLE_CONTROL
        self._count("msgs_tx", len(xids) + 2)
        self._count("bundles")
        if pipelined:
            await self._send_pipelined_bundle(framed, xids, (open_xid, open_xid + 1), ctrl_type, bundle_id, timeout)
            return
        # Stage 1: open + adds + barrier in one write.  OVS validates each message when
        # it is added and merely leaves a bad one out, so an error on the open or on any
        # add must abort the bundle (a commit would apply the rest).
        open_reply = self._expect(open_xid, ctrl_type, bare=True)
        errors: list[OpenFlowError] = []
        try:
            errors = await self._send_and_barrier(framed, xids, timeout)
            if open_reply.done():
                open_reply.result()  # raises OpenFlowError if the open failed
            else:
                raise ProtocolError(f"{self._desc()}: no reply to bundle {bundle_id} open before barrier")
        except OpenFlowError as exc:
            errors = [exc] + errors
        finally:
            self._pending.pop(open_xid, None)
        if errors:
            self._count("bundles_failed")
            try:
                await self.request(self._bundle_ctrl(bundle_id, discard_t, flags), timeout=timeout)
            except OpenFlowError as exc:  # e.g. the open itself failed: nothing to discard
                LOG.debug("%s: discarding bundle %d: %s", self._desc(), bundle_id, exc)
            raise BundleError(bundle_id, "add", errors)
        # Stage 2: commit.  A message failing now is reported with its own xid, then the
        # commit fails (OFPBFC_MSG_FAILED); collect both.
        commit = self._bundle_ctrl(bundle_id, commit_t, flags)
        commit.set_xid(self.xids.alloc())
        sink = _ErrorSink()
        sinks = self._sinks
        sinks.add(xids, sink)
        try:
            await self.request(commit, timeout=timeout)
        except OpenFlowError as exc:
            self._count("bundles_failed")
            raise BundleError(bundle_id, "commit", sink.errors + [exc]) from None
        finally:
            sinks.remove(xids, sink)
