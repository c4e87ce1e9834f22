"""A private, throw-away redis-server: the sandbox's NB database and a test fixture.

Why it listens on a unix socket too: a TCP socket on 127.0.0.1 in the root
network namespace cannot be reached from inside another network namespace
(each has its own loopback), but a unix socket is a file-system path and every
process can connect to it, whatever its network namespace. `unix_url`
(``unix:///…/redis.sock``, understood by ``redis.from_url``) is therefore the
URL to hand to anything that may run in a chassis namespace; `url` is the TCP
one for tools in the root namespace.

By default it keeps nothing on disk (``--save '' --appendonly no``); with
`persistent` it keeps an append-only file (AOF) in its directory, fsync'ed as
`appendfsync` says, so that a restart finds the NB again. It runs in the
foreground (``--daemonize no``) as a child in its own session (so a Ctrl-C on
the shell that ran `sandbox up` does not kill it, and the process outlives the
`up` command), chdirs to its directory (which identifies it later: its
command line is rewritten by redis and useless for that), and `start()`
returns only when it answers PING.
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

UNIX_PATH_MAX = 107


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """``RedisServer(dir, port=None)``: `port` None picks a free loopback port, 0 disables TCP.

    `persistent=True` keeps an append-only file in `dir`, so that a stop()/start()
    (same port, same dir) finds its data again; `appendfsync` is Redis' fsync
    policy for it ("always", or "everysec": at most a second of writes lost to a
    machine crash, none to a crash of redis-server alone). A stopped server can
    be started again.
    """

    def __init__(self, dir: str, port: int | None = None, host: str = "127.0.0.1", unixsocket: bool = True,
                 persistent: bool = False, appendfsync: str = "always", replica_of: str | None = None):
        if appendfsync not in ("always", "everysec"):
            raise SandboxError(f"appendfsync must be 'always' or 'everysec', not {appendfsync!r}")
        self.dir = os.path.realpath(dir)
        self.persistent = persistent
        self.appendfsync = appendfsync
        self.replica_of = replica_of  # "HOST PORT" of the primary this server replicates
        self.host = host
        self.port = port
        self.unixsocket = os.path.join(self.dir, "redis.sock") if unixsocket else None
        self.pid: int | None = None
        self.starttime: int | None = None
        self._proc: subprocess.Popen | None = None
        if self.unixsocket and len(self.unixsocket) > UNIX_PATH_MAX:
            raise SandboxError(f"unix socket path too long ({len(self.unixsocket)} > {UNIX_PATH_MAX} bytes): "
                               f"{self.unixsocket}; use a shorter directory")

    # --- addresses --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """TCP URL (root namespace only) or, without TCP, the unix socket URL."""
        if self.port:
            return f"redis://{self.host}:{self.port}/0"
        return self.unix_url

    @property
    def unix_url(self) -> str:
        if not self.unixsocket:
            raise SandboxError("this redis-server has no unix socket")
        return f"unix://{self.unixsocket}"

    @property
    def logfile(self) -> str:
        return os.path.join(self.dir, "redis.log")

    # --- life cycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> "RedisServer":
        os.makedirs(self.dir, exist_ok=True)
        pick = self.port is None
        for attempt in range(5):
            if pick:
                self.port = free_port(self.host)
            if self.unixsocket:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.unixsocket)
            argv = ["redis-server", "--port", str(self.port or 0), "--bind", self.host,
                    "--save", "", "--daemonize", "no",
                    "--dir", self.dir, "--logfile", self.logfile, "--loglevel", "notice",
                    "--databases", "16"]
            argv += (["--appendonly", "yes", "--appendfsync", self.appendfsync] if self.persistent
                     else ["--appendonly", "no"])
            if self.replica_of:
                argv += ["--replicaof", self.replica_of]
            # A primary waits 5 s by default before a replica's full sync, for others to join it; a server
            # revived after a failover would be a replica without the data for that long.
            argv += ["--repl-diskless-sync-delay", "0"]
            if self.unixsocket:
                argv += ["--unixsocket", self.unixsocket, "--unixsocketperm", "700"]
            try:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, cwd=self.dir, start_new_session=True)
            except FileNotFoundError:
                raise SandboxError("redis-server not found; install it with `apt-get install -y redis-server`")
            self.pid = self._proc.pid
            self.starttime = procs.starttime(self.pid)
            if self._wait_ready(timeout):
                return self
            if self._proc.poll() is None:
                self.stop()
                raise SandboxError(f"redis-server did not answer PING within {timeout} s; see {self.logfile}")
            if not (pick and self._port_clash()):
                raise SandboxError(f"redis-server exited ({self._proc.returncode}); see {self.logfile}")
        raise SandboxError(f"redis-server could not find a free port; see {self.logfile}")

    def _port_clash(self) -> bool:
        try:
            with open(self.logfile) as f:
                return "Address already in use" in f.read()[-4000:]
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.01)
        return False

    def ping(self) -> bool:
        try:
            if self.unixsocket:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                addr: Any = self.unixsocket
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                addr = (self.host, self.port)
            with s:
                s.settimeout(0.5)
                s.connect(addr)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def running(self) -> bool:
        return self._is_ours()

    def _is_ours(self) -> bool:
        return procs.same_process(self.pid, self.starttime) and procs.cwd(self.pid) == self.dir

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (ours only: PID + start time + working directory must match)."""
        if self._is_ours():
            procs.terminate_all([self.pid], timeout)
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=0.1)
        if self.unixsocket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unixsocket)
        self._proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- persistence (the sandbox records it and stops it from another process) -------------------
    def to_state(self) -> dict[str, Any]:
        return {"dir": self.dir, "host": self.host, "port": self.port, "unixsocket": self.unixsocket,
                "persistent": self.persistent, "appendfsync": self.appendfsync, "pid": self.pid,
                "replica_of": self.replica_of,
                "starttime": self.starttime}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> "RedisServer":
        server = cls(data["dir"], port=data.get("port"), host=data.get("host", "127.0.0.1"),
                     unixsocket=bool(data.get("unixsocket")), persistent=bool(data.get("persistent")),
                     appendfsync=data.get("appendfsync", "always"), replica_of=data.get("replica_of"))
        server.pid, server.starttime = data.get("pid"), data.get("starttime")
        return server
