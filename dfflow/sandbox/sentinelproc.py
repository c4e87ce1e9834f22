"""A highly available NB for the sandbox and tests: a primary, a replica and three sentinels.

Everything listens on loopback TCP ports of the root namespace (sentinels hand out the primary as
HOST:PORT, and the controllers run in the root namespace). Each process runs in the foreground in
its own session and its own directory under `dir` (`primary`, `replica`, `sentinel-1..3`), which
identifies it later, as for `RedisServer`. Both data servers keep an append-only file.

Failover settings (what README's "Sentinel" section documents): a primary unreachable for
`down_after_ms` is subjectively down for a sentinel; two of three agreeing make it objectively down
and one of them promotes the replica. `down_after_ms` is short here (1 s) to keep tests quick.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from typing import Any

from . import procs
from .netns import SandboxError
from .redisproc import RedisServer, free_port

SERVICE = "dfflow-nb"
SENTINELS = 3
QUORUM = 2
# How long a failover or a returning server's reconfiguration may take: a sentinel whose timer saw a stall
# of over 2 s (a loaded machine) enters TILT mode and does nothing for 30 s, so 30 s alone was not enough.
SENTINEL_ACTS_WITHIN = 75.0


class SentinelServer:
    """One `redis-sentinel` watching SERVICE; its config file is its own (sentinel rewrites it)."""

    def __init__(self, dir: str, port: int | None = None, host: str = "127.0.0.1"):
        self.dir, self.host, self.port = os.path.realpath(dir), host, port
        self.pid: int | None = None
        self.starttime: int | None = None

    @property
    def logfile(self) -> str:
        return os.path.join(self.dir, "sentinel.log")

    def start(self, primary: tuple[str, int], down_after_ms: int, failover_timeout_ms: int,
              timeout: float = 5.0) -> "SentinelServer":
        os.makedirs(self.dir, exist_ok=True)
        self.port = self.port or free_port(self.host)
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {self.port}\nbind {self.host}\ndaemonize no\ndir {self.dir}\nlogfile {self.logfile}\n"
                    f"sentinel monitor {SERVICE} {primary[0]} {primary[1]} {QUORUM}\n"
                    f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                    f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {SERVICE} 1\n")
        try:
            proc = subprocess.Popen(["redis-sentinel", conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=self.dir, start_new_session=True)
        except FileNotFoundError:
            raise SandboxError("redis-sentinel not found; install it with `apt-get install -y redis-sentinel`")
        self.pid, self.starttime = proc.pid, procs.starttime(proc.pid)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SandboxError(f"redis-sentinel did not start; see {self.logfile}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        return _command(self.host, self.port, b"PING").startswith(b"+PONG")

    def primary(self) -> tuple[str, int] | None:
        """The primary this sentinel names now."""
        reply = _command(self.host, self.port, f"SENTINEL get-master-addr-by-name {SERVICE}".encode())
        parts = [line for line in reply.split(b"\r\n") if line and not line[:1] in (b"*", b"$")]
        return (parts[0].decode(), int(parts[1])) if len(parts) == 2 else None

    def failover(self) -> bool:
        """Ask for a failover now (SENTINEL FAILOVER); False when it refuses, e.g. no replica is fit."""
        return _command(self.host, self.port, f"SENTINEL failover {SERVICE}".encode()).startswith(b"+OK")

    def running(self) -> bool:
        return procs.same_process(self.pid, self.starttime) and procs.cwd(self.pid) == self.dir

    def stop(self, timeout: float = 5.0) -> None:
        if self.running():
            procs.terminate_all([self.pid], timeout)

    def to_state(self) -> dict[str, Any]:
        return {"dir": self.dir, "host": self.host, "port": self.port, "pid": self.pid, "starttime": self.starttime}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> "SentinelServer":
        server = cls(data["dir"], port=data.get("port"), host=data.get("host", "127.0.0.1"))
        server.pid, server.starttime = data.get("pid"), data.get("starttime")
        return server


def _command(host: str, port: int | None, command: bytes) -> bytes:
    try:
        with socket.create_connection((host, port or 0), timeout=0.5) as s:
            s.sendall(command + b"\r\n")
            return s.recv(4096)
    except OSError:
        return b""


class SentinelNb:
    """The whole topology: `start()`, `url` (a redis+sentinel:// URL), `stop()`; `to_state`/`from_state`
    for the sandbox, which starts it in one process and stops it from another."""

    def __init__(self, dir: str, down_after_ms: int = 1000, failover_timeout_ms: int = 5000):
        self.dir = os.path.realpath(dir)
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.servers = [RedisServer(os.path.join(self.dir, name), unixsocket=False, persistent=True,
                                    appendfsync="everysec") for name in ("primary", "replica")]
        self.sentinels = [SentinelServer(os.path.join(self.dir, f"sentinel-{i}")) for i in range(1, SENTINELS + 1)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self, timeout: float = 15.0) -> "SentinelNb":
        primary, replica = self.servers
        try:
            primary.start()
            replica.replica_of = f"{primary.host} {primary.port}"
            replica.start()
            for sentinel in self.sentinels:
                sentinel.start((primary.host, primary.port), self.down_after_ms, self.failover_timeout_ms)
            self._wait_synced(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_synced(self, timeout: float) -> None:
        """Until the replica is in sync and every sentinel knows the replica and the other sentinels
        (a sentinel that knows no peer cannot reach the quorum of a failover)."""
        deadline = time.monotonic() + timeout
        replica = self.servers[1]
        while True:
            info = _command(replica.host, replica.port, b"INFO replication")
            sentinels_ready = all(self._knows_peers(s) for s in self.sentinels)
            if b"master_link_status:up" in info and sentinels_ready:
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"the sentinel NB did not come together within {timeout:g} s; see {self.dir}")
            time.sleep(0.1)

    def _knows_peers(self, sentinel: SentinelServer) -> bool:
        reply = _command(sentinel.host, sentinel.port, f"SENTINEL master {SERVICE}".encode())
        fields = [line for line in reply.split(b"\r\n") if line and line[:1] not in (b"*", b"$")]
        info = dict(zip(fields[0::2], fields[1::2]))
        return info.get(b"num-other-sentinels") == str(SENTINELS - 1).encode() and \
            info.get(b"num-slaves", b"0") != b"0"

    def primary(self) -> RedisServer:
        """The data server the sentinels name as primary now."""
        for sentinel in self.sentinels:
            address = sentinel.primary()
            if address is not None:
                for server in self.servers:
                    if (server.host, server.port) == address:
                        return server
        raise SandboxError("no sentinel names a primary")

    def kill_primary(self) -> RedisServer:
        """kill -9 the primary (a crash: no shutdown, no last write to its AOF); returns it."""
        server = self.primary()
        if server.running():
            os.kill(server.pid, 9)  # type: ignore[arg-type]
        return server

    def wait_failover(self, old: RedisServer, timeout: float = SENTINEL_ACTS_WITHIN) -> RedisServer:
        """Until every sentinel names a primary other than `old`; returns the new one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            named = {s.primary() for s in self.sentinels}
            if len(named) == 1 and None not in named and named != {(old.host, old.port)}:
                return self.primary()
            time.sleep(0.1)
        raise SandboxError(f"no failover away from {old.host}:{old.port} within {timeout:g} s\n{self.logs_tail()}")

    def revive(self, server: RedisServer, timeout: float = SENTINEL_ACTS_WITHIN) -> RedisServer:
        """Start a killed data server again (same port and directory) as the current primary's replica, as
        an operator brings a failed primary back: started as a primary it would serve its stale data until a
        sentinel reconfigures it, and a second failover in that window (a loaded machine's sentinel missing
        the new primary's pings) would promote it and drop the writes made since. Returns the primary once
        the topology has settled (`wait_settled`)."""
        if not server.running():
            primary = self.primary()
            server.replica_of = None if primary is server else f"{primary.host} {primary.port}"
            server.start()
        return self.wait_settled(timeout)

    def wait_settled(self, timeout: float = SENTINEL_ACTS_WITHIN) -> RedisServer:
        """Until every sentinel names the same running primary and every other data server replicates it
        with its link up; returns that primary. Whichever server it is: a second failover may have come."""
        deadline = time.monotonic() + timeout
        while True:
            primary = self._settled_primary()
            if primary is not None:
                return primary
            if time.monotonic() > deadline:
                replication = {f"{s.host}:{s.port}": _command(s.host, s.port, b"INFO replication").decode(
                    errors="replace") for s in self.servers}
                named = [s.primary() for s in self.sentinels]
                raise SandboxError(f"the sentinel NB did not settle within {timeout:g} s: the sentinels name "
                                   f"{named}; INFO replication: {replication!r}\n{self.logs_tail()}")
            time.sleep(0.1)

    def _settled_primary(self) -> RedisServer | None:
        named = {s.primary() for s in self.sentinels}
        if len(named) != 1 or None in named:
            return None
        address = named.pop()
        primary = next((s for s in self.servers if (s.host, s.port) == address), None)
        if primary is None or b"role:master" not in _command(primary.host, primary.port, b"INFO replication"):
            return None
        for replica in self.servers:
            if replica is primary:
                continue
            info = _command(replica.host, replica.port, b"INFO replication")
            if f"master_port:{primary.port}\r\n".encode() not in info or b"master_link_status:up" not in info:
                return None
        return primary

    def logs_tail(self, lines: int = 25) -> str:
        """The last lines of every sentinel's log (a failover that did not come: +tilt, -odown, ...)."""
        tails = []
        for sentinel in self.sentinels:
            try:
                with open(sentinel.logfile, errors="replace") as f:
                    tail = f.readlines()[-lines:]
            except OSError as exc:
                tail = [f"(unreadable: {exc})\n"]
            tails.append(f"--- {sentinel.logfile}\n" + "".join(tail))
        return "".join(tails)

    def pids(self) -> list[int]:
        alive = [s for s in self.servers if s.running()] + [s for s in self.sentinels if s.running()]
        return [p.pid for p in alive if p.pid is not None]

    def stop(self) -> None:
        for sentinel in self.sentinels:  # first: no failover while the servers go
            with contextlib.suppress(Exception):
                sentinel.stop()
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()

    def to_state(self) -> dict[str, Any]:
        return {"dir": self.dir, "down_after_ms": self.down_after_ms, "failover_timeout_ms": self.failover_timeout_ms,
                "servers": [s.to_state() for s in self.servers], "sentinels": [s.to_state() for s in self.sentinels]}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> "SentinelNb":
        nb = cls(data["dir"], data.get("down_after_ms", 1000), data.get("failover_timeout_ms", 5000))
        nb.servers = [RedisServer.from_state(s) for s in data["servers"]]
        nb.sentinels = [SentinelServer.from_state(s) for s in data["sentinels"]]
        return nb
