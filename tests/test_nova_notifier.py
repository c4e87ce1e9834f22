"""The Nova notifier on a real NB bus, against a recorder standing in for Nova's API."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis.asyncio as aioredis

from api_fixtures import ApiServer, free_port, nb_call  # noqa: F401
from dfflow.models import InactiveBinding, LogicalPort, LogicalSwitch, PortStatus, Subnet
from dfflow.nova.events import PLUGGED, UNPLUGGED
from dfflow.nova.notifier import NovaConfig, NovaNotifier
from nova_recorder import NovaRecorder

FAST = dict(batch_window=0.01, retry_base=0.05, retry_max=0.2)


async def _network(nb, topic="tenant-a"):
    await nb.create(LogicalSwitch(id=f"net-{topic}", topic=topic, segmentation_id=100 + len(topic)))
    await nb.create(Subnet(id=f"sn-{topic}", topic=topic, lswitch=f"net-{topic}", cidr="10.6.0.0/24"))


async def _port(nb, port_id, topic="tenant-a", device_id="vm-1", host="src", **fields):
    return await nb.create(LogicalPort(id=port_id, topic=topic, lswitch=f"net-{topic}",
                                       mac=f"fa:16:3e:00:00:{sum(map(ord, port_id)) % 256:02x}",
                                       device_owner="compute:nova",
                                       device_id=device_id, binding_chassis=host, **fields))


async def _up(nb, port_id, *hosts, topic="tenant-a"):
    """A chassis' report: the port's VIF is up on `hosts` (what the controllers write)."""
    current = await nb.get("lport_status", port_id)
    up = {h: (current.up.get(h) if current and h in current.up else time.time()) for h in hosts}
    if current is None:
        await nb.create(PortStatus(id=port_id, topic=topic, up=up))
    else:
        await nb.update(current.replace(up=up))


async def _vm_port(nb):
    """Port p1 of server vm-1, bound to host src."""
    await _network(nb)
    await _port(nb, "p1")


async def _counted(made: NovaNotifier, name: str, value: int) -> dict:
    """The notifier's status once its counter `name` reached `value` (it counts after Nova answered)."""
    deadline = time.monotonic() + 10
    while made.status()["events"].get(name, 0) < value:
        assert time.monotonic() < deadline, made.status()
        await asyncio.sleep(0.01)
    return made.status()


def _names(events, port_id):
    return [e["name"] for e in events if e["tag"] == port_id]


@pytest.fixture
async def notifier(nb, nb_url):
    started: list[NovaNotifier] = []

    async def start(nova: NovaRecorder, **options) -> NovaNotifier:
        config = NovaConfig(url=nova.url, token="nova-token", **{**FAST, **options})
        made = NovaNotifier(nb_url, config)
        started.append(made)
        await made.start()
        return made

    yield start
    for made in started:
        await made.stop()


async def test_plugged_on_up_and_unplugged_on_down_for_active_and_inactive_hosts(nb, notifier):
    await _vm_port(nb)
    with NovaRecorder() as nova:
        made = await notifier(nova)
        await _up(nb, "p1", "src")
        await nova.until(lambda ev: _names(ev, "p1") == [PLUGGED])
        assert nova.events == [{"name": PLUGGED, "server_uuid": "vm-1", "tag": "p1", "status": "completed"}]
        request = nova.requests[0]
        assert request["path"] == "/v2.1/os-server-external-events"
        assert request["headers"]["X-Auth-Token"] == "nova-token"
        # A live migration's destination: an inactive binding, then its VIF.
        await nb.modify("lport", "p1", lambda p: p.replace(inactive_bindings=[InactiveBinding("dst")]))
        await _up(nb, "p1", "src", "dst")
        await nova.until(lambda ev: _names(ev, "p1") == [PLUGGED, PLUGGED])
        await nb.modify("lport", "p1", lambda p: p.replace(binding_chassis="dst",
                                                           inactive_bindings=[InactiveBinding("src")]))
        await _up(nb, "p1", "dst")  # the source unplugs
        await nova.until(lambda ev: _names(ev, "p1") == [PLUGGED, PLUGGED, UNPLUGGED])
        await _up(nb, "p1")  # and the destination (the VM is gone)
        await nova.until(lambda ev: _names(ev, "p1") == [PLUGGED, PLUGGED, UNPLUGGED, UNPLUGGED])
        status = await _counted(made, "sent", 4)
        assert (status["events"]["sent"], status["errors"], status["queue"]) == (4, 0, 0)


async def test_failures_are_retried_with_back_off_and_counted(nb, notifier):
    await _vm_port(nb)
    with NovaRecorder(fail_first=3) as nova:
        made = await notifier(nova)
        await _up(nb, "p1", "src")
        await nova.until(lambda ev: _names(ev, "p1") == [PLUGGED])
        assert [r["status"] for r in nova.requests] == [500, 500, 500, 200]
        assert made.status()["events"]["retries"] == 3 and made.status()["errors"] == 0
        gaps = [b["at"] - a["at"] for a, b in zip(nova.requests, nova.requests[1:])]
        assert all(gap >= wait * 0.99 for gap, wait in zip(gaps, (0.05, 0.1, 0.2))), gaps  # doubling back-off
    with NovaRecorder(fail_first=100) as nova:  # never answers: given up after max_attempts, counted
        made = await notifier(nova, max_attempts=3)
        await _up(nb, "p1")
        status = await _counted(made, "dropped_failed", 1)
        assert (status["events"]["dropped_failed"], status["errors"], len(nova.requests)) == (1, 1, 3)
        assert "gave up on 1 events after 3 attempts" in status["last_error"]


async def test_keystone_credentials_log_in_once_and_again_when_the_token_is_revoked(nb, notifier):
    from dfflow.nova.keystone import KeystoneCredentials

    await _vm_port(nb)
    with NovaRecorder(password="s3cret") as nova:
        credentials = KeystoneCredentials(nova.keystone_url, "neutron", "s3cret", "service")
        made = await notifier(nova, credentials=credentials)
        await _up(nb, "p1", "src")
        await nova.until(lambda ev: len(ev) == 1)
        await _up(nb, "p1")
        await nova.until(lambda ev: len(ev) == 2)
        assert nova.logins == 1 and {r["headers"]["X-Auth-Token"] for r in nova.requests} == {"token-1"}
        nova.tokens.clear()  # revoked: Nova answers 401, the notifier logs in again and resends
        await _up(nb, "p1", "src")
        await nova.until(lambda ev: len(ev) == 3)
        assert [(r["status"], r["headers"]["X-Auth-Token"]) for r in nova.requests[2:]] == [
            (401, "token-1"), (200, "token-2")]
        assert made.status()["errors"] == 0
    with NovaRecorder(password="other") as nova:  # wrong credentials: retried, then given up, counted
        credentials = KeystoneCredentials(nova.keystone_url, "neutron", "s3cret", "service")
        made = await notifier(nova, credentials=credentials, max_attempts=2)
        await _up(nb, "p1")
        status = await _counted(made, "dropped_failed", 1)
        assert nova.requests == [] and "Keystone" in status["last_error"] and "HTTP 401" in status["last_error"]


async def test_rejections_and_unknown_servers_are_not_retried(nb, notifier):
    await _vm_port(nb)
    with NovaRecorder(status=404) as nova:
        made = await notifier(nova)
        await _up(nb, "p1", "src")
        await _counted(made, "not_found", 1)
        await asyncio.sleep(0.2)
        assert len(nova.requests) == 1 and made.status()["errors"] == 0
    with NovaRecorder(status=403) as nova:
        made = await notifier(nova)
        await _up(nb, "p1")
        await _counted(made, "rejected", 1)
        await asyncio.sleep(0.2)
        assert len(nova.requests) == 1 and made.status()["errors"] == 1
        assert "HTTP 403" in made.status()["last_error"]


async def test_no_device_id_no_event_and_new_topics_are_followed(nb, notifier):
    await _network(nb)
    await _port(nb, "quiet", device_id="")
    with NovaRecorder() as nova:
        await notifier(nova)
        await _up(nb, "quiet", "src")
        # A tenant that did not exist when the notifier started.
        await _network(nb, topic="tenant-new")
        await _port(nb, "p2", topic="tenant-new", device_id="vm-2")
        await _up(nb, "p2", "src", topic="tenant-new")
        await nova.until(lambda ev: _names(ev, "p2") == [PLUGGED])
        assert nova.events == [{"name": PLUGGED, "server_uuid": "vm-2", "tag": "p2", "status": "completed"}]


async def test_state_at_start_is_not_announced_and_a_reconnect_resends_nothing_stale(nb, nb_url, notifier):
    await _network(nb)
    await _port(nb, "p1")
    await _port(nb, "p2", device_id="vm-2")
    await _up(nb, "p1", "src")  # before the notifier starts: not news to announce
    with NovaRecorder() as nova:
        made = await notifier(nova)
        await _up(nb, "p2", "src")
        await nova.until(lambda ev: len(ev) == 1)
        # Drop the notifier's NB connections and change p1 while it is away: the resync finds that change,
        # and only it (p2's plug is not sent again).
        admin = aioredis.from_url(nb_url)
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await _up(nb, "p1")
        await admin.aclose()
        await nova.until(lambda ev: len(ev) == 2)
        await asyncio.sleep(0.5)
        assert [(e["tag"], e["name"]) for e in nova.events] == [("p2", PLUGGED), ("p1", UNPLUGGED)]
        assert made.status()["bus"]["disconnects"] >= 1


def test_dfflow_api_runs_the_notifier_and_shows_its_status(nb_url):
    """`dfflow api --nova-url`: a port made and bound through the API, its VIF reported up -> Nova hears it."""
    from dfflow.models import Chassis
    with NovaRecorder() as nova:
        server = ApiServer(nb_url, free_port(), nova_url=nova.url, nova_token="T").start()
        try:
            http = httpx.Client(base_url=server.url, timeout=10)
            deadline = time.monotonic() + 10
            while not (http.get("/dfflow/status").json()["nova_notifier"] or {}).get("ready"):
                assert time.monotonic() < deadline, http.get("/dfflow/status").text
                time.sleep(0.02)
            nb_call(nb_url, "create", Chassis(id="src", topic="chassis", tunnel_ip="192.0.2.1"))
            net = http.post("/v2.0/networks", json={"network": {}}).json()["network"]["id"]
            http.post("/v2.0/subnets", json={"subnet": {"network_id": net, "cidr": "10.6.0.0/24"}})
            port = http.post("/v2.0/ports", json={"port": {
                "network_id": net, "device_id": "vm-9", "device_owner": "compute:nova",
                "binding:host_id": "src"}}).json()["port"]
            nb_call(nb_url, "create", PortStatus(id=port["id"], topic=port["project_id"], up={"src": 1.0}))
            nova.wait_for(lambda ev: len(ev) == 1)
            assert nova.events == [{"name": PLUGGED, "server_uuid": "vm-9", "tag": port["id"],
                                    "status": "completed"}]
            assert http.get(f"/v2.0/ports/{port['id']}").json()["port"]["status"] == "ACTIVE"
            deadline = time.monotonic() + 10  # it counts once Nova has answered
            while (status := http.get("/dfflow/status").json()["nova_notifier"])["events"].get("sent") != 1:
                assert time.monotonic() < deadline, status
                time.sleep(0.01)
            assert (status["errors"], status["url"]) == (0, nova.url)
        finally:
            server.stop()


def test_the_queue_is_bounded_and_drops_its_oldest_events():
    from dfflow.nova.events import nova_event
    from dfflow.nova.notifier import NovaSender

    sender = NovaSender(NovaConfig(url="http://127.0.0.1:9/v2.1", max_queue=3))
    sender.submit([nova_event(PLUGGED, "vm", f"p{i}") for i in range(5)])
    assert [e["tag"] for e in sender.queue] == ["p2", "p3", "p4"]
    assert (sender.stats["queued"], sender.stats["dropped_overflow"]) == (5, 2)
    assert "queue full (3)" in sender.last_error


def test_dfflow_api_takes_the_nova_endpoint_from_its_options_or_environment(nb_url):
    import os
    import subprocess
    import sys

    from click.testing import CliRunner

    from dfflow.cli import main

    refused = CliRunner().invoke(main, ["api", "--nb", nb_url, "--nova-url", "nova:8774"])
    assert refused.exit_code == 2 and "--nova-url 'nova:8774': expected an http" in refused.output
    refused = CliRunner().invoke(main, ["api", "--nb", nb_url, "--nova-url", "http://nova/v2.1", "--nova-auth-url",
                                        "http://keystone:5000", "--nova-username", "neutron"])
    assert refused.exit_code == 2 and "needs --nova-password, --nova-project" in refused.output
    port = free_port()
    with NovaRecorder() as nova:
        env = dict(os.environ, DFFLOW_NOVA_URL=nova.url, DFFLOW_NOVA_TOKEN="from-env")
        proc = subprocess.Popen([sys.executable, "-m", "dfflow.cli", "api", "--nb", nb_url, "--listen",
                                 f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/dfflow/status").json()["nova_notifier"]
                    if status["ready"]:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "dfflow api did not start"
                time.sleep(0.1)
            assert status["url"] == nova.url
            nb_call(nb_url, "create", LogicalSwitch(id="n", topic="t", segmentation_id=7))
            nb_call(nb_url, "create", Subnet(id="s", topic="t", lswitch="n", cidr="10.6.0.0/24"))
            nb_call(nb_url, "create", LogicalPort(id="p", topic="t", lswitch="n", mac="fa:16:3e:00:00:09",
                                                  device_id="vm", binding_chassis="h"))
            nb_call(nb_url, "create", PortStatus(id="p", topic="t", up={"h": 1.0}))
            nova.wait_for(lambda ev: len(ev) == 1)
            assert nova.requests[0]["headers"]["X-Auth-Token"] == "from-env"
        finally:
            proc.terminate()
            proc.wait(10)
