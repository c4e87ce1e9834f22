"""What Neutron fills in when a request leaves it out: MAC addresses, fixed IPs, segmentation ids.

They choose from what is already used, as read from the NB. The NB's uniqueness claims make the
final call; a caller that loses a race to another request re-reads and chooses again. An address
is the lowest free one, except in a request that already lost a race (`contended`): then a random
free one, so that the many requests that raced for the lowest do not race again.
"""
from __future__ import annotations

import contextvars
import ipaddress
import random
import secrets
from typing import Iterable, Iterator

from dfflow.models import VNI_MAX, VNI_MIN, Subnet

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_RNG = random.SystemRandom()  # every API process draws differently, whatever its seed


def random_mac() -> str:
    """A MAC in the OpenStack base fa:16:3e (locally administered, unicast)."""
    tail = secrets.token_bytes(3)
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in tail)


def usable_range(subnet: Subnet) -> tuple[int, int]:
    net = subnet.network
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4 and net.prefixlen <= 30:
        return first + 1, last - 1  # neither the network nor the broadcast address
    if net.version == 6 and net.prefixlen <= 126:
        return first + 1, last  # not the subnet-router anycast address
    return first, last


def pool_ranges(subnet: Subnet) -> list[tuple[int, int]]:
    """The subnet's allocation pools: its usable range minus the gateway."""
    lo, hi = usable_range(subnet)
    if subnet.gateway_ip is None:
        return [(lo, hi)]
    gw = int(ipaddress.ip_address(subnet.gateway_ip))
    return [(a, b) for a, b in ((lo, min(hi, gw - 1)), (max(lo, gw + 1), hi)) if a <= b]


def allocation_pools(subnet: Subnet) -> list[dict[str, str]]:
    make = ipaddress.IPv4Address if subnet.network.version == 4 else ipaddress.IPv6Address
    return [{"start": str(make(a)), "end": str(make(b))} for a, b in pool_ranges(subnet)]


def default_gateway(cidr: str) -> str | None:
    """Neutron's default gateway: the first address after the network address (none for /31, /32)."""
    net = ipaddress.ip_network(cidr)
    if net.num_addresses <= 2:
        return None
    return str(net.network_address + 1)


RANDOM_PROBES = 8  # random draws before walking the pools from a random start
# Set by the API for the rest of a request once it lost a race for a value it chose.
contended: contextvars.ContextVar[bool] = contextvars.ContextVar("contended", default=False)


def free_ip(subnet: Subnet, used: Iterable[str], rng: random.Random = _RNG) -> str | None:
    """A free address of the subnet's pools not in `used` (None when it is full): the lowest one,
    or under `contended` a random one.

    A few random draws find one at once unless the pools are nearly full; then a walk from a
    random offset takes the next free one (it ends within len(used) + 1 steps)."""
    taken = {int(ipaddress.ip_address(ip)) for ip in used
             if ipaddress.ip_address(ip).version == subnet.network.version}
    make = ipaddress.IPv4Address if subnet.network.version == 4 else ipaddress.IPv6Address
    ranges = pool_ranges(subnet)
    size = sum(hi - lo + 1 for lo, hi in ranges)
    if size == 0:
        return None

    def nth(offset: int) -> int:
        for lo, hi in ranges:
            if offset <= hi - lo:
                return lo + offset
            offset -= hi - lo + 1
        raise AssertionError("offset beyond the pools")

    if not contended.get():
        return _lowest_free(ranges, taken, make)
    for _ in range(RANDOM_PROBES):
        candidate = nth(rng.randrange(size))
        if candidate not in taken:
            return str(make(candidate))
    start = rng.randrange(size)
    for step in range(min(size, len(taken) + 1)):
        candidate = nth((start + step) % size)
        if candidate not in taken:
            return str(make(candidate))
    return None


def _lowest_free(ranges: list[tuple[int, int]], taken: set[int], make: type) -> str | None:
    for lo, hi in ranges:
        candidate = lo
        # Each step skips one taken address, so this ends within len(taken) + 1 steps per range.
        while candidate <= hi:
            if candidate not in taken:
                return str(make(candidate))
            candidate += 1
    return None


def in_pools(subnet: Subnet, ip: str) -> bool:
    value = int(ipaddress.ip_address(ip))
    return any(lo <= value <= hi for lo, hi in pool_ranges(subnet))


def free_vni(used: Iterable[int]) -> int | None:
    """The lowest segmentation id not in `used` (only once the NB's high-water mark of VNIs handed
    out has passed VNI_MAX: a new network takes a VNI never used before while there is one)."""
    taken = sorted(set(v for v in used if VNI_MIN <= v <= VNI_MAX))
    candidate = VNI_MIN
    for vni in taken:
        if vni > candidate:
            break
        candidate = vni + 1
    return candidate if candidate <= VNI_MAX else None


def addresses(ips: Iterable[str], version: int) -> Iterator[str]:
    return (ip for ip in ips if ipaddress.ip_address(ip).version == version)
