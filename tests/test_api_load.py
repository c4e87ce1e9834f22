"""Concurrent creates and updates through real HTTP on a real uvicorn and a real redis-server.

As when Nova boots many VMs at once: every request succeeds and gets its own address, MAC and VNI;
a client never sees a conflict the server can resolve itself (Neutron retries its own)."""
from __future__ import annotations

import asyncio
import ipaddress

import httpx

from api_fixtures import api, nb_call  # noqa: F401 (fixtures)

PORTS = 200
NETWORKS = 50


async def _post_many(url: str, path: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url + "/v2.0", timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.post(path, json=body) for body in bodies))


async def _put_many(url: str, calls: list[tuple[str, dict]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=len(calls))
    async with httpx.AsyncClient(base_url=url + "/v2.0", timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.put(path, json=body) for path, body in calls))


def _network(url: str, cidr: str) -> tuple[str, str]:
    with httpx.Client(base_url=url + "/v2.0", timeout=10) as http:
        net = http.post("/networks", json={"network": {"name": "load"}}).json()["network"]
        subnet = http.post("/subnets", json={"subnet": {"network_id": net["id"], "cidr": cidr}}).json()["subnet"]
    return net["id"], subnet["id"]


def _ok(replies: list[httpx.Response], status: int) -> list[dict]:
    failed = [(r.status_code, r.text[:200]) for r in replies if r.status_code != status]
    assert not failed, f"{len(failed)} of {len(replies)} failed, e.g. {failed[:3]}"
    return [r.json() for r in replies]


def test_200_concurrent_port_creates_on_one_24_all_succeed_with_distinct_addresses_and_macs(api, nb_url):  # noqa: F811
    net, subnet = _network(api.url, "10.1.0.0/24")
    bodies = [{"port": {"network_id": net, "name": f"vm-{i}", "device_owner": "compute:nova"}}
              for i in range(PORTS)]
    ports = [r["port"] for r in _ok(asyncio.run(_post_many(api.url, "/ports", bodies)), 201)]
    ips = [p["fixed_ips"][0]["ip_address"] for p in ports]
    assert len(set(ips)) == PORTS
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.1.0.0/24") and ip != "10.1.0.1"
               for ip in ips)
    assert all(p["fixed_ips"][0]["subnet_id"] == subnet for p in ports)
    assert len({p["mac_address"] for p in ports}) == PORTS
    stored = nb_call(nb_url, "list", "lport")
    assert sorted(p.ips[0] for p in stored) == sorted(ips)


def test_a_nearly_full_subnet_hands_out_its_last_addresses_to_concurrent_creates(api):  # noqa: F811
    net, _ = _network(api.url, "10.2.0.0/27")  # 29 addresses after the gateway: 40 ask, 29 get one
    bodies = [{"port": {"network_id": net}} for _ in range(40)]
    replies = asyncio.run(_post_many(api.url, "/ports", bodies))
    created = [r.json()["port"] for r in replies if r.status_code == 201]
    full = [r.json()["NeutronError"]["type"] for r in replies if r.status_code != 201]
    assert len(created) == 29 and len({p["fixed_ips"][0]["ip_address"] for p in created}) == 29
    assert full == ["IpAddressGenerationFailure"] * 11


def test_50_concurrent_network_creates_all_succeed_with_distinct_vnis(api, nb_url):  # noqa: F811
    bodies = [{"network": {"name": f"net-{i}"}} for i in range(NETWORKS)]
    nets = [r["network"] for r in _ok(asyncio.run(_post_many(api.url, "/networks", bodies)), 201)]
    vnis = [n["provider:segmentation_id"] for n in nets]
    assert len(set(vnis)) == NETWORKS
    assert sorted(ls.segmentation_id for ls in nb_call(nb_url, "list", "lswitch")) == sorted(vnis)


def test_a_vni_is_never_handed_out_twice_even_after_its_network_is_deleted(api):  # noqa: F811
    with httpx.Client(base_url=api.url + "/v2.0", timeout=10) as http:
        taken = http.post("/networks", json={"network": {"provider:segmentation_id": 7}}).json()["network"]
        seen = []
        for _ in range(3):
            net = http.post("/networks", json={"network": {}}).json()["network"]
            seen.append(net["provider:segmentation_id"])
            assert http.delete(f"/networks/{net['id']}").status_code == 204
        assert http.delete(f"/networks/{taken['id']}").status_code == 204
        seen.append(http.post("/networks", json={"network": {}}).json()["network"]["provider:segmentation_id"])
    assert len(set(seen)) == len(seen) and seen == sorted(seen) and 7 not in seen


def test_concurrent_port_updates_allocate_distinct_addresses_and_never_conflict(api, nb_url):  # noqa: F811
    net, subnet = _network(api.url, "10.3.0.0/24")
    ports = [r["port"] for r in _ok(asyncio.run(_post_many(
        api.url, "/ports", [{"port": {"network_id": net}} for _ in range(60)])), 201)]
    # Each port keeps its address and asks for a second one in the same subnet, all at once.
    calls = [(f"/ports/{p['id']}", {"port": {"fixed_ips": [{"subnet_id": subnet}, {"subnet_id": subnet}]}})
             for p in ports]
    updated = [r["port"] for r in _ok(asyncio.run(_put_many(api.url, calls)), 200)]
    for before, after in zip(ports, updated):
        assert after["fixed_ips"][0] == before["fixed_ips"][0] and len(after["fixed_ips"]) == 2
    every = [f["ip_address"] for p in updated for f in p["fixed_ips"]]
    assert len(every) == 120 and len(set(every)) == 120
    # Many clients renaming one port at once: compare-and-set retries inside, never a 409 or 412 out.
    one = ports[0]["id"]
    renames = [(f"/ports/{one}", {"port": {"name": f"name-{i}"}}) for i in range(40)]
    _ok(asyncio.run(_put_many(api.url, renames)), 200)
    assert nb_call(nb_url, "get", "lport", one).name.startswith("name-")
