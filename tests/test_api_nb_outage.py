"""The NB db (a real redis-server) stopped and started under a serving API.

A request rides out a short outage (as Neutron retries its database); past the API's wait it gets
503 with Retry-After, reads as well as writes, never a 500; when Redis is back everything resumes by
itself, and a write cut by the outage is either wholly in the NB or not at all."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
import redis

from api_fixtures import free_port
from dfflow.api.server import ApiServer

pytestmark = pytest.mark.persistent_redis  # a restart finds the NB again (AOF, fsync always)


@pytest.fixture
def short_wait_api(nb_url):
    server = ApiServer(nb_url, free_port(), nb_wait=0.3).start()
    yield server
    server.stop()


def _network(http: httpx.Client, cidr: str = "10.0.0.0/24") -> str:
    net = http.post("/networks", json={"network": {"name": "n"}}).json()["network"]["id"]
    assert http.post("/subnets", json={"subnet": {"network_id": net, "cidr": cidr}}).status_code == 201
    return net


def _unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "2"
    error = resp.json()["NeutronError"]
    assert error["type"] == "ServiceUnavailable" and "NB database is unavailable" in error["message"]


def test_reads_and_writes_during_an_outage_are_503_with_retry_after_and_resume_by_themselves(
        short_wait_api, redis_server):
    with httpx.Client(base_url=short_wait_api.url + "/v2.0", timeout=10) as http:
        net = _network(http)
        port = http.post("/ports", json={"port": {"network_id": net}}).json()["port"]
        redis_server.stop()
        _unavailable(http.get("/networks"))
        _unavailable(http.get(f"/ports/{port['id']}"))
        _unavailable(http.post("/ports", json={"port": {"network_id": net}}))
        _unavailable(http.put(f"/ports/{port['id']}", json={"port": {"binding:host_id": "chassis-2"}}))
        _unavailable(http.delete(f"/ports/{port['id']}"))
        redis_server.start()
        assert http.get(f"/ports/{port['id']}").json()["port"]["binding:host_id"] == ""
        moved = http.put(f"/ports/{port['id']}", json={"port": {"binding:host_id": "chassis-2"}})
        assert moved.status_code == 200 and moved.json()["port"]["binding:host_id"] == "chassis-2"
        assert http.post("/ports", json={"port": {"network_id": net}}).status_code == 201


def test_a_request_rides_out_an_outage_shorter_than_the_api_wait(api_default_wait, redis_server):
    with httpx.Client(base_url=api_default_wait.url + "/v2.0", timeout=30) as http:
        net = _network(http)
        redis_server.stop()
        back = threading.Timer(1.5, redis_server.start)
        back.start()
        started = time.monotonic()
        created = http.post("/ports", json={"port": {"network_id": net}})
        waited = time.monotonic() - started
        back.join()
        assert created.status_code == 201, created.text
        assert waited >= 1.0  # it did meet the outage
        assert [p["id"] for p in http.get("/ports").json()["ports"]] == [created.json()["port"]["id"]]


@pytest.fixture
def api_default_wait(nb_url):
    server = ApiServer(nb_url, free_port()).start()
    yield server
    server.stop()


def _audit(url: str) -> list[str]:
    """Every port wholly there: its object, id, referrer entry, claims and their owners agree."""
    r = redis.Redis.from_url(url, decode_responses=True)
    ids = r.smembers("dfflow:ids:lport")
    objects = {k.rsplit(":", 1)[1] for k in r.scan_iter("dfflow:obj:lport:*")}
    assert ids == objects
    problems = []
    for port_id in ids:
        me = f"lport:{port_id}"
        claims = r.smembers(f"dfflow:claims:lport:{port_id}")
        if len(claims) != 2 or any(r.get(f"dfflow:uniq:{c}") != me for c in claims):
            problems.append(port_id)
    owned = {k for k in r.scan_iter("dfflow:uniq:*") if r.get(k).startswith("lport:")}
    assert all(r.get(k)[len("lport:"):] in ids for k in owned)
    assert not problems, problems
    r.close()
    return sorted(ids)


def test_writes_cut_by_an_outage_are_wholly_there_or_not_at_all(short_wait_api, redis_server, nb_url):
    with httpx.Client(base_url=short_wait_api.url + "/v2.0", timeout=10) as http:
        net = _network(http, "10.0.0.0/22")

    async def storm() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=short_wait_api.url + "/v2.0", timeout=30, limits=limits) as c:
            async def one(i: int) -> httpx.Response:
                await asyncio.sleep(i * 0.03)
                return await c.post("/ports", json={"port": {"network_id": net}})
            return await asyncio.gather(*(one(i) for i in range(150)))

    def stop_after_some_writes() -> None:  # the outage falls in the middle of the creates
        with redis.Redis.from_url(nb_url) as r:
            while r.scard("dfflow:ids:lport") < 20:
                time.sleep(0.01)
        redis_server.stop()

    outage = threading.Thread(target=stop_after_some_writes)
    outage.start()
    replies = asyncio.run(storm())
    outage.join()
    redis_server.start()
    codes = sorted({r.status_code for r in replies})
    assert set(codes) == {201, 503}, codes  # some before, some during the outage; never a 500 or 409
    created = {r.json()["port"]["id"] for r in replies if r.status_code == 201}
    stored = _audit(nb_url)
    assert created <= set(stored)
