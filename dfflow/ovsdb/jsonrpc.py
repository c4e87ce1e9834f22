"""OVSDB's JSON-RPC (RFC 7047) on one asyncio stream: framing, calls, notifications, datum values.

The controller speaks it itself for the one OVSDB exchange on a migration's
critical path, the monitor of the Interface table that tells a VIF went away
(`dfflow.ovsdb.monitor.InterfaceMonitor`); `dfflow-bench osvif-unplug` speaks it
for its raw unplug. python-ovs's IDL parses its stream one character at a time in Python,
in a thread of its own, and a row it saw reaches the loop ~1.2 ms after the
same update reaches a socket read here; ovsdbapp's transaction path adds ~2 ms
of thread hops before a `del_port` leaves the client (both measured on the
sandbox). Configuration (bridge, tunnels) still goes through ovsdbapp.

A message ends where its top-level object closes. The framer finds that by
following only the bytes that can change it (quotes, braces, escapes), found by
a regular expression over the bytes not yet scanned, and hands each complete
message to `json.loads`.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from typing import Any, Iterator

MAX_MESSAGE_BYTES = 64 << 20  # an initial snapshot of a very large chassis stays far below this
_STRUCTURAL = re.compile(rb'\\.|["{}]', re.DOTALL)


class OvsdbProtocolError(Exception):
    """The peer sent something that is not OVSDB JSON-RPC (or the call it answered failed)."""


class Framer:
    """Bytes in, complete JSON-RPC messages (dicts) out, however the bytes were split."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES):
        self.max_message = max_message
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already followed
        self._depth = 0
        self._in_string = False

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """The messages `data` completes, in order; raises at the first byte that cannot be OVSDB
        JSON-RPC, after yielding the messages before it."""
        self._buf += data
        start = 0  # where the message being followed begins in _buf
        for match in _STRUCTURAL.finditer(self._buf, self._scanned):
            token = match.group()
            if self._in_string:
                if token == b'"':
                    self._in_string = False
            elif self._depth == 0:
                if token != b"{" or self._buf[start:match.start()].strip():
                    raise OvsdbProtocolError(
                        f"OVSDB message: expected '{{', got {bytes(self._buf[start:match.end()][:40])!r}")
                self._depth = 1
            elif token == b'"':
                self._in_string = True
            elif token == b"{":
                self._depth += 1
            elif token == b"}":
                self._depth -= 1
                if self._depth == 0:
                    message = self._decode(self._buf[start:match.end()])
                    start = match.end()
                    yield message
            else:
                raise OvsdbProtocolError(f"OVSDB message: stray escape {bytes(token)!r} outside a string")
        scanned = len(self._buf)
        if self._in_string and _odd_backslashes(self._buf):
            scanned -= 1  # the escaped byte is still to come: follow this backslash again then
        if self._depth == 0 and self._buf[start:scanned].strip():
            raise OvsdbProtocolError(
                f"OVSDB message: expected '{{', got {bytes(self._buf[start:scanned][:40])!r}")
        del self._buf[:start]
        self._scanned = scanned - start
        if len(self._buf) > self.max_message:
            raise OvsdbProtocolError(f"OVSDB message: larger than {self.max_message} bytes")

    @staticmethod
    def _decode(raw: bytes | bytearray) -> dict[str, Any]:
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise OvsdbProtocolError(f"OVSDB message: not JSON ({exc})") from None
        if not isinstance(message, dict):
            raise OvsdbProtocolError("OVSDB message: not a JSON object")
        return message


def _odd_backslashes(buf: bytearray) -> bool:
    """Does `buf` end with an odd run of backslashes (the last one escaping a byte still to come)?"""
    end = len(buf)
    while end and buf[end - 1] == 0x5C:
        end -= 1
    return (len(buf) - end) % 2 == 1


def datum(value: Any) -> Any:
    """An OVSDB datum as Python: a map as a dict, a uuid as its string, an optional value (a set of
    none or one) as None or that value, a larger set as a list, a scalar as itself."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "map":
            return {datum(k): datum(v) for k, v in body}
        if kind == "set":
            items = [datum(v) for v in body]
            return None if not items else items[0] if len(items) == 1 else items
        if kind in ("uuid", "named-uuid"):
            return body
    return value


class JsonRpc:
    """One OVSDB connection: calls with replies, and notifications to `on_notify(method, params, t)`.

    `t` is `time.time()` when the bytes holding the message were read. Echo requests from the
    server are answered here. `closed` is set, with the reason in `error`, when the stream ends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_notify: Any = None, max_message: int = MAX_MESSAGE_BYTES):
        self.reader, self.writer, self.on_notify = reader, writer, on_notify
        self.framer = Framer(max_message)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.closed = asyncio.Event()
        self.error: BaseException | None = None
        self._reading = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(cls, remote: str, on_notify: Any = None, timeout: float = 5.0) -> "JsonRpc":
        """`remote`: `unix:PATH` or `tcp:HOST:PORT`, as OVS names them."""
        kind, _, where = remote.partition(":")
        if kind == "unix":
            opening = asyncio.open_unix_connection(where)
        elif kind == "tcp":
            host, _, port = where.rpartition(":")
            opening = asyncio.open_connection(host, int(port))
        else:
            raise ValueError(f"ovsdb remote: {remote!r} is neither unix:PATH nor tcp:HOST:PORT")
        reader, writer = await asyncio.wait_for(opening, timeout)
        return cls(reader, writer, on_notify)

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode())

    async def call(self, method: str, params: list[Any], timeout: float = 10.0) -> Any:
        if self.closed.is_set():
            raise ConnectionError(f"OVSDB connection closed: {self.error}")
        request_id = next(self._ids)
        reply = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        self.send({"id": request_id, "method": method, "params": params})
        try:
            return await asyncio.wait_for(reply, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def transact(self, db: str, *operations: dict[str, Any]) -> list[dict[str, Any]]:
        """One transaction; raises naming the first operation that failed."""
        results = await self.call("transact", [db, *operations])
        for index, result in enumerate(results or []):
            if isinstance(result, dict) and result.get("error"):
                what = operations[index]["op"] if index < len(operations) else "commit"
                raise OvsdbProtocolError(f"OVSDB transact: operation {index} ({what}) failed: "
                                         f"{result['error']}: {result.get('details', '')}")
        return results

    async def close(self) -> None:
        self._reading.cancel()
        try:
            await self._reading
        except asyncio.CancelledError:
            pass
        self.writer.close()

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(1 << 16)
                received = time.time()
                if not data:
                    raise ConnectionError("OVSDB server closed the connection")
                for message in self.framer.feed(data):
                    self._dispatch(message, received)
        except asyncio.CancelledError:
            self.error = ConnectionError("closed")
            raise
        except Exception as exc:
            self.error = exc
        finally:
            self.closed.set()
            for reply in self._pending.values():
                if not reply.done():
                    reply.set_exception(ConnectionError(f"OVSDB connection lost: {self.error}"))

    def _dispatch(self, message: dict[str, Any], received: float) -> None:
        method = message.get("method")
        if method == "echo":
            self.send({"id": message.get("id"), "result": message.get("params"), "error": None})
        elif method is not None:
            if self.on_notify is not None:
                self.on_notify(method, message.get("params"), received)
        else:
            reply = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if reply is None or reply.done():
                return  # a reply nobody waits for any more (timed out)
            if message.get("error") is not None:
                reply.set_exception(OvsdbProtocolError(f"OVSDB call failed: {message['error']}"))
            else:
                reply.set_result(message.get("result"))
