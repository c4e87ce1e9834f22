"""Finding, identifying and ending the processes a sandbox started.

A PID alone is not an identity: after a crash or reboot the number may belong
to someone else. Each recorded PID therefore carries the process' start time
(field 22 of /proc/PID/stat); a PID read from a pidfile is accepted only if
the process' command line names that pidfile or its working directory is the
one we gave it. Stopping is always "signal everyone, then wait for everyone":
an ovs-vswitchd takes ~1.7 s to exit here, so stopping N of them one after the
other would cost N times that.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from typing import Callable, Iterable


def alive(pid: int | None) -> bool:
    """True if `pid` runs and is not a zombie."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def starttime(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[-1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int | None, start: int | None) -> bool:
    return bool(pid) and alive(pid) and (start is None or starttime(pid) == start)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def find(predicate: Callable[[int], bool]) -> list[int]:
    """Live PIDs (other than ours) for which `predicate(pid)` holds."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            pid = int(entry)
            try:
                if predicate(pid) and alive(pid):
                    found.append(pid)
            except OSError:
                pass
    return found


def read_pidfile(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def terminate_all(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGTERM every pid, wait for all of them together, SIGKILL what is left.

    Returns the pids that were still alive when this started. Children of this
    process are reaped so that they do not linger as zombies.
    """
    pids = sorted({p for p in pids if p and p != os.getpid() and alive(p)})
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left:
        _reap(left)
        left = [p for p in left if alive(p)]
        if not left:
            break
        if time.monotonic() > deadline:
            for pid in left:
                _signal(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 2.0
            while left and time.monotonic() < kill_deadline:
                _reap(left)
                left = [p for p in left if alive(p)]
                time.sleep(0.01)
            break
        time.sleep(0.01)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def wait_http_ok(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    """Wait until `url` answers 200 (True), or `proc` exits or `timeout` s pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
