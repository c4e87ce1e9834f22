"""Checks run before a sandbox is built, so failures say what to do."""
from __future__ import annotations

import os
import shutil

from dfflow.sandbox.ovsproc import REQUIRED_BINARIES as OVS_BINARIES

from .netns import SandboxError

APT_HINT = "apt-get install -y openvswitch-switch redis-server iproute2 iputils-ping ethtool"
BASE_BINARIES = ("ip", "ethtool", "sh")


def missing(need_redis: bool = True) -> list[str]:
    wanted = list(BASE_BINARIES) + list(OVS_BINARIES) + (["redis-server"] if need_redis else [])
    return [b for b in wanted if shutil.which(b) is None]


def problems(need_redis: bool = True) -> list[str]:
    """Human-readable reasons why a sandbox cannot run here (empty: it can)."""
    out = []
    if os.geteuid() != 0:
        out.append("the sandbox creates network namespaces and runs Open vSwitch: run it as root")
    gone = missing(need_redis)
    if gone:
        out.append(f"missing programs: {', '.join(gone)}; install them with `{APT_HINT}`")
    return out


def check(need_redis: bool = True) -> None:
    found = problems(need_redis)
    if found:
        raise SandboxError("cannot run the sandbox: " + "; ".join(found))
