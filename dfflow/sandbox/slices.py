"""The userspace datapath's forwarding thread takes a CPU when a packet wakes it, as the kernel's datapath does.

The kernel datapath forwards in softirq, ahead of any process. The sandbox's stand-in for it, ovs-vswitchd's
userspace (netdev) datapath without PMD threads, forwards every packet of a chassis in its main thread: a
process that sleeps in poll() until a packet arrives. The kernel's fair scheduler (EEVDF) lets a task that is
running keep its CPU until its slice (1.4 ms here, on 2 cores) ends before a task it woke, or a packet woke,
may run; a task with a shorter slice than the running one's may take the CPU at once. A trace of the one-VM
benchmark (RESULTS.md, branch `h16-gap`) found the main threads of the vswitchds waiting 1-4 ms for a CPU on
about 0.5 % of their wake-ups, behind compilers and test runs, which is where the longest reply gaps of a
quiet window come from: a round trip crosses four such wake-ups.

So the sandbox gives ovs-vswitchd's forwarding thread the shortest slice the kernel allows
(FORWARDING_SLICE_NS; `sched_setattr`'s `sched_runtime` for SCHED_OTHER, Linux 6.12+). It changes when the
thread runs, not how much: its niceness and its session's weight (ovsproc.py, priorities.py) stay what they
were, and over a second it is charged for every microsecond it ran like any other thread. Where the kernel has
no custom slices, the call is refused or ignored: said once in the log, nothing else changes.
"""
from __future__ import annotations

import ctypes
import errno as errnos
import logging
import os
import platform
import struct

FORWARDING_SLICE_NS = 100_000  # the kernel's floor for a custom slice (0.1 ms)
# struct sched_attr (include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER1): size, policy, flags, nice,
# priority, runtime, deadline, period, util_min, util_max
SCHED_ATTR = struct.Struct("IIQiIQQQII")
SCHED_OTHER = 0
SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}  # sched_setattr, sched_getattr

LOG = logging.getLogger(__name__)
_said_unsupported = False
_libc = ctypes.CDLL(None, use_errno=True)


def _syscalls() -> tuple[int, int] | None:
    return SYSCALLS.get(platform.machine())


def sched_attr(tid: int) -> tuple[int, ...]:
    """`sched_getattr` of a thread: (size, policy, flags, nice, priority, runtime, ...); for a SCHED_OTHER
    thread `runtime` is its slice in ns. OSError if it cannot be read."""
    calls = _syscalls()
    if calls is None:
        raise OSError(f"sched_getattr: no syscall number known for {platform.machine()}")
    buf = ctypes.create_string_buffer(SCHED_ATTR.size)
    if _libc.syscall(calls[1], tid, buf, SCHED_ATTR.size, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return SCHED_ATTR.unpack(buf.raw)


def slice_of(tid: int) -> int | None:
    """The slice (ns) of a SCHED_OTHER thread, None where it cannot be read or the thread is not SCHED_OTHER."""
    try:
        attr = sched_attr(tid)
    except OSError:
        return None
    return attr[5] if attr[1] == SCHED_OTHER else None


def _unsupported(what: str, reason: str) -> None:
    global _said_unsupported
    if not _said_unsupported:
        LOG.warning("%s keeps the kernel's slice: %s (custom slices need Linux 6.12+)", what, reason)
        _said_unsupported = True


def shorten_slice(tid: int, what: str, slice_ns: int = FORWARDING_SLICE_NS) -> bool:
    """`tid` (a SCHED_OTHER thread) given a slice of `slice_ns`, its niceness kept; returns whether the kernel
    took it (read back). Refused or ignored: logged (a kernel without custom slices once), never fatal."""
    calls = _syscalls()
    try:
        attr = sched_attr(tid)
    except OSError as exc:
        _unsupported(what, f"sched_getattr of thread {tid}: {exc}")
        return False
    _, policy, _, nice, priority = attr[:5]
    if policy != SCHED_OTHER:
        LOG.warning("%s (thread %d) runs under scheduling policy %d, not SCHED_OTHER: its slice is left as is",
                    what, tid, policy)
        return False
    wanted = SCHED_ATTR.pack(SCHED_ATTR.size, SCHED_OTHER, 0, nice, priority, slice_ns, 0, 0, 0, 0)
    assert calls is not None  # sched_attr() above read it with them
    if _libc.syscall(calls[0], tid, wanted, 0) != 0:
        errno = ctypes.get_errno()
        if errno == errnos.ESRCH:  # the thread ended meanwhile
            return False
        LOG.warning("%s (thread %d): slice %d ns refused: %s", what, tid, slice_ns, os.strerror(errno))
        return False
    if slice_of(tid) != slice_ns:
        _unsupported(what, f"the kernel ignored a slice of {slice_ns} ns")
        return False
    return True
