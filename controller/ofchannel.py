"""The OpenFlow channel: asyncio, no eventlet, the only code touching the OpenFlow socket.

Each chassis' controller listens on a TCP address; its Open vSwitch bridge
(br-int) is configured with ``tcp:HOST:PORT`` as controller and connects to it.
:class:`OpenFlowServer` accepts those connections; every connection becomes one
:class:`Datapath` (an :class:`asyncio.Protocol`) that

* exchanges HELLO and negotiates the version (OpenFlow 1.3 by default; 1.4 may
  be enabled with ``versions=(OFP13, OFP14)``), sends FEATURES_REQUEST (datapath
  id) and SET_CONFIG (miss_send_len), then fires ``on_connect(dp)``;
* answers the switch's ECHO_REQUESTs and sends its own echo when the peer has
  been silent for ``echo_interval`` seconds, closing the connection when no
  reply comes within ``echo_timeout`` (dead peer detection);
* frames the byte stream (8-byte header, then body) and parses it with
  os-ken's parser (``os_ken.ofproto.ofproto_parser.msg``); anything that is not
  OpenFlow (bad version, bad length, unparseable body, HELLO missing) is logged,
  counted and the connection is aborted -- the server keeps serving;
* tracks in-flight requests by xid (barrier, echo, multipart with
  OFPMPF_REPLY_MORE continuation, bundle control) and fails all of them with
  :class:`ConnectionLost` when the connection drops;
* logs every OFPT_ERROR with context (type/code names, xid, the type of the
  request that failed, parsed from the error's data), counts it and delivers it
  to whoever waits on that xid;
* delivers PACKET_IN to ``on_packet_in(dp, msg)`` and every other unsolicited
  message to ``on_message(dp, msg)``.

Callbacks may be plain functions or coroutine functions (then run as tasks);
an exception in any of them is logged with its traceback and counted in
``stats["errors"]`` -- never silently dropped.

Bundles
-------
:meth:`Datapath.send_bundle` installs a list of messages atomically: open,
adds, commit with ``ATOMIC|ORDERED``.  On OpenFlow 1.3 it uses the ONF bundle
extension (EXT-230: ``OFPT_EXPERIMENTER`` with experimenter ``0x4f4e4600``,
exp_type ``ONF_ET_BUNDLE_CONTROL`` 2300 / ``ONF_ET_BUNDLE_ADD_MESSAGE`` 2301,
os-ken's ``ONFBundleCtrlMsg``/``ONFBundleAddMsg``), which Open vSwitch 3.1
accepts on an OpenFlow 1.3 connection (verified by ``tests/test_ofchannel.py``);
on OpenFlow 1.4 it uses the standard ``OFPT_BUNDLE_CONTROL``/``OFPT_BUNDLE_ADD_MESSAGE``.
Open vSwitch validates (decodes) a message when it is *added* to a bundle: an
invalid message is answered with an error right away and simply left out of
the bundle, and a later commit would apply the rest.  To keep "all or nothing"
we therefore send open + adds + BARRIER_REQUEST in one write, and commit only
if no add failed; otherwise the bundle is discarded and :class:`BundleError`
raised.  Errors that only show at commit time (e.g. a flow referring to a
group that does not exist) make OVS reject the whole commit: first an error
for the failing message (its own xid), then one for the commit
(``ONFERR_ET_FAILED`` -- experimenter error 2313 -- on 1.3, ``OFPBFC_MSG_FAILED``
on 1.4).  Either way nothing of a failed bundle is applied.  Both flavours
behave the same in OVS 3.1, so we speak 1.3 by default (``versions=(OFP13,)``).
``send_bundle`` takes os-ken messages or one raw buffer of *plain* messages
(FLOW_MOD, GROUP_MOD, ...); it wraps them into bundle-adds itself
(:func:`wrap_bundle_adds`, byte-identical to os-ken's ``ONFBundleAddMsg``).

Transaction ids
---------------
The channel allocates xids for its own messages from ``1 .. XID_CHANNEL_MAX``
(``0x7fffffff``) with :attr:`Datapath.xids`.  A packer producing a raw buffer
has two options:

* call ``dp.xids.alloc(n)`` and number its n messages ``first .. first+n-1``
  (the block is never handed out again until the 31-bit space wraps), or
* use xids in the reserved range ``XID_RAW_BASE .. 0xffffffff`` (high bit set),
  which the channel never allocates.

Either way replies and errors for raw messages never reach one of the
channel's own requests.  :meth:`Datapath.send_flow_mods` and
:meth:`Datapath.send_bundle` walk a raw buffer's headers to learn its xids, so
errors are attributed to the call that sent them.

Recommended OVS settings
------------------------
``ovs-vsctl set bridge br-int fail_mode=secure protocols=OpenFlow13,OpenFlow14``
and on the Controller row ``max_backoff=1000`` (ms; OVS reconnects by itself
with exponential backoff, the default cap of 8 s is too slow for migration)
and ``inactivity_probe=5000`` (ms; OVS sends ECHO_REQUEST after that much
silence and drops the connection after as much again without an answer; OVS
clamps any smaller non-zero value to 5 s).  Set all of it in the same ovs-vsctl
transaction as ``set-controller``.  Observed with OVS 3.1 (see the tests):

* flows survive a controller restart (fail_mode=secure): the switch keeps
  forwarding and reconnects to the new process; on_connect fires again;
* OVS flushes the whole flow table when a bridge goes from "has controllers" to
  "has none" (``del-controller``): retarget a live bridge with one
  ``set-controller``, never del-controller + set-controller;
* a ``unix:PATH`` controller target is only accepted if PATH lies in OVS's
  rundir (``OVS_RUNDIR``); elsewhere OVS refuses it (logged in ovs-vswitchd.log);
* a netdev datapath creates kernel tap devices (``ovs-netdev``, one per bridge
  and internal port), so only one such ovs-vswitchd can run per network
  namespace.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import stat
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Awaitable, Callable, Iterator, Sequence, Union, cast

from os_ken.ofproto import (ofproto_common, ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser,
                            ofproto_v1_4, ofproto_v1_4_parser)
from os_ken.ofproto.ofproto_parser import MsgBase

LOG = logging.getLogger(__name__)

OFP13 = ofproto_v1_3.OFP_VERSION  # 0x04
OFP14 = ofproto_v1_4.OFP_VERSION  # 0x05

XID_CHANNEL_MAX = 0x7FFFFFFF
XID_RAW_BASE = 0x80000000

OFP_HEADER = struct.Struct("!BBHI")
OFP_HEADER_LEN = OFP_HEADER.size  # 8
OFP_MAX_MSG_LEN = 0xFFFF

# Message types common to every OpenFlow version.
OFPT_HELLO = 0
OFPT_ERROR = 1
OFPT_ECHO_REQUEST = 2
OFPT_ECHO_REPLY = 3
OFPT_EXPERIMENTER = 4
OFPET_HELLO_FAILED = 0
OFPHFC_INCOMPATIBLE = 0
OFPHET_VERSIONBITMAP = 1

# Bundle framing (header + what follows it, before the inner message).
_ONF_BUNDLE_ADD = struct.Struct("!BBHIIIIxxH")  # header, experimenter, exp_type, bundle_id, pad, flags
_OF14_BUNDLE_ADD = struct.Struct("!BBHIIxxH")  # header, bundle_id, pad, flags

Callback = Callable[..., Union[None, Awaitable[None]]]
Messages = Union[Sequence[MsgBase], bytes, bytearray, memoryview]


# --------------------------------------------------------------------------- protocol tables

class OFProto:
    """The minimal "datapath-like" object os-ken wants: ``ofproto`` and ``ofproto_parser``.

    Use ``OF13`` (or a connected :class:`Datapath`) as the ``datapath`` argument when
    building os-ken messages, e.g. ``OF13.ofproto_parser.OFPFlowMod(OF13, ...)``.
    """

    id: int | None = None

    def __init__(self, ofproto: ModuleType, parser: ModuleType) -> None:
        self.ofproto: Any = ofproto
        self.ofproto_parser: Any = parser

    def __repr__(self) -> str:
        return f"OFProto(0x{self.ofproto.OFP_VERSION:02x})"


OF13 = OFProto(ofproto_v1_3, ofproto_v1_3_parser)
OF14 = OFProto(ofproto_v1_4, ofproto_v1_4_parser)
PROTOCOLS: dict[int, OFProto] = {OFP13: OF13, OFP14: OF14}

_ERROR_CODE_PREFIX = {
    "OFPET_HELLO_FAILED": "OFPHFC_", "OFPET_BAD_REQUEST": "OFPBRC_", "OFPET_BAD_ACTION": "OFPBAC_",
    "OFPET_BAD_INSTRUCTION": "OFPBIC_", "OFPET_BAD_MATCH": "OFPBMC_",
    "OFPET_FLOW_MOD_FAILED": "OFPFMFC_", "OFPET_GROUP_MOD_FAILED": "OFPGMFC_",
    "OFPET_PORT_MOD_FAILED": "OFPPMFC_", "OFPET_TABLE_MOD_FAILED": "OFPTMFC_",
    "OFPET_QUEUE_OP_FAILED": "OFPQOFC_", "OFPET_SWITCH_CONFIG_FAILED": "OFPSCFC_",
    "OFPET_ROLE_REQUEST_FAILED": "OFPRRFC_", "OFPET_METER_MOD_FAILED": "OFPMMFC_",
    "OFPET_TABLE_FEATURES_FAILED": "OFPTFFC_", "OFPET_BAD_PROPERTY": "OFPBPC_",
    "OFPET_ASYNC_CONFIG_FAILED": "OFPACFC_", "OFPET_FLOW_MONITOR_FAILED": "OFPMOFC_",
    "OFPET_BUNDLE_FAILED": "OFPBFC_",
}


def _names(module: ModuleType, prefix: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for name in sorted(vars(module)):
        value = getattr(module, name)
        if name.startswith(prefix) and isinstance(value, int) and not name.endswith("_PACK_STR"):
            out.setdefault(value, name)
    return out


@dataclass(frozen=True)
class _Names:
    msg_types: dict[int, str]
    err_types: dict[int, str]
    err_codes: dict[int, dict[int, str]]
    onf_err: dict[int, str]


def _build_names(module: ModuleType) -> _Names:
    err_types = _names(module, "OFPET_")
    codes = {value: _names(module, _ERROR_CODE_PREFIX[name])
             for value, name in err_types.items() if name in _ERROR_CODE_PREFIX}
    return _Names(_names(module, "OFPT_"), err_types, codes, _names(module, "ONFERR_ET_"))


_NAMES = {OFP13: _build_names(ofproto_v1_3), OFP14: _build_names(ofproto_v1_4)}


def msg_type_name(version: int, msg_type: int) -> str:
    names = _NAMES.get(version, _NAMES[OFP13])
    return names.msg_types.get(msg_type, f"OFPT_{msg_type}")


# --------------------------------------------------------------------------- exceptions

class OFChannelError(Exception):
    """Base class of everything this module raises."""


class ConnectionLost(OFChannelError):
    """The OpenFlow connection dropped (or was closed) while the request was in flight."""


class RequestTimeout(OFChannelError, TimeoutError):
    """No reply within the request's timeout."""


class ProtocolError(OFChannelError):
    """The peer violated the OpenFlow framing; the connection is closed."""


class OpenFlowError(OFChannelError):
    """An OFPT_ERROR the switch sent about one of our requests.

    ``type``/``code`` are the OpenFlow error type and code (for experimenter errors,
    ``type == 0xffff``, ``code`` is the exp_type and ``experimenter`` is set); ``xid`` is
    the failing request's transaction id and ``request_type`` its message type (from
    the copy of the request the switch returns in the error's data, when present).
    """

    def __init__(self, version: int, type_: int, code: int, xid: int, data: bytes = b"",
                 experimenter: int | None = None, request_type: int | None = None,
                 message: str | None = None) -> None:
        self.version = version
        self.type = type_
        self.code = code
        self.xid = xid
        self.data = bytes(data)
        self.experimenter = experimenter
        if request_type is None and len(self.data) >= OFP_HEADER_LEN:
            request_type = OFP_HEADER.unpack_from(self.data)[1]
        self.request_type = request_type
        super().__init__(message or self.describe())

    @classmethod
    def from_msg(cls, msg: Any) -> "OpenFlowError":
        experimenter = getattr(msg, "experimenter", None) if msg.type == 0xFFFF else None
        code = msg.exp_type if experimenter is not None else msg.code
        return cls(msg.version, msg.type, code, msg.xid, msg.data or b"", experimenter)

    @property
    def type_name(self) -> str:
        return _NAMES.get(self.version, _NAMES[OFP13]).err_types.get(self.type, str(self.type))

    @property
    def code_name(self) -> str:
        names = _NAMES.get(self.version, _NAMES[OFP13])
        if self.experimenter == ofproto_common.ONF_EXPERIMENTER_ID:
            return names.onf_err.get(self.code, str(self.code))
        return names.err_codes.get(self.type, {}).get(self.code, str(self.code))

    @property
    def inner_request_type(self) -> int | None:
        """For an error about a bundle-add, the type of the bundled message (if returned)."""
        d = self.data
        if self.request_type == OFPT_EXPERIMENTER and len(d) >= _ONF_BUNDLE_ADD.size:
            if struct.unpack_from("!II", d, 8) == (ofproto_common.ONF_EXPERIMENTER_ID,
                                                     ofproto_v1_3.ONF_ET_BUNDLE_ADD_MESSAGE):
                return d[_ONF_BUNDLE_ADD.size + 1]
        if (self.version >= OFP14 and self.request_type == ofproto_v1_4.OFPT_BUNDLE_ADD_MESSAGE
                and len(d) >= _OF14_BUNDLE_ADD.size + 2):
            return d[_OF14_BUNDLE_ADD.size + 1]
        return None

    @property
    def request_type_name(self) -> str | None:
        if self.request_type is None:
            return None
        name = msg_type_name(self.version, self.request_type)
        inner = self.inner_request_type
        if inner is not None:
            name += f"[bundled {msg_type_name(self.version, inner)}]"
        return name

    def describe(self) -> str:
        exp = f" experimenter=0x{self.experimenter:08x}" if self.experimenter is not None else ""
        req = f" {self.request_type_name}" if self.request_type is not None else ""
        return (f"{self.type_name}/{self.code_name} (type={self.type} code={self.code}{exp})"
                f" for request{req} xid={self.xid}")


class FlowModError(OpenFlowError):
    """:meth:`Datapath.send_flow_mods` saw errors; ``errors`` lists them all (first one is
    mirrored in type/code/xid).  Without a bundle, the other messages WERE applied."""

    def __init__(self, errors: list[OpenFlowError]) -> None:
        first = errors[0]
        self.errors = errors
        super().__init__(first.version, first.type, first.code, first.xid, first.data,
                         first.experimenter, first.request_type,
                         f"{len(errors)} of the messages failed; first: {first.describe()}")


class BundleError(OpenFlowError):
    """:meth:`Datapath.send_bundle` was rejected; nothing of the bundle was applied (except at
    stage "pipelined": then the adds the switch accepted were committed).

    type/code/xid are those of the root cause (the failing message if the switch named
    one, else the failing bundle-control request); ``errors`` lists every error received
    for the bundle, ``bundle_id`` identifies it and ``stage`` is "add", "commit" or "pipelined".
    """

    def __init__(self, bundle_id: int, stage: str, errors: list[OpenFlowError]) -> None:
        root = errors[0]
        self.bundle_id = bundle_id
        self.stage = stage
        self.errors = errors
        super().__init__(root.version, root.type, root.code, root.xid, root.data,
                         root.experimenter, root.request_type,
                         f"bundle {bundle_id} rejected at {stage}: {root.describe()}"
                         + (f" (+{len(errors) - 1} more errors)" if len(errors) > 1 else ""))


# --------------------------------------------------------------------------- raw buffer helpers

def iter_frames(buf: bytes | bytearray | memoryview,
                version: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(offset, length, msg_type, xid)`` of each message of a packed buffer.

    Raises :class:`ValueError` when the buffer is not a whole number of well-formed
    messages (or a message's version differs from ``version``).
    """
    off, end = 0, len(buf)
    unpack = OFP_HEADER.unpack_from
    while off < end:
        if end - off < OFP_HEADER_LEN:
            raise ValueError(f"truncated OpenFlow header at offset {off}")
        ver, mtype, length, xid = unpack(buf, off)
        if length < OFP_HEADER_LEN or off + length > end:
            raise ValueError(f"bad OpenFlow length {length} at offset {off}")
        if version is not None and ver != version:
            raise ValueError(f"OpenFlow version 0x{ver:02x} at offset {off}, expected 0x{version:02x}")
        yield off, length, mtype, xid
        off += length


def wrap_bundle_adds(buf: bytes | bytearray | memoryview, version: int, bundle_id: int,
                     flags: int, out: bytearray | None = None) -> tuple[bytearray, list[int]]:
    """Wrap every message of a packed buffer into a bundle-add message.

    OpenFlow 1.3 gets the ONF extension (EXT-230) framing, 1.4+ the standard one; each
    add carries its inner message's xid, as the spec requires.  Returns the new buffer
    (``out``, appended to, if given) and the list of xids.
    """
    view = memoryview(buf)
    if out is None:
        out = bytearray()
    xids: list[int] = []
    onf = version == OFP13
    hdr = _ONF_BUNDLE_ADD if onf else _OF14_BUNDLE_ADD
    for off, length, _mtype, xid in iter_frames(view, version):
        total = hdr.size + length
        if total > OFP_MAX_MSG_LEN:
            raise ValueError(f"message xid={xid} ({length} bytes) too long to bundle")
        if onf:
            out += hdr.pack(version, OFPT_EXPERIMENTER, total, xid, ofproto_common.ONF_EXPERIMENTER_ID,
                            ofproto_v1_3.ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, flags)
        else:
            out += hdr.pack(version, ofproto_v1_4.OFPT_BUNDLE_ADD_MESSAGE, total, xid, bundle_id, flags)
        out += view[off:off + length]
        xids.append(xid)
    return out, xids


def _hello(versions: Sequence[int], xid: int = 0) -> bytes:
    bitmap = 0
    for v in versions:
        bitmap |= 1 << v
    return (OFP_HEADER.pack(max(versions), OFPT_HELLO, 16, xid)
            + struct.pack("!HHI", OFPHET_VERSIONBITMAP, 8, bitmap))


def _hello_versions(frame: bytes) -> set[int] | None:
    """Versions advertised by a HELLO's version bitmap element, or None if it has none."""
    off, end = OFP_HEADER_LEN, len(frame)
    while end - off >= 4:
        etype, elen = struct.unpack_from("!HH", frame, off)
        if elen < 4 or off + elen > end:
            return None
        if etype == OFPHET_VERSIONBITMAP:
            versions: set[int] = set()
            for i, (word,) in enumerate(struct.iter_unpack("!I", frame[off + 4:off + 4 + (elen - 4) // 4 * 4])):
                versions.update(32 * i + b for b in range(32) if word >> b & 1)
            return versions
        off += (elen + 7) // 8 * 8
    return None


# --------------------------------------------------------------------------- xids

class XidAllocator:
    """Hands out transaction ids from 1..XID_CHANNEL_MAX, in contiguous blocks if asked.

    xids at or above :data:`XID_RAW_BASE` are never allocated: a raw-buffer packer may use
    them freely.  After 2**31 - 1 ids the allocator wraps back to 1.
    """

    def __init__(self, start: int = 1) -> None:
        self._next = start

    def alloc(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive xids and return the first."""
        if not 1 <= n <= XID_CHANNEL_MAX:
            raise ValueError(f"cannot allocate {n} xids")
        first = self._next
        if first + n - 1 > XID_CHANNEL_MAX:
            first = 1
        self._next = first + n
        return first


# --------------------------------------------------------------------------- the connection

@dataclass
class _Pending:
    future: asyncio.Future
    request_type: int
    multipart: bool = False
    parts: list = field(default_factory=list)


@dataclass
class _ErrorSink:
    """Collects errors for a set of xids (fire-and-forget messages followed by a barrier)."""
    errors: list[OpenFlowError] = field(default_factory=list)


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
        self._sinks: dict[int, _ErrorSink] = {}
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
        self._write(_hello(self.server.versions))
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
        self._sinks = {}
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
        theirs = _hello_versions(frame)
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
        pending = self._pending.get(xid)
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

    def _expect(self, xid: int, request_type: int, multipart: bool = False) -> asyncio.Future:
        if xid in self._pending:
            raise RuntimeError(f"xid {xid} already in flight")
        fut = self.loop.create_future()
        self._pending[xid] = _Pending(fut, request_type, multipart)
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
        if msg.xid is None:
            msg.set_xid(self.xids.alloc())
        fut = self._expect(msg.xid, msg.cls_msg_type)
        try:
            self.send_msg(msg)
        except BaseException:
            self._pending.pop(msg.xid, None)
            raise
        return await self._wait(msg.xid, fut, timeout, type(msg).__name__)

    async def request_multipart(self, msg: MsgBase, *, timeout: float | None = None) -> list[Any]:
        """Send a multipart request; return all reply messages (following OFPMPF_REPLY_MORE)."""
        if msg.xid is None:
            msg.set_xid(self.xids.alloc())
        fut = self._expect(msg.xid, msg.cls_msg_type, multipart=True)
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
        fut = self._expect(xid, self.ofproto.OFPT_BARRIER_REQUEST)
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

    async def _send_and_barrier(self, buf: bytes | bytearray | memoryview, xids: list[int],
                                timeout: float | None) -> list[OpenFlowError]:
        """Send buf + BARRIER_REQUEST; return the errors received for ``xids``."""
        sink = _ErrorSink()
        sinks = self._sinks
        for x in xids:
            sinks[x] = sink
        bxid = self.xids.alloc()
        fut = self._expect(bxid, self.ofproto.OFPT_BARRIER_REQUEST)
        try:
            self._write(buf)
            self._write(self._barrier_bytes(bxid))
            await self._wait(bxid, fut, timeout, "BARRIER_REQUEST")
        finally:
            self._pending.pop(bxid, None)
            if self._sinks is sinks:
                for x in xids:
                    if sinks.get(x) is sink:
                        del sinks[x]
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

    async def _send_pipelined_bundle(self, ctrl: bytearray, xids: list[int], opener: MsgBase, bundle_id: int,
                                     commit_t: int, flags: int, timeout: float | None) -> None:
        commit = self._bundle_ctrl(bundle_id, commit_t, flags)
        commit.set_xid(self.xids.alloc())
        ctrl += self._pack([commit])[0]
        replies = [self._expect(opener.xid, opener.cls_msg_type), self._expect(commit.xid, commit.cls_msg_type)]
        errors: list[OpenFlowError] = []
        try:
            errors = await self._send_and_barrier(ctrl, xids, timeout)
            for reply, what in zip(replies, ("open", "commit")):
                if not reply.done():
                    raise ProtocolError(f"{self._desc()}: no reply to bundle {bundle_id} {what} before barrier")
                try:
                    reply.result()  # raises OpenFlowError if the switch refused it
                except OpenFlowError as exc:
                    errors.append(exc)
        finally:
            self._pending.pop(opener.xid, None)
            self._pending.pop(commit.xid, None)
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

    async def send_bundle(self, msgs: Messages, *, flags: int | None = None,
                          timeout: float | None = None, pipelined: bool = False) -> None:
        """Apply messages (os-ken objects or one raw buffer of plain messages) atomically.

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
        open_t, commit_t, discard_t, atomic, ordered = self._bundle_consts()
        if flags is None:
            flags = atomic | ordered
        buf, _ = self._pack(msgs)
        self._bundle_ids = self._bundle_ids % 0xFFFFFFFF + 1
        bundle_id = self._bundle_ids
        opener = self._bundle_ctrl(bundle_id, open_t, flags)
        opener.set_xid(self.xids.alloc())
        ctrl = bytearray(self._pack([opener])[0])
        ctrl, xids = wrap_bundle_adds(buf, version, bundle_id, flags, out=ctrl)
        self._count("msgs_tx", len(xids) + 2)
        self._count("bundles")
        if pipelined:
            await self._send_pipelined_bundle(ctrl, xids, opener, bundle_id, commit_t, flags, timeout)
            return
        # Stage 1: open + adds + barrier in one write.  OVS validates each message when
        # it is added and merely leaves a bad one out, so an error on the open or on any
        # add must abort the bundle (a commit would apply the rest).
        open_reply = self._expect(opener.xid, opener.cls_msg_type)
        errors: list[OpenFlowError] = []
        try:
            errors = await self._send_and_barrier(ctrl, xids, timeout)
            if open_reply.done():
                open_reply.result()  # raises OpenFlowError if the open failed
            else:
                raise ProtocolError(f"{self._desc()}: no reply to bundle {bundle_id} open before barrier")
        except OpenFlowError as exc:
            errors = [exc] + errors
        finally:
            self._pending.pop(opener.xid, None)
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
        for x in xids:
            sinks[x] = sink
        try:
            await self.request(commit, timeout=timeout)
        except OpenFlowError as exc:
            self._count("bundles_failed")
            raise BundleError(bundle_id, "commit", sink.errors + [exc]) from None
        finally:
            if self._sinks is sinks:
                for x in xids:
                    if sinks.get(x) is sink:
                        del sinks[x]


# --------------------------------------------------------------------------- the server

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
