"""CPU priorities of a benchmark's sandbox: the emulated cloud's control services below the guests.

In a cloud, Nova's API and conductor, Neutron's server and the compute host's nova-compute do not take
a CPU from a guest's vCPU or from the datapath: they run on other hosts, or on cores the guests do
not use, and the kernel datapath forwards in softirq ahead of any process. On the sandbox all of it
shares two cores with the guests (the VMs' probe and echo processes) and the userspace datapaths, at
the same niceness, and a trace found the guests waiting for a CPU behind the emulation through the
destination's plug (RESULTS.md, `evac-tails` and `one-vm-gap`). A benchmark therefore runs these
emulated control services at EMULATED_CLOUD_NICENESS:

* the process driving Nova's calls (the benchmark's own: python-neutronclient, Nova's waits, and on
  OVN's side Neutron's OVN driver writing the NB database), for as long as `emulated_nova` holds;
* the cloud's API server (`dfflow api`, or neutron-server), the sandbox's Nova API (the
  os-server-external-events endpoint) and each chassis' os-vif agent (nova-compute), with
  `lower_emulated_cloud`.

Nothing of the networks' own runs lower or higher for it: Open vSwitch and OVN's daemons keep the
niceness their start scripts give them (ovsproc.py, ovn.py), dfflow's controllers and NB database and OVN's
databases niceness 0, and the guests (started through `Sandbox.vm_popen`) always start at GUEST_NICENESS,
whatever the niceness of the process that starts them. Nothing becomes real-time.

Where a niceness acts: with the kernel's autogroup scheduling on (`/proc/sys/kernel/sched_autogroup_enabled`,
1 here and by default on Debian), every session is a group of its own that shares the CPUs with the other
sessions by the group's own niceness (0 when the session starts), and a process' niceness weighs only against
the threads of its own session. The sandbox starts each service (each ovs-vswitchd and ovsdb-server, OVN
daemon, controller, os-vif agent, API server) in a session of its own, as a service manager does, and the
guests in the benchmark's session. A process' niceness alone would therefore put nothing below or above the
guests but the emulated Nova, which runs in their session (RESULTS.md, branch `h16-onevm`). So every service
the sandbox starts at a niceness other than 0 has its session's autogroup set to the same niceness
(`session_at`): Open vSwitch's daemons at -10 and OVN's ovn-northd and ovn-controllers at -10 ahead of the
guests, dfflow's controllers, NB database and OVN's databases level with them, and the emulated cloud's
services at EMULATED_CLOUD_NICENESS below them. The emulated Nova keeps only its own niceness: its session is
the guests'. Where autogroup is off, the niceness of a process weighs against every other process already,
and nothing more is set (logged once). Where the benchmark itself runs in init's session (a CI runner's, which
never starts a session of its own), the guests share the root group, and a service's session is still set.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

EMULATED_CLOUD_NICENESS = 10
GUEST_NICENESS = 0
AUTOGROUP_SWITCH = "/proc/sys/kernel/sched_autogroup_enabled"
ROOT_GROUP = ("/", 0)

LOG = logging.getLogger(__name__)
_said_autogroup_off = False


def threads(pid: int) -> list[int]:
    """The thread ids of `pid` (niceness is per thread on Linux), none if it is gone."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[-1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def renice(pid: int, niceness: int, descendants: bool = True) -> int:
    """Every thread of `pid` (and of its descendants) at `niceness`; returns how many threads were set.
    A thread that ended meanwhile is skipped."""
    count = 0
    for tid in threads(pid):
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
            count += 1
    if descendants:
        for child in children(pid):
            count += renice(child, niceness)
    return count


def niceness_of(pid: int) -> set[int]:
    """The nicenesses of `pid`'s threads."""
    found = set()
    for tid in threads(pid):
        with contextlib.suppress(ProcessLookupError):
            found.add(os.getpriority(os.PRIO_PROCESS, tid))
    return found


def autogroup_of(pid: int) -> tuple[str, int] | None:
    """The autogroup `pid` runs in and its niceness (`("/autogroup-12", -10)`); ROOT_GROUP for a process of
    init's session, which never started one of its own (the kernel prints nothing for it: it shares the
    root group's fixed weight, niceness 0); None where the kernel has no autogroups or `pid` is gone."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            text = f.read()
    except OSError:
        return None
    if not text.strip():
        return ROOT_GROUP
    try:
        name, _, niceness = text.split()
        return name, int(niceness)
    except ValueError:
        return None


def autogroup_enabled() -> bool:
    """Whether the kernel schedules by session (autogroup) now."""
    try:
        with open(AUTOGROUP_SWITCH) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def session_at(pid: int, niceness: int, what: str) -> bool:
    """The session of `pid` (a service the sandbox started in a session of its own) weighed at `niceness`
    against the other sessions: its autogroup's niceness set, so that the service's own niceness acts
    beyond its session. Returns whether it was set. Nothing is set where autogroup is off (said once in
    the log), nor for a process in this process' own session (that is the guests' session: it would move
    them too); a failure is logged with its reason and is not fatal."""
    global _said_autogroup_off
    ours = autogroup_of(os.getpid())  # ROOT_GROUP where this process runs in init's session (a CI runner's)
    if not autogroup_enabled() or ours is None:
        if not _said_autogroup_off:
            LOG.warning("autogroup scheduling is off here (%s, /proc/PID/autogroup): a niceness acts across "
                        "sessions by itself, no session's niceness is set", AUTOGROUP_SWITCH)
            _said_autogroup_off = True
        return False
    group = autogroup_of(pid)
    if group is None:
        LOG.warning("%s (pid %d) at session niceness %d: it has no autogroup (gone?); left as is",
                    what, pid, niceness)
        return False
    if group[0] == ours[0]:
        LOG.warning("%s (pid %d) runs in this process' session (%s): its session's niceness is left as is, "
                    "%d would weigh the guests' session too", what, pid, group[0], niceness)
        return False
    if group == ROOT_GROUP:
        LOG.warning("%s (pid %d) runs in init's session, the root group, whose weight is fixed: its session's "
                    "niceness is left as is", what, pid)
        return False
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(niceness))
    except OSError as exc:
        LOG.warning("%s (pid %d): could not set its session's (%s) niceness to %d: %s",
                    what, pid, group[0], niceness, exc)
        return False
    return True


def emulated_cloud_pids(sandbox: Any) -> dict[str, int]:
    """The emulated cloud's control services the sandbox runs, by name: its API server, its Nova API,
    each chassis' os-vif agent."""
    status = sandbox.status()
    pids = {"api": status.get("api_pid"), "nova api": status.get("nova_pid")}
    for ch in status["chassis"]:
        pids[f"os-vif {ch['name']}"] = ch["osvif_pid"]
    return {name: pid for name, pid in pids.items() if pid}


def lower_emulated_cloud(sandbox: Any, niceness: int = EMULATED_CLOUD_NICENESS) -> dict[str, int]:
    """The sandbox's emulated control services (and their children: workers; os-vif's privsep daemons fork
    away from their agent and are not among them, but they share its session) at `niceness`, and their
    sessions at the same niceness (`session_at`); returns the pids set, by name."""
    pids = emulated_cloud_pids(sandbox)
    for name, pid in pids.items():
        renice(pid, niceness)
        session_at(pid, niceness, name)
    return pids


@contextlib.contextmanager
def emulated_nova(niceness: int = EMULATED_CLOUD_NICENESS) -> Iterator[None]:
    """This process (Nova's calls, the waits, the emulated Neutron driver on OVN's side) at `niceness`
    while the block runs, its threads' nicenesses restored after. Threads and processes it starts
    meanwhile inherit it, except the guests (`as_guest`)."""
    before = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in threads(os.getpid())}
    started_at = os.getpriority(os.PRIO_PROCESS, 0)
    renice(os.getpid(), niceness, descendants=False)
    try:
        yield
    finally:
        for tid in threads(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, tid, before.get(tid, started_at))


def as_guest() -> None:
    """`preexec_fn` of a guest's process: it starts at GUEST_NICENESS, not its parent's."""
    if os.getpriority(os.PRIO_PROCESS, 0) != GUEST_NICENESS:
        os.setpriority(os.PRIO_PROCESS, 0, GUEST_NICENESS)
