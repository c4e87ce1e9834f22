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
niceness their start scripts give them, dfflow's controllers and NB database and OVN's databases
niceness 0, and the guests (started through `Sandbox.vm_popen`) always start at GUEST_NICENESS, whatever
the niceness of the process that starts them. Nothing becomes real-time.

Where a niceness acts: with the kernel's autogroup scheduling on (`/proc/sys/kernel/sched_autogroup_enabled`,
1 here and by default on Debian), every session is a group of its own that shares the CPUs equally with
the other sessions, and a niceness weighs only against the threads of its own session. The sandbox starts
each service (each ovs-vswitchd, controller, os-vif agent, API server) in a session of its own, as a
service manager does, and the guests in the benchmark's session: so the emulated Nova's niceness puts it
below the guests, whereas the other services' nicenesses (Open vSwitch's -10 included) act within their
own sessions only, as they would on a host scheduling the same way (RESULTS.md, branch `h16-onevm`).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

EMULATED_CLOUD_NICENESS = 10
GUEST_NICENESS = 0


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
    away from their agent and are not among them, which changes nothing: they share its session) at `niceness`;
    returns the pids set, by name."""
    pids = emulated_cloud_pids(sandbox)
    for pid in pids.values():
        renice(pid, niceness)
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
