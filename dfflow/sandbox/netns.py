"""Network namespaces and links through iproute2.

Why `ip` and not pyroute2: the sandbox is built once and torn down once, so a
few dozen short `ip` calls (a few ms each) do not matter, and `ip -n NS
-batch -` sends many link/addr/route changes in one process. iproute2 is
always there where OVS is, and its error messages are the ones people can
look up. (Latency-critical switchovers, e.g. migration emulation, should use
pyroute2 from one pre-started process instead; see DESIGN.md.)

Sysctls are written through /proc/sys from a shell started inside the
namespace: /proc/sys/net shows the network namespace of the reading process.
"""
from __future__ import annotations

import os
import shlex
import subprocess

NETNS_DIR = "/run/netns"


class SandboxError(RuntimeError):
    """Anything the sandbox could not do, with a message meant for a human."""


def run(argv: list[str], check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise SandboxError(f"`{shlex.join(argv)}` failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def add(ns: str) -> None:
    if not exists(ns):
        run(["ip", "netns", "add", ns])


def delete(ns: str) -> None:
    """Remove the namespace's name; the kernel frees it (and its interfaces) once no process is in it."""
    if exists(ns):
        run(["ip", "netns", "delete", ns], check=False)
        if exists(ns):  # a stale mount point whose namespace is gone already
            try:
                os.unlink(os.path.join(NETNS_DIR, ns))
            except OSError:
                pass


def pids(ns: str) -> list[int]:
    """PIDs of every process whose network namespace is `ns`."""
    if not exists(ns):
        return []
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def batch(ns: str | None, commands: list[str]) -> None:
    """Run `ip` commands (without the leading `ip`) in one process inside `ns`."""
    if not commands:
        return
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    run(argv, input="\n".join(commands) + "\n")


def sh(ns: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell script inside `ns`."""
    return run(["ip", "netns", "exec", ns, "sh", "-ec", script], check=check)


def exec_argv(ns: str, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside `ns` (ip netns exec execs it: the PID stays the same)."""
    return ["ip", "netns", "exec", ns, *argv]


def sysctl_script(settings: dict[str, str | int]) -> str:
    """Shell lines that write sysctls (dotted names) through /proc/sys."""
    return "\n".join(f"echo {value} > /proc/sys/{key.replace('.', '/')}" for key, value in settings.items())
