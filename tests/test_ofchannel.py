"""dfflow.openflow (the OpenFlow channel) against a real ovs-vswitchd (and a few fake peers).

One Open vSwitch instance serves the whole module (br-int, netdev datapath, secure
fail mode, OpenFlow 1.3 + 1.4); every test starts its own OpenFlowServer on a free
port and points br-int's controller at it, so tests do not depend on each other.
Tests are plain functions running their body with asyncio.run (no pytest-asyncio
dependency).

The instance runs in a private network namespace: a netdev datapath creates kernel
tap devices (``ovs-netdev``, one per bridge and internal port), so two such
ovs-vswitchd in one namespace collide ("failed to open datapath ... No such
device") -- e.g. with another suite running at the same time.  The controller's
listening socket (and the junk clients' sockets) are created inside that
namespace (setns on the calling thread), so the switch really connects over TCP to
127.0.0.1 as in production.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import pytest
from os_ken.ofproto import ofproto_parser

from dfflow import openflow as oc
from dfflow.openflow import OF13, OF14, OFP13, OFP14, OpenFlowServer
from dfflow.sandbox.ovsproc import OvsInstance, missing_binaries

p13 = OF13.ofproto_parser
ofp13 = OF13.ofproto

# A gratuitous ARP from 00:00:00:00:00:01 for 192.168.0.1 (what a migrated VM sends).
GARP = bytes.fromhex("ffffffffffff000000000001080600010800060400010000000000"
                     "01c0a80001000000000000c0a80001")
TEST_PORT = 5  # ofport of the internal port p1


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(netns: str):
    """Switch the calling thread into ``netns`` (sockets created meanwhile stay in it)."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{netns}") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def ns_listener(netns: str, port: int = 0) -> socket.socket:
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
    sock.setblocking(False)
    return sock


async def ns_open_connection(netns: str, port: int):
    with in_netns(netns):
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.setblocking(False)
    return await asyncio.open_connection(sock=sock)


def run(coro: Any, timeout: float = 30.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def ovs():
    if os.geteuid() != 0:
        pytest.skip("needs root to run ovs-vswitchd")
    if missing_binaries():
        pytest.skip(f"Open vSwitch binaries missing: {missing_binaries()}")
    netns = f"ofchannel-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    with tempfile.TemporaryDirectory(prefix="ofchannel-ovs-") as rundir:
        inst = OvsInstance(rundir, netns=netns)
        try:
            subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
            inst.start()
            inst.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev",
                       "fail_mode=secure", "protocols=OpenFlow13,OpenFlow14")
            inst.vsctl("add-port", "br-int", "p1", "--", "set", "interface", "p1", "type=internal",
                       f"ofport_request={TEST_PORT}")
            yield inst
        finally:
            inst.stop()
            inst.wait_stopped()
            subprocess.run(["ip", "netns", "del", netns], check=False)


@dataclass
class Events:
    connects: list = field(default_factory=list)
    disconnects: list = field(default_factory=list)
    packet_ins: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_connect(self, dp):
        self.connects.append(dp)
        self.changed.set()

    def on_disconnect(self, dp, exc):
        assert isinstance(exc, oc.ConnectionLost)
        self.disconnects.append(dp)
        self.changed.set()

    async def on_packet_in(self, dp, msg):  # coroutine callbacks are supported too
        self.packet_ins.append(msg)
        self.changed.set()

    def on_message(self, dp, msg):
        self.messages.append(msg)

    async def wait(self, pred, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


def make_server(ev: Events, port: int = 0, **kw) -> OpenFlowServer:
    kw.setdefault("handshake_timeout", 5.0)
    kw.setdefault("request_timeout", 10.0)
    return OpenFlowServer("127.0.0.1", port, on_connect=ev.on_connect, on_disconnect=ev.on_disconnect,
                          on_packet_in=ev.on_packet_in, on_message=ev.on_message, **kw)


async def point_bridge(ovs: OvsInstance, port: int, probe_ms: int = 5000) -> None:
    await asyncio.to_thread(
        ovs.vsctl, "set-controller", "br-int", f"tcp:127.0.0.1:{port}", "--",
        "set", "controller", "br-int", "max_backoff=1000", f"inactivity_probe={probe_ms}")


@contextlib.asynccontextmanager
async def channel(ovs: OvsInstance, probe_ms: int = 5000,
                  **kw) -> AsyncIterator[tuple[OpenFlowServer, oc.Datapath, Events]]:
    """A started server with br-int connected to it and br-int's tables empty."""
    ev = Events()
    server = make_server(ev, sock=ns_listener(ovs.netns), **kw)
    await server.start()
    try:
        await point_bridge(ovs, server.port, probe_ms)
        dp = await server.wait_for_datapath(timeout=10)
        await asyncio.to_thread(ovs.ofctl, "del-flows", "br-int")
        yield server, dp, ev
    finally:
        await server.stop()


def ofctl_flows(ovs: OvsInstance) -> list[str]:
    out = ovs.ofctl("dump-flows", "--no-names", "--no-stats", "br-int")
    return sorted(line.strip() for line in out.splitlines() if "priority=" in line)


def flow(dp: Any, prio: int, out: int, cookie: int = 0x1, table: int = 0) -> Any:
    p = dp.ofproto_parser
    return p.OFPFlowMod(dp, cookie=cookie, table_id=table, priority=prio, match=p.OFPMatch(in_port=prio),
                        instructions=[p.OFPInstructionActions(dp.ofproto.OFPIT_APPLY_ACTIONS,
                                                              [p.OFPActionOutput(out)])])


def flow_line(prio: int, out: int, cookie: int = 0x1) -> str:
    return f"cookie={cookie:#x}, priority={prio},in_port={prio} actions=output:{out}"


def pack_raw(msgs: list, first_xid: int) -> bytes:
    """What a packer outside the channel would do: number messages itself, one buffer."""
    buf = bytearray()
    for i, m in enumerate(msgs):
        m.set_xid(first_xid + i)
        m.serialize()
        buf += m.buf
    return bytes(buf)


def dpid_of(ovs: OvsInstance) -> int:
    return int(ovs.vsctl("get", "bridge", "br-int", "datapath_id").strip().strip('"'), 16)


# --------------------------------------------------------------------------- a fake switch

class FakeSwitch:
    """Just enough of a switch to pass the handshake; then answers what it is told to."""

    def __init__(self, dpid: int = 0xFEED) -> None:
        self.dpid = dpid
        self.answer_barrier = True
        self.answer_echo = True
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.received: list[tuple[int, int, bytes]] = []  # (type, xid, body)

    async def connect(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(struct.pack("!BBHI", OFP13, 0, 8, 1))  # HELLO without bitmap
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        assert self.reader and self.writer
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                hdr = await self.reader.readexactly(8)
                version, mtype, length, xid = struct.unpack("!BBHI", hdr)
                body = await self.reader.readexactly(length - 8)
                self.received.append((mtype, xid, body))
                if mtype == ofp13.OFPT_FEATURES_REQUEST:
                    self.writer.write(struct.pack("!BBHIQIBB2xII", OFP13, ofp13.OFPT_FEATURES_REPLY, 32, xid,
                                                  self.dpid, 0, 254, 0, 0, 0))
                elif mtype == ofp13.OFPT_BARRIER_REQUEST and self.answer_barrier:
                    self.writer.write(struct.pack("!BBHI", OFP13, ofp13.OFPT_BARRIER_REPLY, 8, xid))
                elif mtype == ofp13.OFPT_ECHO_REQUEST and self.answer_echo:
                    self.writer.write(struct.pack("!BBHI", OFP13, ofp13.OFPT_ECHO_REPLY, length, xid) + body)

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# --------------------------------------------------------------------------- tests without OVS

@pytest.mark.parametrize("proto", [OF13, OF14], ids=["of13-onf", "of14"])
def test_wrap_bundle_adds_matches_os_ken(proto):
    """Our byte-level bundle framing equals os-ken's ONFBundleAddMsg / OFPBundleAddMsg."""
    p, ofp = proto.ofproto_parser, proto.ofproto
    inner = [p.OFPFlowMod(proto, cookie=i, priority=i, match=p.OFPMatch(in_port=i), instructions=[])
             for i in (1, 2)]
    raw = pack_raw(inner, 1000)
    wrapped, xids = oc.wrap_bundle_adds(raw, ofp.OFP_VERSION, 7, 3)
    assert xids == [1000, 1001]
    add_cls = p.ONFBundleAddMsg if proto is OF13 else p.OFPBundleAddMsg
    expected = bytearray()
    for i, xid in zip((1, 2), xids):
        m = add_cls(proto, 7, 3, p.OFPFlowMod(proto, cookie=i, priority=i, match=p.OFPMatch(in_port=i),
                                              instructions=[]), [])
        m.set_xid(xid)
        m.serialize()
        expected += m.buf
    assert bytes(wrapped) == bytes(expected)


@pytest.mark.parametrize("proto", [OF13, OF14], ids=["of13-onf", "of14"])
def test_barrier_and_bundle_control_replies_are_read_from_their_header_as_os_ken_reads_them(proto):
    """What the sender waits on per bundle (barrier and bundle control replies) is read without
    os-ken, and says what os-ken's own parse of the same bytes says; other messages are left to os-ken."""
    from dfflow.openflow.datapath import BundleCtrlReply, bare_reply
    p, ofp = proto.ofproto_parser, proto.ofproto
    version = ofp.OFP_VERSION
    barrier = p.OFPBarrierReply(proto)
    barrier.set_xid(9)
    barrier.serialize()
    assert bare_reply(version, ofp.OFPT_BARRIER_REPLY, bytes(barrier.buf)) == (True, None)
    ctrl_cls = p.ONFBundleCtrlMsg if proto is OF13 else p.OFPBundleCtrlMsg
    for kind in ("OPEN_REPLY", "COMMIT_REPLY", "DISCARD_REPLY"):
        type_ = getattr(ofp, ("ONF_BCT_" if proto is OF13 else "OFPBCT_") + kind)
        reply = ctrl_cls(proto, 0x01020304, type_, 3, [])
        reply.set_xid(10)
        reply.serialize()
        frame = bytes(reply.buf)
        _, mtype, _, _ = struct.unpack_from("!BBHI", frame)
        parsed = ofproto_parser.msg(proto, version, mtype, len(frame), 10, frame)
        assert bare_reply(version, mtype, frame) == (True, BundleCtrlReply(parsed.bundle_id, parsed.type,
                                                                            parsed.flags))
        assert (parsed.bundle_id, parsed.type, parsed.flags) == (0x01020304, type_, 3)
    echo = p.OFPEchoReply(proto, b"x")
    echo.serialize()
    assert bare_reply(version, ofp.OFPT_ECHO_REPLY, bytes(echo.buf)) == (False, None)
    if proto is OF13:  # an experimenter message that is not a bundle control: os-ken reads it
        other = p.OFPExperimenter(proto, 0x2320, 7, b"\0" * 8)
        other.serialize()
        assert bare_reply(version, ofp.OFPT_EXPERIMENTER, bytes(other.buf)) == (False, None)
        short = bytes(other.buf[:12])
        assert bare_reply(version, ofp.OFPT_EXPERIMENTER, short) == (False, None)


def test_raw_buffer_validation_and_xids():
    raw = pack_raw([p13.OFPBarrierRequest(OF13) for _ in range(3)], oc.XID_RAW_BASE)
    assert [f[3] for f in oc.iter_frames(raw, OFP13)] == [oc.XID_RAW_BASE + i for i in range(3)]
    with pytest.raises(ValueError):
        list(oc.iter_frames(raw[:-1], OFP13))
    with pytest.raises(ValueError):
        list(oc.iter_frames(raw, OFP14))
    alloc = oc.XidAllocator()
    first = alloc.alloc(5000)
    assert alloc.alloc() == first + 5000
    assert first + 5000 < oc.XID_RAW_BASE
    wrap = oc.XidAllocator(oc.XID_CHANNEL_MAX - 1)
    assert wrap.alloc(3) == 1  # a block never straddles into the raw range


def test_dead_peer_detected_by_our_echo_and_inflight_fails():
    """A peer that stops answering is dropped by our echo; a peer that drops fails requests."""
    async def body():
        ev = Events()
        server = make_server(ev, echo_interval=0.2, echo_timeout=0.3)
        await server.start()
        try:
            sw = FakeSwitch(dpid=0xABC)
            await sw.connect(server.port)
            dp = await server.wait_for_datapath(0xABC, timeout=5)
            assert await dp.echo(timeout=2) >= 0
            # the peer's echo request is answered with its xid and payload
            sw.send(struct.pack("!BBHI", OFP13, ofp13.OFPT_ECHO_REQUEST, 13, 77) + b"hello")
            async with asyncio.timeout(2):
                while (ofp13.OFPT_ECHO_REPLY, 77, b"hello") not in sw.received:
                    await asyncio.sleep(0.01)
            # peer goes silent: our keepalive echo times out, connection dropped
            sw.answer_echo = False
            await ev.wait(lambda: ev.disconnects, timeout=3)
            assert server.stats["echo_timeouts"] == 1 and not dp.is_connected
            await sw.close()

            # in-flight barrier when the peer drops -> ConnectionLost
            sw2 = FakeSwitch(dpid=0xDEF)
            await sw2.connect(server.port)
            dp2 = await server.wait_for_datapath(0xDEF, timeout=5)
            sw2.answer_barrier = False
            barrier = asyncio.create_task(dp2.barrier())
            await asyncio.sleep(0.05)
            assert dp2.in_flight >= 1  # (our keepalive echo may be in flight too)
            await sw2.close()
            with pytest.raises(oc.ConnectionLost):
                await barrier
            assert dp2.in_flight == 0
            with pytest.raises(oc.ConnectionLost):  # and new requests fail at once
                await dp2.barrier()
            assert server.stats["errors"] == 0
        finally:
            await server.stop()
    run(body())


def test_same_dpid_reconnecting_replaces_the_old_connection():
    """A switch reconnecting before we noticed its old connection died: the old one is
    dropped (its requests fail, on_disconnect) and on_connect fires for the new one."""
    async def body():
        ev = Events()
        server = make_server(ev, echo_interval=0)
        await server.start()
        try:
            old_sw, new_sw = FakeSwitch(dpid=0x42), FakeSwitch(dpid=0x42)
            await old_sw.connect(server.port)
            old = await server.wait_for_datapath(0x42, timeout=5)
            old_sw.answer_barrier = False
            pending = asyncio.create_task(old.barrier())
            await asyncio.sleep(0.05)
            await new_sw.connect(server.port)
            await ev.wait(lambda: len(ev.connects) == 2, timeout=5)
            new = ev.connects[1]
            assert new is not old and ev.disconnects == [old] and server.datapaths == {0x42: new}
            with pytest.raises(oc.ConnectionLost):
                await pending
            await new.barrier()
            await old_sw.close()
            await new_sw.close()
        finally:
            await server.stop()
    run(body())


def test_garbage_peers_without_switch(caplog):
    """Non-OpenFlow peers: logged, counted, disconnected; server keeps serving."""
    async def body():
        ev = Events()
        server = make_server(ev, handshake_timeout=0.5)
        await server.start()
        try:
            async def junk(data: bytes) -> bytes:
                r, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.write(data)
                got = await asyncio.wait_for(r.read(), 3)  # until the server closes
                w.close()
                return got
            hello = struct.pack("!BBHI", OFP13, 0, 8, 1)
            await junk(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")                    # not OpenFlow
            await junk(hello + struct.pack("!BBHI", OFP13, 2, 4, 9))           # length < 8
            await junk(hello + struct.pack("!BBHI", 0x01, 2, 8, 9))            # wrong version
            await junk(hello + struct.pack("!BBHI", OFP13, ofp13.OFPT_PACKET_IN, 12, 9) + b"\0" * 4)  # bad body
            await junk(b"\x04\x00")                                            # silent: handshake timeout
            assert server.stats["protocol_errors"] == 3
            assert server.stats["parse_errors"] == 1
            assert server.stats["handshake_failures"] == 1
            assert not server.connections and not ev.connects
            sw = FakeSwitch(dpid=0x77)
            await sw.connect(server.port)
            dp = await server.wait_for_datapath(0x77, timeout=5)
            await dp.barrier()
            await sw.close()
        finally:
            await server.stop()
    with caplog.at_level(logging.WARNING, logger="dfflow.openflow"):
        run(body())
    assert any("protocol error" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- tests with OVS

@pytest.mark.ovs
def test_handshake(ovs):
    async def body():
        async with channel(ovs) as (server, dp, ev):
            assert ev.connects == [dp]
            assert dp.id == dpid_of(ovs)
            assert dp.version == OFP13 and dp.ofproto is ofp13
            assert dp.features.n_tables >= 1
            assert server.datapaths == {dp.id: dp}
            assert await dp.echo() < 1.0
            assert server.stats["handshakes"] == 1 and server.stats["errors"] == 0
    run(body())


@pytest.mark.ovs
def test_unix_socket_listener(ovs):
    """OVS target unix:PATH (crosses network namespaces without a TCP port)."""
    async def body():
        ev = Events()
        path = os.path.join(ovs.rundir, "of.sock")  # OVS only accepts unix controllers in its rundir
        server = OpenFlowServer(path=path, on_connect=ev.on_connect, on_disconnect=ev.on_disconnect)
        await server.start()
        try:
            await asyncio.to_thread(ovs.vsctl, "set-controller", "br-int", f"unix:{path}")
            dp = await server.wait_for_datapath(timeout=10)
            assert dp.id == dpid_of(ovs)
            await dp.barrier()
        finally:
            await server.stop()
        assert not os.path.exists(path) and ev.disconnects == [dp]
    run(body())


@pytest.mark.ovs
def test_flow_mods_objects_raw_and_dump(ovs):
    async def body():
        async with channel(ovs) as (server, dp, ev):
            await dp.send_flow_mods([flow(dp, 10, 1), flow(dp, 11, 2)])          # os-ken objects
            raw = pack_raw([flow(OF13, 20, 3, cookie=0x2), flow(OF13, 21, 4, cookie=0x2)],
                           oc.XID_RAW_BASE)                                        # reserved range
            dp.send_raw(raw)
            first = dp.xids.alloc(1)                                               # allocator block
            dp.send_raw(pack_raw([flow(OF13, 30, 5, cookie=0x3)], first))
            await dp.barrier()
            expected = sorted([flow_line(10, 1), flow_line(11, 2), flow_line(20, 3, 2), flow_line(21, 4, 2),
                               flow_line(30, 5, 3)])
            assert await asyncio.to_thread(ofctl_flows, ovs) == expected

            stats = await dp.dump_flows()
            assert sorted((s.cookie, s.priority) for s in stats) == [
                (1, 10), (1, 11), (2, 20), (2, 21), (3, 30)]
            only2 = await dp.dump_flows(cookie=0x2, cookie_mask=0xFFFFFFFFFFFFFFFF)
            assert sorted(s.priority for s in only2) == [20, 21]
            assert only2[0].instructions[0].actions[0].port in (3, 4)
            assert await dp.dump_flows(table=1) == []

            # raw buffer through send_flow_mods: errors are attributed; no atomicity
            bad = pack_raw([flow(OF13, 40, 1), p13.OFPFlowMod(
                OF13, priority=41, table_id=3, match=p13.OFPMatch(in_port=41),
                instructions=[p13.OFPInstructionGotoTable(1)])], oc.XID_RAW_BASE + 100)
            with pytest.raises(oc.FlowModError) as ei:
                await dp.send_flow_mods(bad)
            assert (ei.value.type, ei.value.code, ei.value.xid) == (
                ofp13.OFPET_BAD_INSTRUCTION, ofp13.OFPBIC_BAD_TABLE_ID, oc.XID_RAW_BASE + 101)
            assert flow_line(40, 1) in await asyncio.to_thread(ofctl_flows, ovs)  # the good one stayed
            assert server.stats["errors"] == 0 and server.stats["unsolicited_errors"] == 0
    run(body())


@pytest.mark.ovs
def test_many_flows_multipart_continuation(ovs):
    n = 5000
    async def body():
        async with channel(ovs) as (server, dp, ev):
            raw = pack_raw([flow(OF13, 1000 + i, 1 + i % 7, cookie=0x5) for i in range(n)], oc.XID_RAW_BASE)
            t0 = time.monotonic()
            await dp.send_flow_mods(raw)
            install = time.monotonic() - t0
            agg = await asyncio.to_thread(ovs.ofctl, "dump-aggregate", "br-int")
            assert f"flow_count={n}" in agg
            req = p13.OFPFlowStatsRequest(dp, 0, ofp13.OFPTT_ALL, ofp13.OFPP_ANY, ofp13.OFPG_ANY,
                                          0, 0, p13.OFPMatch())
            replies = await dp.request_multipart(req)
            assert len(replies) > 1                     # OVS had to continue (OFPMPF_REPLY_MORE)
            assert all(r.flags & ofp13.OFPMPF_REPLY_MORE for r in replies[:-1])
            assert not replies[-1].flags & ofp13.OFPMPF_REPLY_MORE
            stats = await dp.dump_flows(cookie=0x5, cookie_mask=0xFFFF)
            assert sorted(s.priority for s in stats) == list(range(1000, 1000 + n))
            # the same through a bundle, replacing them all atomically
            delete_all = p13.OFPFlowMod(dp, command=ofp13.OFPFC_DELETE, table_id=ofp13.OFPTT_ALL,
                                        out_port=ofp13.OFPP_ANY, out_group=ofp13.OFPG_ANY)
            raw2 = pack_raw([delete_all] + [flow(OF13, 1000 + i, 1 + i % 5, cookie=0x6) for i in range(n)],
                            oc.XID_RAW_BASE + n)
            t0 = time.monotonic()
            await dp.send_bundle(raw2)
            bundle = time.monotonic() - t0
            assert sorted(s.priority for s in await dp.dump_flows(cookie=0x6, cookie_mask=0xFFFF)) == list(
                range(1000, 1000 + n))
            assert await dp.dump_flows(cookie=0x5, cookie_mask=0xFFFF) == []
            print(f"{n} flow_mods + barrier: {install * 1000:.0f} ms; as a bundle: {bundle * 1000:.0f} ms; "
                  f"dump: {len(replies)} replies")
    run(body())


@pytest.mark.ovs
@pytest.mark.parametrize("versions", [(OFP13,), (OFP13, OFP14)], ids=["of13-onf-bundle", "of14-bundle"])
def test_bundle_all_or_nothing(ovs, versions):
    async def body():
        async with channel(ovs, versions=versions) as (server, dp, ev):
            assert dp.version == max(versions)
            p, ofp = dp.ofproto_parser, dp.ofproto
            await dp.send_flow_mods([flow(dp, 5, 1)])               # pre-existing

            def delete_5():
                return p.OFPFlowMod(dp, command=ofp.OFPFC_DELETE_STRICT, priority=5, table_id=0,
                                    out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch(in_port=5))

            # 1) invalid at add time: goto a table that is not after this one
            bad_goto = p.OFPFlowMod(dp, priority=7, table_id=2, match=p.OFPMatch(in_port=7),
                                    instructions=[p.OFPInstructionGotoTable(1)])
            msgs = [flow(dp, 6, 1), delete_5(), bad_goto, flow(dp, 8, 1)]
            with pytest.raises(oc.BundleError) as ei:
                await dp.send_bundle(msgs)
            e = ei.value
            assert (e.type, e.code, e.xid) == (ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_TABLE_ID, bad_goto.xid)
            assert e.stage == "add" and e.inner_request_type == ofp.OFPT_FLOW_MOD
            assert await asyncio.to_thread(ofctl_flows, ovs) == [flow_line(5, 1)]

            # 2) invalid only at commit time: output to a group that does not exist
            bad_group = p.OFPFlowMod(dp, priority=9, match=p.OFPMatch(in_port=9), instructions=[
                p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [p.OFPActionGroup(99)])])
            raw = pack_raw([flow(dp, 6, 1), delete_5(), bad_group], oc.XID_RAW_BASE + 10)
            with pytest.raises(oc.BundleError) as ei:
                await dp.send_bundle(raw)
            e = ei.value
            assert (e.type, e.code, e.xid) == (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_GROUP, oc.XID_RAW_BASE + 12)
            assert e.stage == "commit" and len(e.errors) == 2  # + the commit's own MSG_FAILED
            assert await asyncio.to_thread(ofctl_flows, ovs) == [flow_line(5, 1)]

            # 3) a valid bundle applies everything, including the delete
            await dp.send_bundle([flow(dp, 6, 1), delete_5(), flow(dp, 8, 2)])
            assert await asyncio.to_thread(ofctl_flows, ovs) == sorted([flow_line(6, 1), flow_line(8, 2)])
            assert server.stats["bundles"] == 3 and server.stats["bundles_failed"] == 2
            assert server.stats["unsolicited_errors"] == 0 and server.stats["errors"] == 0
            assert not ev.messages  # open/discard replies were all consumed
    run(body())


@pytest.mark.ovs
def test_a_pipelined_bundle_commits_in_one_round_trip_and_reports_a_left_out_add(ovs):
    async def body():
        async with channel(ovs) as (server, dp, ev):
            p, ofp = dp.ofproto_parser, dp.ofproto
            await dp.send_flow_mods([flow(dp, 5, 1)])
            delete_5 = p.OFPFlowMod(dp, command=ofp.OFPFC_DELETE_STRICT, priority=5, table_id=0,
                                    out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=p.OFPMatch(in_port=5))
            await dp.send_bundle([flow(dp, 6, 1), delete_5, flow(dp, 8, 2)], pipelined=True)
            assert await asyncio.to_thread(ofctl_flows, ovs) == sorted([flow_line(6, 1), flow_line(8, 2)])
            # a rejected add is left out, the rest is committed, and the caller is told (it reconciles)
            bad_goto = p.OFPFlowMod(dp, priority=7, table_id=2, match=p.OFPMatch(in_port=7),
                                    instructions=[p.OFPInstructionGotoTable(1)])
            with pytest.raises(oc.BundleError) as ei:
                await dp.send_bundle([flow(dp, 9, 3), bad_goto], pipelined=True)
            assert ei.value.stage == "pipelined" and ei.value.xid == bad_goto.xid
            assert await asyncio.to_thread(ofctl_flows, ovs) == sorted([flow_line(6, 1), flow_line(8, 2),
                                                                        flow_line(9, 3)])
            assert server.stats["bundles_failed"] == 1 and server.stats["unsolicited_errors"] == 0
            assert not ev.messages
    run(body())


@pytest.mark.ovs
def test_ovs_leaves_a_bad_add_out_of_a_pipelined_bundle(ovs):
    """The OVS behaviour that makes send_bundle check the adds before committing:
    open + adds + commit in one go commits the good adds although one add failed."""
    async def body():
        async with channel(ovs) as (server, dp, ev):
            bad = p13.OFPFlowMod(OF13, priority=7, table_id=2, match=p13.OFPMatch(in_port=7),
                                 instructions=[p13.OFPInstructionGotoTable(1)])
            inner = pack_raw([flow(OF13, 6, 1), bad], oc.XID_RAW_BASE)
            adds, _ = oc.wrap_bundle_adds(inner, OFP13, 99, ofp13.ONF_BF_ATOMIC | ofp13.ONF_BF_ORDERED)
            ctrl = [p13.ONFBundleCtrlMsg(OF13, 99, t, ofp13.ONF_BF_ATOMIC | ofp13.ONF_BF_ORDERED, [])
                    for t in (ofp13.ONF_BCT_OPEN_REQUEST, ofp13.ONF_BCT_COMMIT_REQUEST)]
            opened, committed = pack_raw(ctrl[:1], oc.XID_RAW_BASE + 10), pack_raw(ctrl[1:], oc.XID_RAW_BASE + 11)
            dp.send_raw(opened + adds + committed)
            await dp.barrier()
            assert await asyncio.to_thread(ofctl_flows, ovs) == [flow_line(6, 1)]
            assert server.stats["unsolicited_errors"] == 1  # the bad add's error (nobody waited)
    run(body())


@pytest.mark.ovs
def test_switch_echo_keeps_connection_up(ovs):
    async def body():
        # Our own keepalive off, so the link goes idle.  OVS clamps inactivity_probe to at
        # least 5 s: it sends ECHO_REQUEST after 5 s of silence and drops the connection if
        # nothing arrives within another 5 s.  So: wait for its probe, then 5.5 s more.
        async with channel(ovs, probe_ms=1000, echo_interval=0) as (server, dp, ev):
            async with asyncio.timeout(8):
                while not dp.stats["echo_requests"]:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(5.5)
            assert dp.is_connected and ev.connects == [dp] and not ev.disconnects
            assert server.stats["disconnects"] == 0
            assert await dp.echo(b"ping") < 1.0   # and OVS answers ours (keepalive: fake-switch test)
            await dp.barrier()
    run(body())


@pytest.mark.ovs
def test_reconnect(ovs):
    async def body():
        ev = Events()
        server = make_server(ev, sock=ns_listener(ovs.netns))
        await server.start()
        port = server.port
        try:
            await point_bridge(ovs, port)
            dp1 = await server.wait_for_datapath(timeout=10)
            await asyncio.to_thread(ovs.ofctl, "del-flows", "br-int")
            await dp1.send_flow_mods([flow(dp1, 1, 2, cookie=0x9)])
            # a barrier in flight when the connection drops fails with ConnectionLost
            dp1.send_raw(pack_raw([flow(OF13, 100 + i, 1) for i in range(2000)], oc.XID_RAW_BASE))
            barrier = asyncio.create_task(dp1.barrier())
            await asyncio.sleep(0)
            assert dp1.in_flight == 1
            await server.stop()
            with pytest.raises(oc.ConnectionLost):
                await barrier
            assert ev.disconnects == [dp1]

            # a new server on the same address: OVS reconnects by itself, on_connect again
            server = make_server(ev, sock=ns_listener(ovs.netns, port))
            await server.start()
            dp2 = await server.wait_for_datapath(timeout=5)
            assert dp2 is not dp1 and dp2.id == dp1.id and len(ev.connects) == 2
            # the flows survive a controller restart (the datapath keeps forwarding)
            assert [s.priority for s in await dp2.dump_flows(cookie=0x9, cookie_mask=0xFFFF)] == [1]

            # the switch side drops it: del-controller / set-controller.  NB: OVS flushes the
            # flow table when a bridge goes from "has controllers" to "none" (connmgr), so
            # never del-controller a live chassis; retarget with a single set-controller.
            await asyncio.to_thread(ovs.vsctl, "del-controller", "br-int")
            await ev.wait(lambda: len(ev.disconnects) == 2, timeout=5)
            assert not dp2.is_connected and server.datapaths == {}
            await point_bridge(ovs, port)
            await ev.wait(lambda: len(ev.connects) == 3, timeout=5)
            dp3 = ev.connects[-1]
            assert dp3.id == dp1.id and dp3.is_connected
            assert await dp3.dump_flows() == []  # flushed by del-controller, see above
            await dp3.send_flow_mods([flow(dp3, 1, 2, cookie=0x9)])
            assert [s.priority for s in await dp3.dump_flows(cookie=0x9, cookie_mask=0xFFFF)] == [1]
            assert server.stats["errors"] == 0
        finally:
            await server.stop()
            await asyncio.to_thread(ovs.ofctl, "del-flows", "br-int")
    run(body())


@pytest.mark.ovs
def test_garbage_client_does_not_disturb_switch(ovs, caplog):
    async def body():
        async with channel(ovs) as (server, dp, ev):
            r, w = await ns_open_connection(ovs.netns, server.port)
            w.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64))  # a TLS ClientHello
            assert (await asyncio.wait_for(r.read(), 3))[:2] == bytes([OFP13, 0])  # our HELLO, then EOF
            w.close()
            r, w = await ns_open_connection(ovs.netns, server.port)
            w.write(struct.pack("!BBHI", OFP13, 0, 8, 1) + struct.pack("!BBHI", OFP13, 6, 9, 2) + b"x")
            assert (await asyncio.wait_for(r.read(), 3))[:2] == bytes([OFP13, 0])  # our HELLO, then EOF
            w.close()
            await asyncio.sleep(0.1)
            assert server.stats["protocol_errors"] + server.stats["parse_errors"] == 2
            assert dp.is_connected and server.connections == {dp} and ev.connects == [dp]
            await dp.send_flow_mods([flow(dp, 3, 1)])
            assert await asyncio.to_thread(ofctl_flows, ovs) == [flow_line(3, 1)]
    with caplog.at_level(logging.WARNING, logger="dfflow.openflow"):
        run(body())


@pytest.mark.ovs
def test_packet_in(ovs, caplog):
    async def body():
        async with channel(ovs) as (server, dp, ev):
            p, ofp = dp.ofproto_parser, dp.ofproto
            to_ctrl = p.OFPFlowMod(dp, priority=100, match=p.OFPMatch(eth_type=0x0806), instructions=[
                p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                        [p.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])])
            await dp.send_bundle([to_ctrl])
            await asyncio.to_thread(ovs.ofctl, "packet-out", "br-int",
                                    f"in_port={TEST_PORT} packet={GARP.hex()} actions=table")
            await ev.wait(lambda: ev.packet_ins, timeout=5)
            pin = ev.packet_ins[0]
            assert pin.match["in_port"] == TEST_PORT
            assert bytes(pin.data) == GARP
            assert pin.reason == ofp.OFPR_ACTION and pin.buffer_id == ofp.OFP_NO_BUFFER

            # a failing handler is logged with its traceback and counted, never silent
            def boom(dp_, msg):
                raise RuntimeError("handler bug")
            server.on_packet_in = boom
            out = p.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=TEST_PORT,
                                 actions=[p.OFPActionOutput(ofp.OFPP_TABLE)], data=GARP)
            dp.send_msg(out)
            await dp.barrier()
            async with asyncio.timeout(5):
                while server.stats["errors"] < 1:
                    await asyncio.sleep(0.01)
            assert dp.stats["errors"] == 1 and server.stats["packet_in"] == 2
            assert dp.is_connected
    with caplog.at_level(logging.ERROR, logger="dfflow.openflow"):
        run(body())
    assert any(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in caplog.records)


def test_a_bundles_xid_block_collects_the_errors_of_its_xids_only():
    """PlanBundle.frame_bundle numbers a bundle's adds from one block (an XidBlock, not a range made of
    Python ints per bundle): the channel's error sinks take it as one entry."""
    from dfflow.openflow.datapath import _ErrorSink, _ErrorSinks
    block = oc.XidBlock(5, 9)
    assert list(block) == [5, 6, 7, 8] and len(block) == 4 and 7 in block and 9 not in block
    sinks, sink = _ErrorSinks(), _ErrorSink()
    sinks.add(block, sink)
    assert [x for x in range(3, 11) if sinks.get(x) is sink] == [5, 6, 7, 8]
    sinks.remove(oc.XidBlock(5, 9), sink)
    assert sinks.get(6) is None
