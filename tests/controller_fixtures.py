"""A sandbox with real controllers, and sync helpers to drive its cloud from tests."""
from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from controller.daemon import read_status
from controller.sandbox.cloud import Cloud
from controller.sandbox.topology import INT_BRIDGE, Sandbox
from dfflow.nb.store import NbApi


class SyncCloud:
    """The sandbox's Cloud, one asyncio.run per call (tests are synchronous)."""

    def __init__(self, sb: Sandbox):
        self.sb = sb
        self.url = sb.status()["nb_url"]

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            nb = NbApi(self.url)
            try:
                return await getattr(Cloud(self.sb, nb), method)(*args, **kwargs)
            finally:
                await nb.close()
        return asyncio.run(run())

    def nb(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            nb = NbApi(self.url)
            try:
                return await getattr(nb, method)(*args, **kwargs)
            finally:
                await nb.close()
        return asyncio.run(run())


def dump_flows(sb: Sandbox, chassis: str) -> list[str]:
    out = sb.ovs(chassis).ofctl("dump-flows", "--no-stats", INT_BRIDGE)
    return [line.strip() for line in out.splitlines() if line.strip() and "reply" not in line]


def flow_cookies(lines: list[str]) -> list[int]:
    return [int(m.group(1), 16) for line in lines if (m := re.search(r"cookie=0x([0-9a-f]+)", line))]


def controller_status(sb: Sandbox, chassis: str) -> dict[str, Any]:
    return read_status(sb.chassis(chassis).status_socket)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


def pings(sb: Sandbox, vm: str, dst: str, count: int = 1, wait: float = 1.0) -> bool:
    result = sb.vm_exec(vm, ["ping", "-c", str(count), "-i", "0.2", "-W", str(wait), dst], check=False)
    return result.returncode == 0


def wait_controllers_ready(sb: Sandbox, timeout: float = 20.0) -> None:
    names = [c.name for c in sb.chassis_list()]

    def ready() -> bool:
        for name in names:
            try:
                st = controller_status(sb, name)
            except (OSError, json.JSONDecodeError):
                return False
            if not st["switch_connected"] or len(st["tunnels"]) != len(names) - 1:
                return False
        return True

    wait_until(ready, timeout, what="controllers connected with full tunnel mesh")


def controller_log(sb: Sandbox, chassis: str) -> str:
    with open(sb.chassis(chassis).controller_log) as f:
        return f.read()


def rx_packets(sb: Sandbox, vm: str, ifname: str = "eth0") -> int:
    out = sb.vm_exec(vm, ["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout
    return int(out)


__all__ = ["SyncCloud", "dump_flows", "flow_cookies", "controller_status", "wait_until", "pings",
           "wait_controllers_ready", "controller_log", "rx_packets"]
