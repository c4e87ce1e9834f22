"""`dfflow-bench api`: requests/s and latency of create_port, create_network and update_port under
concurrency, against a `dfflow api` on loopback with a private redis-server, compared in one run with
the allocation it replaced (`benchmarks.api_baseline`).

Per server and concurrency level C: a fresh network with a /24 (as when Nova boots many VMs on one
network) takes REQUESTS create_port with C in flight, then REQUESTS update_port (a rename and a second
address each, on distinct ports), then REQUESTS create_network. A request that does not succeed is
counted by its status, not timed as a success.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator

import httpx

from dfflow.sandbox.redisproc import RedisServer

SERVERS = ("dfflow", "baseline")
OPERATIONS = ("create_port", "update_port", "create_network")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(kind: str, nb_url: str) -> Iterator[str]:
    port = _free_port()
    listen = f"127.0.0.1:{port}"
    if kind == "dfflow":
        argv = [os.path.join(os.path.dirname(sys.executable), "dfflow"), "api", "--nb", nb_url, "--listen", listen]
    else:
        argv = [sys.executable, "-m", "benchmarks.api_baseline", nb_url, listen]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{listen}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} API did not start on {url}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # requests still hanging in a graceful shutdown
            proc.kill()
            proc.wait(10)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _drive(client: httpx.AsyncClient, calls: list[Callable[[], Any]], concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: dict[str, int] = {}
    replies: list[Any] = []

    async def one(call: Callable[[], Any]) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                resp = await call()
            except httpx.TransportError as exc:  # the server dropped or refused the connection
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                return
            took = time.perf_counter() - started
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        if resp.status_code < 300:
            latencies.append(took)
            replies.append(resp.json())

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    wall = time.perf_counter() - started
    failed = {str(k): v for k, v in statuses.items() if k >= 300}
    return {"requests": len(calls), "ok": len(latencies), "failed": {**failed, **failures},
            "per_s": len(latencies) / wall if wall else 0.0, "p50_ms": _ms(_percentile(latencies, 0.5)),
            "p99_ms": _ms(_percentile(latencies, 0.99)), "replies": replies}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


async def _level(url: str, concurrency: int, requests: int, level: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url + "/v2.0", timeout=120, limits=limits) as client:
        net = (await client.post("/networks", json={"network": {"name": f"bench-{level}"}})).json()["network"]["id"]
        subnet = (await client.post("/subnets", json={"subnet": {"network_id": net, "cidr": f"10.{level}.0.0/24"}})
                  ).json()["subnet"]["id"]
        result: dict[str, Any] = {}
        ports = [lambda i=i: client.post("/ports", json={"port": {"network_id": net, "name": f"vm-{i}"}})
                 for i in range(requests)]
        result["create_port"] = await _drive(client, ports, concurrency)
        created = [r["port"]["id"] for r in result["create_port"]["replies"]][:requests // 2]
        body = {"port": {"name": "renamed", "fixed_ips": [{"subnet_id": subnet}, {"subnet_id": subnet}]}}
        updates = [lambda p=p: client.put(f"/ports/{p}", json=body) for p in created]
        result["update_port"] = await _drive(client, updates, concurrency)
        nets = [lambda i=i: client.post("/networks", json={"network": {"name": f"n-{level}-{i}"}})
                for i in range(requests)]
        result["create_network"] = await _drive(client, nets, concurrency)
    for figures in result.values():
        figures.pop("replies")
    return result


def run(levels: tuple[int, ...], requests: int, servers: tuple[str, ...] = SERVERS,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    report: dict[str, Any] = {"levels": list(levels), "requests": requests, "servers": {}}
    for kind in servers:
        with tempfile.TemporaryDirectory(prefix="bench-api-") as workdir, \
                RedisServer(workdir, unixsocket=False) as redis, _server(kind, redis.url) as url:
            report["servers"][kind] = {str(c): asyncio.run(_level(url, c, requests, i + 1))
                                       for i, c in enumerate(levels)}
            progress(kind)
    return report


def format_report(report: dict[str, Any]) -> str:
    servers = report["servers"]
    lines = [f"{report['requests']} requests per operation and level (update_port: on half the ports created); "
             f"one /24 per level", "",
             "| operation | in flight | server | ok | failed | req/s | p50 ms | p99 ms | req/s vs baseline |",
             "|---|--:|---|--:|---|--:|--:|--:|--:|"]
    for op in OPERATIONS:
        for level in map(str, report["levels"]):
            base = servers.get("baseline", {}).get(level, {}).get(op)
            for kind, by_level in servers.items():
                f = by_level[level][op]
                ratio = f"{f['per_s'] / base['per_s']:.1f}x" if base and base["per_s"] and kind != "baseline" else ""
                failed = ", ".join(f"{n} x {code}" for code, n in sorted(f["failed"].items())) or "0"
                lines.append(f"| {op} | {level} | {kind} | {f['ok']}/{f['requests']} | {failed} | "
                             f"{f['per_s']:.0f} | {f['p50_ms']} | {f['p99_ms']} | {ratio} |")
    return "\n".join(lines)
