"""Our OVSDB JSON-RPC: framing whatever the split, bad bytes refused by name, and the Interface
monitor against a real ovsdb-server, across a restart of it (rows deleted while it was away)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.interfaces import InterfaceTracker
from dfflow.ovsdb.monitor import InterfaceMonitor, iface_update
from dfflow.ovsdb.jsonrpc import Framer, JsonRpc, OvsdbProtocolError, datum
from dfflow.sandbox.ovsproc import OVS_SCHEMA, missing_binaries

json_text = st.text(alphabet=st.sampled_from('ab{}[]"\\/ é\n\t:,'), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12)
messages = st.lists(st.dictionaries(json_text, json_values, min_size=1, max_size=4), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.integers(1, 400), max_size=12), st.sampled_from(["", "\n", " \r\n "]))
def test_the_framer_yields_the_messages_however_the_bytes_are_split(sent, cuts, separator):
    stream = separator.join(json.dumps(m, ensure_ascii=False) for m in sent).encode()
    framer, got, start = Framer(), [], 0
    for cut in sorted({c for c in cuts if c < len(stream)}) + [len(stream)]:
        got += list(framer.feed(stream[start:cut]))
        start = cut
    assert got == sent


@pytest.mark.parametrize("garbage, says", [
    (b"hello", "expected '{'"),
    (b'"a string"', "expected '{'"),
    (b"}", "expected '{'"),
    (b"[1, 2]", "expected '{'"),
    (b'{"id": 1} trailing', "expected '{'"),
    (b'{"id": \\u}', "stray escape"),
    (b'{"id": 1, }', "not JSON"),
])
def test_bytes_that_are_not_ovsdb_json_rpc_are_refused_naming_what_was_wrong(garbage, says):
    with pytest.raises(OvsdbProtocolError, match="OVSDB message") as err:
        list(Framer().feed(garbage))
    assert says in str(err.value)


def test_a_message_larger_than_the_limit_is_refused():
    framer = Framer(max_message=1000)
    assert list(framer.feed(b'{"id": 1, "result": "' + b"x" * 900)) == []
    with pytest.raises(OvsdbProtocolError, match="larger than 1000 bytes"):
        list(framer.feed(b"x" * 200))


def test_datums_decode_as_python_values():
    assert datum(["map", [["iface-id", "p1"], ["attached-mac", "fa:16:3e:00:00:01"]]]) == {
        "iface-id": "p1", "attached-mac": "fa:16:3e:00:00:01"}
    assert datum(["set", []]) is None
    assert datum(["set", [7]]) == 7
    assert datum(["set", [1, 2]]) == [1, 2]
    assert datum(["uuid", "5e0d-..."]) == "5e0d-..."
    assert datum(3) == 3 and datum("tap1") == "tap1"


def test_an_interface_row_that_is_not_one_is_refused_naming_the_column():
    with pytest.raises(OvsdbProtocolError, match="name"):
        iface_update({"name": ["set", []]}, False, 0.0)
    with pytest.raises(OvsdbProtocolError, match="external_ids"):
        iface_update({"name": "tap1", "external_ids": 5}, False, 0.0)
    row = iface_update({"name": "tap1", "ofport": -1, "external_ids": ["map", [["iface-id", "p1"]]]}, False, 1.0)
    assert row.ofport is None and row.iface_id == "p1"  # -1: a failed interface is no VIF


# -- against a real ovsdb-server ---------------------------------------------------------------

class OvsdbServer:
    """A bare ovsdb-server with the Open_vSwitch schema (no ovs-vswitchd: ofports are set by hand)."""

    def __init__(self, rundir: str):
        self.rundir = rundir
        self.db = os.path.join(rundir, "conf.db")
        self.sock = os.path.join(rundir, "db.sock")
        self.pidfile = os.path.join(rundir, "ovsdb-server.pid")
        subprocess.run(["ovsdb-tool", "create", self.db, OVS_SCHEMA], check=True)

    @property
    def remote(self) -> str:
        return f"unix:{self.sock}"

    def start(self) -> None:
        subprocess.run(["ovsdb-server", self.db, f"--remote=punix:{self.sock}", f"--pidfile={self.pidfile}",
                        f"--unixctl={os.path.join(self.rundir, 'ovsdb-server.ctl')}", "--detach", "--no-chdir",
                        f"--log-file={os.path.join(self.rundir, 'ovsdb-server.log')}"], check=True)

    def stop(self) -> None:
        with open(self.pidfile) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.01)

    def vsctl(self, *args: str) -> None:
        subprocess.run(["ovs-vsctl", f"--db={self.remote}", "--no-wait", *args], check=True)


@pytest.fixture
def ovsdb_server(tmp_path):
    if missing_binaries():
        pytest.skip(f"Open vSwitch binaries missing: {missing_binaries()}")
    server = OvsdbServer(str(tmp_path))
    server.start()
    server.vsctl("init")
    server.vsctl("add-br", "br-int")
    yield server
    server.stop()


def plug(server: OvsdbServer, name: str, port_id: str, ofport: int) -> None:
    server.vsctl("add-port", "br-int", name, "--", "set", "Interface", name,
                 f"external_ids:iface-id={port_id}", f"ofport={ofport}")


async def next_update(queue: asyncio.Queue, name: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        update = await asyncio.wait_for(queue.get(), deadline - time.monotonic())
        if update.name == name:
            return update


def test_the_monitor_streams_a_vif_coming_and_going(ovsdb_server):
    async def run() -> None:
        queue, stats = asyncio.Queue(), Counter()
        plug(ovsdb_server, "tap-before", "p0", 4)
        monitor = InterfaceMonitor(ovsdb_server.remote, queue, stats)
        await monitor.start()
        try:
            assert (await next_update(queue, "tap-before")).ofport == 4  # in the first snapshot
            await asyncio.to_thread(plug, ovsdb_server, "tap1", "p1", 5)
            added = await next_update(queue, "tap1")
            assert (added.iface_id, added.ofport, added.deleted) == ("p1", 5, False)
            await asyncio.to_thread(ovsdb_server.vsctl, "del-port", "br-int", "tap1")
            removed = await next_update(queue, "tap1")
            assert removed.deleted and removed.iface_id == "p1" and removed.seen >= added.seen
        finally:
            await monitor.stop()
    asyncio.run(run())


def test_after_ovsdb_server_restarts_rows_deleted_meanwhile_are_reported_gone(ovsdb_server):
    async def run() -> None:
        queue, stats = asyncio.Queue(), Counter()
        plug(ovsdb_server, "tap1", "p1", 5)
        plug(ovsdb_server, "tap2", "p2", 6)
        monitor = InterfaceMonitor(ovsdb_server.remote, queue, stats, reconnect_delay=1.0)
        await monitor.start()
        tracker = InterfaceTracker()
        try:
            while set(tracker.vifs()) != {"p1", "p2"}:
                tracker.apply(await asyncio.wait_for(queue.get(), 5))
            await asyncio.to_thread(ovsdb_server.stop)
            await asyncio.to_thread(ovsdb_server.start)
            # Changed while the monitor was away (it reconnects after 1 s).
            await asyncio.to_thread(ovsdb_server.vsctl, "del-port", "br-int", "tap1")
            await asyncio.to_thread(plug, ovsdb_server, "tap3", "p3", 7)
            seen = set()
            while {"tap1", "tap3"} - seen:
                update = await asyncio.wait_for(queue.get(), 10)
                tracker.apply(update)
                seen.add(update.name)
            assert set(tracker.vifs()) == {"p2", "p3"}
            assert "tap2" not in seen  # unchanged rows are not reported again
            assert stats["monitor_disconnects"] == 1 and stats["monitor_reconnects"] == 1
        finally:
            await monitor.stop()
    asyncio.run(run())


def test_garbage_from_the_server_is_counted_logged_and_followed_by_a_reconnect(tmp_path, caplog):
    """A fake server: the first connection answers the monitor and then sends garbage."""
    async def run() -> None:
        path = str(tmp_path / "fake.sock")
        connections = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            request = json.loads(await reader.read(65536))
            rows = {"u1": {"new": {"name": "tap1", "ofport": 3,
                                   "external_ids": ["map", [["iface-id", "p1"]]]}}}
            writer.write(json.dumps({"id": request["id"], "result": {"Interface": rows}, "error": None}).encode())
            if len(connections) == 1:
                writer.write(b'{"method": "update", "params": [null, {}], "id": null} ]]garbage')
            await writer.drain()
            await reader.read()  # until the client goes

        server = await asyncio.start_unix_server(serve, path)
        queue, stats = asyncio.Queue(), Counter()
        monitor = InterfaceMonitor(f"unix:{path}", queue, stats, reconnect_delay=0.05)
        await monitor.start()
        try:
            deadline = time.monotonic() + 5
            while stats["monitor_reconnects"] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert stats["monitor_disconnects"] == 1 and stats["monitor_reconnects"] == 1
            assert [u.name for u in [queue.get_nowait() for _ in range(queue.qsize())]] == ["tap1"]
        finally:
            await monitor.stop()
            server.close()
    with caplog.at_level("ERROR"):
        asyncio.run(run())
    assert any("OVSDB monitor" in r.getMessage() and "expected '{'" in r.getMessage() for r in caplog.records)


def test_a_failed_transact_operation_is_raised_naming_it(ovsdb_server):
    async def run() -> None:
        rpc = await JsonRpc.open(ovsdb_server.remote)
        try:
            with pytest.raises(OvsdbProtocolError, match=r"operation 0 \(insert\) failed"):
                await rpc.transact("Open_vSwitch", {"op": "insert", "table": "Interface",
                                                    "row": {"no_such_column": 1}})
        finally:
            await rpc.close()
    asyncio.run(run())


def test_the_messages_before_bad_bytes_are_still_delivered():
    framed = Framer().feed(b'{"id": 1, "result": []} \x00junk')
    assert next(framed) == {"id": 1, "result": []}
    with pytest.raises(OvsdbProtocolError, match="expected '{'"):
        next(framed)
