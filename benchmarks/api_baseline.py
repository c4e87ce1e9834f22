"""`dfflow api` as it allocated before concurrent creates were made safe: the benchmark's baseline.

Run as `python -m benchmarks.api_baseline NB_URL HOST:PORT`. It patches, in this process only, what
changed: the lowest free address and VNI every time, a lost race retried at once at most
ALLOC_RETRIES times, a port's write WATCHing every referrer of its network, redis-py's default
connection pool (it refuses a request beyond 100 connections), no waiting for an unreachable NB."""
from __future__ import annotations

import sys
from typing import Any, Awaitable, Callable, Iterator

from dfflow.api import alloc, app, resource
from dfflow.api.server import serve
from dfflow.nb import rules
from dfflow.nb.store import NbApi


def _old_retries() -> Iterator[Callable[[], Awaitable[bool]]]:
    attempt = 0

    async def retry() -> bool:
        return attempt + 1 < resource.ALLOC_RETRIES

    while True:
        yield retry
        attempt += 1


async def _lowest_vni(self: NbApi, counter: str, floor: int) -> int:
    return alloc.free_vni(ls.segmentation_id for ls in await self.list(table="lswitch")) or 0


async def _check_port_watching_the_network(port: Any, ctx: Any) -> rules.Claims:
    subnets = await rules._subnets_of(ctx, port.lswitch)  # WATCHes the network's referrers
    for i, ip in enumerate(port.ips):
        if rules._subnet_containing(subnets, ip) is None:
            raise rules.ValidationError(f"ips[{i}]", f"{ip} is in no subnet", port.table)
    return []


def main() -> None:
    nb_url, listen = sys.argv[1:3]
    resource.allocation_retries = _old_retries
    NbApi.advance = _lowest_vni  # type: ignore[method-assign]
    rules.WRITE_RULES[rules.LogicalPort.table] = _check_port_watching_the_network
    app.NB_CONNECTIONS = None
    serve(nb_url, listen, nb_wait=0.0)


if __name__ == "__main__":
    main()
