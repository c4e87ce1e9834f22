"""A light stand-in for one chassis' Open vSwitch, for fan-out measurements at hundreds of chassis.

The real controller (`ControllerDaemon`) runs against it unchanged except for configuration:

* `StandinSwitch`: the OpenFlow 1.3 side of ovs-vswitchd. It connects to the controller as
  vswitchd does, answers HELLO, FEATURES, ECHO, BARRIER and ONF bundle open/add/commit/discard,
  keeps a flow table (ADD, MODIFY(_STRICT), DELETE(_STRICT); a non-strict match is "every field
  of the request present with the same value and mask in the flow") and answers flow-stats dumps
  from it, so the controller's reconcile reads back what it sent. Flow mods are counted.
* `StandinOvsdbServer`: the part of ovsdb-server the controller reads with its own JSON-RPC code:
  a monitor of the Interface table (VIF and tunnel rows, with ofports as vswitchd would assign)
  and select/mutate of `Open_vSwitch` external_ids (the NB revision mark).
* `StandinConntrackSweeper`: the controller's conntrack sweeper with `ovs-appctl` answered as the
  stand-in's vswitchd would, without a process.
* `StandinOvsdb`: the controller's `Ovsdb` with its two ovsdbapp configuration calls replaced:
  `setup_bridge` points the stand-in switch at the controller, `ensure_tunnels` adds one tunnel
  Interface row per peer.

What it skips: no datapath (no packets, no PACKET_IN, no flow counters), no ovsdbapp/IDL
(bridge and tunnel configuration are applied to the stand-in's rows directly), no OpenFlow 1.4,
no group/meter tables, and flow-mod validation beyond the header (OVS checks actions; we don't).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import struct
import time
import uuid
from collections import Counter
from typing import Any

from controller.conntrack_sweep import ConntrackSweeper
from dfflow.ovsdb.chassis import Ovsdb, tunnel_port_name
from dfflow.ovsdb.jsonrpc import Framer

LOG = logging.getLogger(__name__)

OFP13 = 0x04
HDR = struct.Struct("!BBHI")
T_HELLO, T_ERROR, T_ECHO_REQUEST, T_ECHO_REPLY, T_EXPERIMENTER = 0, 1, 2, 3, 4
T_FEATURES_REQUEST, T_FEATURES_REPLY, T_SET_CONFIG, T_PACKET_OUT, T_FLOW_MOD = 5, 6, 9, 13, 14
T_MULTIPART_REQUEST, T_MULTIPART_REPLY, T_BARRIER_REQUEST, T_BARRIER_REPLY = 18, 19, 20, 21
ONF_ID, ONF_BUNDLE_CONTROL, ONF_BUNDLE_ADD = 0x4F4E4600, 2300, 2301
BCT_OPEN, BCT_CLOSE, BCT_COMMIT, BCT_DISCARD = 0, 2, 4, 6
MP_FLOW, MPF_REPLY_MORE = 1, 1
ET_BAD_REQUEST, BRC_BAD_TYPE, BRC_BAD_EXPERIMENTER = 1, 1, 3
ET_FLOW_MOD_FAILED, FMFC_BAD_COMMAND = 5, 6
ET_BUNDLE_FAILED, BFC_BAD_ID = 17, 3  # ONF's bundle errors ride on OFPET_EXPERIMENTER in 1.3; close enough
ADD, MODIFY, MODIFY_STRICT, DELETE, DELETE_STRICT = 0, 1, 2, 3, 4
TABLE_ALL, ANY = 0xFF, 0xFFFFFFFF
FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")  # after the header: 40 bytes
FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")  # 48 bytes before the match
FLOW_STATS_REQUEST = struct.Struct("!B3xII4xQQ")
REPLY_CHUNK = 60000


def _oxm_fields(oxms: bytes) -> dict[int, bytes]:
    """OXM TLVs by (class, field) header, each with its value (and mask)."""
    fields, off = {}, 0
    while off + 4 <= len(oxms):
        header = int.from_bytes(oxms[off:off + 4], "big")
        length = header & 0xFF
        fields[header >> 9] = oxms[off + 4:off + 4 + length]
        off += 4 + length
    return fields


class Flow:
    __slots__ = ("table", "priority", "oxms", "cookie", "idle", "hard", "flags", "match", "instructions")

    def __init__(self, table: int, priority: int, oxms: bytes, cookie: int, idle: int, hard: int, flags: int,
                 match: bytes, instructions: bytes):
        self.table, self.priority, self.oxms, self.cookie = table, priority, oxms, cookie
        self.idle, self.hard, self.flags, self.match, self.instructions = idle, hard, flags, match, instructions

    def stats(self) -> bytes:
        length = FLOW_STATS.size + len(self.match) + len(self.instructions)
        return (FLOW_STATS.pack(length, self.table, 0, 0, self.priority, self.idle, self.hard, self.flags,
                                self.cookie, 0, 0) + self.match + self.instructions)


def parse_flow_mod(frame: bytes) -> tuple[int, int, Flow]:
    """(command, cookie_mask, flow) of a FLOW_MOD frame; ValueError when it is not one we model."""
    (cookie, cookie_mask, table, command, idle, hard, priority, _buffer, out_port, out_group,
     flags) = FLOW_MOD.unpack_from(frame, 8)
    mtype, mlen = struct.unpack_from("!HH", frame, 48)
    if mtype != 1 or mlen < 4:
        raise ValueError(f"match type {mtype} length {mlen}")
    padded = (mlen + 7) // 8 * 8
    match = frame[48:48 + padded]
    if command in (DELETE, DELETE_STRICT) and (out_port != ANY or out_group != ANY):
        raise ValueError("delete filtered by out_port/out_group")
    if command > DELETE_STRICT:
        raise ValueError(f"command {command}")
    return command, cookie_mask, Flow(table, priority, frame[52:48 + mlen], cookie, idle, hard, flags, match,
                                      frame[48 + padded:])


class FlowTable:
    def __init__(self) -> None:
        self.flows: dict[tuple[int, int, bytes], Flow] = {}

    def apply(self, command: int, cookie_mask: int, flow: Flow) -> None:
        key = (flow.table, flow.priority, flow.oxms)
        if command == ADD:
            self.flows[key] = flow
        elif command in (MODIFY_STRICT, DELETE_STRICT):
            old = self.flows.get(key)
            if old is not None and (old.cookie ^ flow.cookie) & cookie_mask == 0:
                if command == DELETE_STRICT:
                    del self.flows[key]
                else:
                    old.instructions = flow.instructions
        else:
            for k, old in list(self.flows.items()):
                if self._covers(flow, cookie_mask, old):
                    if command == DELETE:
                        del self.flows[k]
                    else:
                        old.instructions = flow.instructions

    @staticmethod
    def _covers(request: Flow, cookie_mask: int, flow: Flow) -> bool:
        if request.table != TABLE_ALL and request.table != flow.table:
            return False
        if (request.cookie ^ flow.cookie) & cookie_mask:
            return False
        if not request.oxms:
            return True
        have = _oxm_fields(flow.oxms)
        return all(have.get(field) == value for field, value in _oxm_fields(request.oxms).items())

    def select(self, table: int, cookie: int, cookie_mask: int, oxms: bytes) -> list[Flow]:
        request = Flow(table, 0, oxms, cookie, 0, 0, 0, b"", b"")
        return [f for f in self.flows.values() if self._covers(request, cookie_mask, f)]


class StandinSwitch(asyncio.Protocol):
    """One chassis' br-int, as the controller's OpenFlow peer. Reconnects while not stopped."""

    def __init__(self, datapath_id: int, reconnect_delay: float = 0.2):
        self.datapath_id, self.reconnect_delay = datapath_id, reconnect_delay
        self.table = FlowTable()
        self.stats: Counter[str] = Counter()
        self.last_commit = 0.0  # time.time() of the last bundle commit applied
        self.target: str | None = None
        self.connected = asyncio.Event()
        self._bundles: dict[int, list[tuple[int, int, Flow]]] = {}
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._replies: list[bytes] | None = None  # while received() handles what came: its answers
        self._task: asyncio.Task | None = None
        self._stopped = False

    def connect(self, target: str) -> None:
        """Follow `target` (`unix:PATH` or `tcp:HOST:PORT`, as in OVS' Controller table)."""
        self.target = target
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped:
            kind, _, where = (self.target or "").partition(":")
            lost = loop.create_future()
            try:
                if kind == "unix":
                    await loop.create_unix_connection(lambda: _Link(self, lost), where)
                else:
                    host, _, port = where.rpartition(":")
                    await loop.create_connection(lambda: _Link(self, lost), host, int(port))
                await lost
            except OSError:
                self.stats["connect_failures"] += 1
            self.connected.clear()
            await asyncio.sleep(self.reconnect_delay)

    # -- messages ----------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self._replies is not None:
            self._replies.append(data)  # written together once what was received is handled
        elif self._transport is not None:
            self._transport.write(data)

    def _error(self, xid: int, etype: int, code: int, frame: bytes) -> None:
        body = struct.pack("!HH", etype, code) + frame[:64]
        self._send(HDR.pack(OFP13, T_ERROR, 8 + len(body), xid) + body)
        self.stats["errors_sent"] += 1

    def received(self, data: bytes) -> None:
        """Handle every complete message received; what they answer goes out in one write (a bundle's
        open, commit and barrier replies: one send(2) of the harness', not three)."""
        self._buf += data
        self._replies = []
        try:
            while len(self._buf) >= 8:
                version, mtype, length, xid = HDR.unpack_from(self._buf)
                if length < 8 or len(self._buf) < length:
                    break
                frame = bytes(self._buf[:length])
                del self._buf[:length]
                self._dispatch(mtype, xid, frame)
        finally:
            replies, self._replies = self._replies, None
            if replies and self._transport is not None:
                self._transport.write(b"".join(replies))

    def _dispatch(self, mtype: int, xid: int, frame: bytes) -> None:
        self.stats["msgs_rx"] += 1
        if mtype == T_HELLO or mtype == T_ECHO_REPLY or mtype == T_SET_CONFIG:
            return
        if mtype == T_ECHO_REQUEST:
            self._send(HDR.pack(OFP13, T_ECHO_REPLY, len(frame), xid) + frame[8:])
        elif mtype == T_FEATURES_REQUEST:
            body = struct.pack("!QIBB2xII", self.datapath_id, 0, 254, 0, 0x4F, 0)
            self._send(HDR.pack(OFP13, T_FEATURES_REPLY, 8 + len(body), xid) + body)
            self.connected.set()
        elif mtype == T_BARRIER_REQUEST:
            self._send(HDR.pack(OFP13, T_BARRIER_REPLY, 8, xid))
        elif mtype == T_FLOW_MOD:
            self._flow_mod(xid, frame, None)
        elif mtype == T_PACKET_OUT:
            self.stats["packet_outs"] += 1
        elif mtype == T_MULTIPART_REQUEST:
            self._multipart(xid, frame)
        elif mtype == T_EXPERIMENTER and len(frame) >= 16:
            experimenter, exp_type = struct.unpack_from("!II", frame, 8)
            if experimenter == ONF_ID and exp_type == ONF_BUNDLE_CONTROL:
                self._bundle_control(xid, frame)
            elif experimenter == ONF_ID and exp_type == ONF_BUNDLE_ADD:
                bundle_id = struct.unpack_from("!I", frame, 16)[0]
                inner = frame[24:]
                if bundle_id not in self._bundles:
                    self._error(xid, ET_BUNDLE_FAILED, BFC_BAD_ID, frame)
                elif len(inner) < 8 or inner[1] != T_FLOW_MOD:
                    self._error(HDR.unpack_from(inner)[3] if len(inner) >= 8 else xid, ET_BAD_REQUEST,
                                BRC_BAD_TYPE, inner)
                else:
                    self._flow_mod(HDR.unpack_from(inner)[3], inner, self._bundles[bundle_id])
            else:
                self._error(xid, ET_BAD_REQUEST, BRC_BAD_EXPERIMENTER, frame)
        else:
            self.stats["unsupported"] += 1
            self._error(xid, ET_BAD_REQUEST, BRC_BAD_TYPE, frame)

    def _flow_mod(self, xid: int, frame: bytes, staged: list | None) -> None:
        try:
            command, cookie_mask, flow = parse_flow_mod(frame)
        except (ValueError, struct.error) as exc:
            LOG.warning("stand-in switch %x: flow mod not modelled: %s", self.datapath_id, exc)
            self._error(xid, ET_FLOW_MOD_FAILED, FMFC_BAD_COMMAND, frame)
            return
        self.stats["flow_mods"] += 1
        if staged is None:
            self.table.apply(command, cookie_mask, flow)
        else:
            staged.append((command, cookie_mask, flow))

    def _bundle_control(self, xid: int, frame: bytes) -> None:
        bundle_id, ctrl_type, flags = struct.unpack_from("!IHH", frame, 16)
        if ctrl_type == BCT_OPEN:
            self._bundles[bundle_id] = []
        elif ctrl_type == BCT_COMMIT:
            staged = self._bundles.pop(bundle_id, None)
            if staged is None:
                self._error(xid, ET_BUNDLE_FAILED, BFC_BAD_ID, frame)
                return
            for command, cookie_mask, flow in staged:
                self.table.apply(command, cookie_mask, flow)
            self.stats["bundles_committed"] += 1
            self.last_commit = time.time()
        elif ctrl_type == BCT_DISCARD:
            self._bundles.pop(bundle_id, None)
        elif ctrl_type != BCT_CLOSE:
            self._error(xid, ET_BAD_REQUEST, BRC_BAD_TYPE, frame)
            return
        body = struct.pack("!IIIHH", ONF_ID, ONF_BUNDLE_CONTROL, bundle_id, ctrl_type + 1, flags)
        self._send(HDR.pack(OFP13, T_EXPERIMENTER, 8 + len(body), xid) + body)

    def _multipart(self, xid: int, frame: bytes) -> None:
        mp_type = struct.unpack_from("!H", frame, 8)[0]
        if mp_type != MP_FLOW:
            self._error(xid, ET_BAD_REQUEST, BRC_BAD_TYPE, frame)
            return
        table, _out_port, _out_group, cookie, cookie_mask = FLOW_STATS_REQUEST.unpack_from(frame, 16)
        mlen = struct.unpack_from("!H", frame, 16 + FLOW_STATS_REQUEST.size + 2)[0]
        oxm_start = 16 + FLOW_STATS_REQUEST.size + 4
        entries = [f.stats() for f in self.table.select(table, cookie, cookie_mask,
                                                        frame[oxm_start:oxm_start - 4 + mlen])]
        chunks: list[list[bytes]] = [[]]
        size = 0
        for entry in entries:
            if size + len(entry) > REPLY_CHUNK and chunks[-1]:
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += len(entry)
        for i, chunk in enumerate(chunks):
            body = b"".join(chunk)
            more = MPF_REPLY_MORE if i < len(chunks) - 1 else 0
            self._send(HDR.pack(OFP13, T_MULTIPART_REPLY, 16 + len(body), xid)
                       + struct.pack("!HH4x", MP_FLOW, more) + body)


class _Link(asyncio.Protocol):
    def __init__(self, switch: StandinSwitch, lost: asyncio.Future):
        self.switch, self.lost = switch, lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.switch._transport = transport  # type: ignore[assignment]
        self.switch._buf.clear()
        self.switch._bundles.clear()
        self.switch.stats["connects"] += 1
        # HELLO with a version bitmap: OpenFlow 1.3 only
        self.switch._send(HDR.pack(OFP13, T_HELLO, 16, 0) + struct.pack("!HHI", 1, 8, 1 << OFP13))

    def data_received(self, data: bytes) -> None:
        self.switch.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.switch._transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class StandinOvsdbServer:
    """The Interface rows and the Open_vSwitch external_ids of one chassis, served as OVSDB JSON-RPC
    (`monitor` of Interface, `transact` select/mutate of Open_vSwitch, `echo`) on a unix socket."""

    def __init__(self, path: str):
        self.path = path
        self.interfaces: dict[str, dict[str, Any]] = {}  # uuid -> row (wire datums)
        self.by_name: dict[str, str] = {}  # name -> uuid
        self.external_ids: dict[str, str] = {}
        self._ofports = itertools.count(1)
        self.stats_updates = 0  # monitor updates sent
        self._monitors: list[tuple[asyncio.StreamWriter, Any]] = []
        self._server: asyncio.AbstractServer | None = None

    @property
    def remote(self) -> str:
        return f"unix:{self.path}"

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer, _ in self._monitors:
                writer.close()
            self._monitors.clear()
            await self._server.wait_closed()
            self._server = None

    # -- rows, as vswitchd and os-vif would make them ---------------------------
    def plug(self, name: str, external_ids: dict[str, str]) -> None:
        """Add (or replace) an Interface with an ofport of its own."""
        self.transact({name: external_ids})

    def unplug(self, name: str) -> None:
        self.transact({name: None})

    def transact(self, rows: dict[str, dict[str, str] | None]) -> None:
        """Interfaces added, changed (external_ids) or removed (None) in one transaction: one
        monitor update, as ovsdb-server sends for one transaction."""
        change: dict[str, Any] = {}
        for name, external_ids in rows.items():
            old = self.by_name.get(name)
            if external_ids is None:
                if old is not None:
                    del self.by_name[name]
                    change[old] = {"old": self.interfaces.pop(old)}
                continue
            row_uuid = old or str(uuid.uuid4())
            ofport = self.interfaces[old]["ofport"] if old else next(self._ofports)
            row = {"name": name, "ofport": ofport, "external_ids": ["map", sorted(external_ids.items())]}
            if old and self.interfaces[old] == row:
                continue
            self.interfaces[row_uuid] = row
            self.by_name[name] = row_uuid
            change[row_uuid] = {"new": row}
        if change:
            self._notify(change)

    def names(self) -> set[str]:
        return set(self.by_name)

    def _notify(self, change: dict[str, Any]) -> None:
        for writer, monitor_id in list(self._monitors):
            if writer.is_closing():
                self._monitors.remove((writer, monitor_id))
                continue
            writer.write(json.dumps({"id": None, "method": "update",
                                     "params": [monitor_id, {"Interface": change}]}).encode())
        self.stats_updates += 1

    # -- JSON-RPC ---------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        try:
            while data := await reader.read(65536):
                for message in framer.feed(data):
                    result = self._answer(message, writer)
                    if message.get("id") is not None:
                        writer.write(json.dumps({"id": message["id"], "result": result, "error": None}).encode())
        except (ConnectionError, ValueError) as exc:
            LOG.warning("stand-in OVSDB %s: %s", self.path, exc)
        finally:
            self._monitors = [(w, m) for w, m in self._monitors if w is not writer]
            writer.close()

    def _answer(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> Any:
        method, params = message.get("method"), message.get("params") or []
        if method == "echo":
            return params
        if method == "monitor":
            self._monitors.append((writer, params[1]))
            return {"Interface": {u: {"new": row} for u, row in self.interfaces.items()}}
        if method == "transact":
            return [self._operation(op) for op in params[1:]]
        raise ValueError(f"method {method!r} is not served by the stand-in")

    def _operation(self, op: dict[str, Any]) -> dict[str, Any]:
        if op.get("table") != "Open_vSwitch":
            raise ValueError(f"table {op.get('table')!r} is not served by the stand-in")
        if op["op"] == "select":
            return {"rows": [{"external_ids": ["map", sorted(self.external_ids.items())]}]}
        if op["op"] == "mutate":
            for column, mutator, value in op["mutations"]:
                if column != "external_ids":
                    raise ValueError(f"column {column!r}")
                if mutator == "delete":
                    for key in value[1]:
                        self.external_ids.pop(key, None)
                elif mutator == "insert":
                    for key, val in value[1]:
                        self.external_ids.setdefault(key, val)
            return {"count": 1}
        raise ValueError(f"op {op['op']!r} is not served by the stand-in")


class StandinOvsdb(Ovsdb):
    """The controller's Ovsdb (its own Interface monitor, reading the stand-in server) with the
    ovsdbapp configuration applied to the stand-in's rows instead."""

    def __init__(self, server: StandinOvsdbServer, switch: StandinSwitch, bridge: str = "br-int"):
        super().__init__(server.remote, bridge)
        self.server, self.switch = server, switch

    async def setup_bridge(self, of_target: str, datapath_type: str = "system") -> None:
        self.switch.connect(of_target)  # no datapath here: its type changes nothing

    async def ensure_tunnels(self, peers: dict[str, str], local_ip: str, tunnel_type: str = "geneve") -> None:
        wanted = {tunnel_port_name(peer): (peer, ip) for peer, ip in peers.items()}
        rows: dict[str, dict[str, str] | None] = {
            name: None for name in self.server.names() if name.startswith("dft-") and name not in wanted}
        rows.update({name: {"dfflow-peer": peer, "remote-ip": ip} for name, (peer, ip) in wanted.items()})
        self.server.transact(rows)
        self.stats["tunnel_changes"] += 1


class StandinConntrackSweeper(ConntrackSweeper):
    """The controller's conntrack sweeper, its `ovs-appctl` answered as the stand-in's vswitchd would: with
    no datapath it tracks no connection (an empty dump) and has none to delete. Without it each chassis
    forks an `ovs-appctl` that finds no vswitchd, and fails, when its start-up's arrival windows close
    (ARRIVAL_WINDOW after it connected: in a 1,000-chassis fleet, while the last chassis' moves are timed)."""

    @classmethod
    def replacing(cls, sweeper: ConntrackSweeper) -> "StandinConntrackSweeper":
        return cls(sweeper.policy, sweeper.stats, sweeper.record_error, (sweeper.appctl, sweeper.appctl_env))

    async def _run_appctl(self, *args: str) -> str:
        return ""
