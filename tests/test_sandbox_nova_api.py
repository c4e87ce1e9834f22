"""The sandbox's Nova API (dfflow/sandbox/nova_events.py): Nova's answers to Neutron's
os-server-external-events, and the wait the emulation's processes make on it."""
from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import pytest

from dfflow.sandbox import nova_events, procs, state
from dfflow.sandbox.nova_events import (PLUGGED, UNPLUGGED, BadRequest, EventLog, NovaEvents,
                                            VifPluggingFailed, answer, make_app, parse_events)
from dfflow.sandbox.redisproc import free_port
from dfflow.nova.events import nova_event
from dfflow.nova.notifier import NovaConfig, NovaSender

ON_HOST, NO_HOST, UNKNOWN = (str(uuid.UUID(int=i)) for i in (1, 2, 3))


def event(server: str, name: str = PLUGGED, tag: str = "port-1", **more) -> dict:
    return {"name": name, "server_uuid": server, "tag": tag, **more}


# -- pure: what Nova's API answers ----------------------------------------------------------------------
def test_every_event_of_known_servers_is_taken_and_answered_200():
    code, body, taken = answer(parse_events({"events": [event(ON_HOST), event(ON_HOST, UNPLUGGED)]}),
                               {ON_HOST: "chassis-1"})
    assert code == 200
    assert [(e["name"], e["status"], e["code"]) for e in body["events"]] == [
        (PLUGGED, "completed", 200), (UNPLUGGED, "completed", 200)]
    assert [(e["name"], e["host"], e["status"]) for e in taken] == [(PLUGGED, "chassis-1", "completed"),
                                                                   (UNPLUGGED, "chassis-1", "completed")]


def test_an_unknown_server_gets_404_and_one_without_a_host_422_in_a_207_beside_the_taken_ones():
    code, body, taken = answer(parse_events({"events": [event(UNKNOWN), event(NO_HOST), event(ON_HOST)]}),
                               {ON_HOST: "chassis-1", NO_HOST: None})
    assert code == 207
    assert [(e["server_uuid"], e["status"], e["code"]) for e in body["events"]] == [
        (UNKNOWN, "failed", 404), (NO_HOST, "failed", 422), (ON_HOST, "completed", 200)]
    assert [e["server_uuid"] for e in taken] == [ON_HOST]


def test_no_event_taken_is_a_404_item_not_found():
    code, body, taken = answer(parse_events({"events": [event(UNKNOWN)]}), {ON_HOST: "chassis-1"})
    assert (code, taken) == (404, [])
    assert body == {"itemNotFound": {"code": 404, "message": "No instances found for any event"}}


def test_a_failed_status_sent_is_kept_on_the_taken_event():
    _, body, taken = answer(parse_events({"events": [event(ON_HOST, status="failed")]}), {ON_HOST: "c1"})
    assert body["events"][0]["status"] == "completed" and taken[0]["status"] == "failed"


@pytest.mark.parametrize("body, field", [
    ([], "body"), ({"events": []}, "events"), ({"events": [event(ON_HOST)], "more": 1}, "body"),
    ({"events": ["x"]}, r"events\[0\]"), ({"events": [{"server_uuid": ON_HOST}]}, r"events\[0\]\.name"),
    ({"events": [event(ON_HOST, name="vif-happy")]}, r"events\[0\]\.name"),
    ({"events": [event("not-a-uuid")]}, r"events\[0\]\.server_uuid"),
    ({"events": [event(ON_HOST, status="done")]}, r"events\[0\]\.status"),
    ({"events": [event(ON_HOST, tag="x" * 256)]}, r"events\[0\]\.tag"),
    ({"events": [event(ON_HOST), event(ON_HOST, host="c1")]}, r"events\[1\]: unexpected field"),
])
def test_a_body_nova_s_schema_refuses_is_a_bad_request_naming_the_field(body, field):
    with pytest.raises(BadRequest, match=field):
        parse_events(body)


def test_the_servers_are_the_sandbox_s_vms_on_the_chassis_of_their_vif_that_is_up(tmp_path):
    state.save(str(tmp_path), {"vms": {
        "M": {"uuid": ON_HOST, "vifs": [{"chassis": "chassis-1", "up": False}, {"chassis": "chassis-2", "up": True}]},
        "N": {"uuid": NO_HOST, "vifs": []}}})
    assert nova_events.sandbox_servers(str(tmp_path)) == {ON_HOST: "chassis-2", NO_HOST: None}
    assert nova_events.sandbox_servers(str(tmp_path / "none")) == {}


# -- the app: Nova's API and the emulation's long poll, over HTTP -----------------------------------------
@pytest.fixture
def nova_app(tmp_path):
    state.save(str(tmp_path), {"vms": {"M": {"uuid": ON_HOST, "vifs": [{"chassis": "chassis-1", "up": True}]}}})
    log = EventLog()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(str(tmp_path), log)),
                               base_url="http://nova")
    return client, log


async def test_a_posted_event_is_answered_as_nova_does_and_wakes_the_waiter_expecting_it(nova_app):
    client, log = nova_app
    cursor = (await client.get("/sandbox/events")).json()["last"]
    waiting = asyncio.ensure_future(client.get("/sandbox/events", params={
        "after": cursor, "name": PLUGGED, "server": ON_HOST, "tag": "port-1", "timeout": 5}))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    other = await client.post("/v2.1/os-server-external-events", json={"events": [event(ON_HOST, tag="port-2")]})
    assert other.status_code == 200
    await asyncio.sleep(0.1)
    assert not waiting.done()  # another port's event is not the one waited for
    sent = time.time()
    reply = await client.post("/v2.1/os-server-external-events",
                              json={"events": [event(ON_HOST), event(UNKNOWN)]})
    assert reply.status_code == 207 and [e["code"] for e in reply.json()["events"]] == [200, 404]
    found = (await asyncio.wait_for(waiting, 5)).json()["events"]
    assert [(e["name"], e["tag"], e["host"]) for e in found] == [(PLUGGED, "port-1", "chassis-1")]
    assert found[0]["seq"] == cursor + 2 and found[0]["at"] >= sent
    assert log.stats == {PLUGGED: 2, "refused_events": 1}


async def test_a_bad_body_is_a_400_and_nothing_is_taken(nova_app):
    client, log = nova_app
    reply = await client.post("/v2.1/os-server-external-events", content=b"{not json")
    assert reply.status_code == 400 and "not JSON" in reply.json()["badRequest"]["message"]
    reply = await client.post("/v2.1/os-server-external-events", json={"events": [event(ON_HOST, status="x")]})
    assert reply.status_code == 400 and "events[0].status" in reply.json()["badRequest"]["message"]
    assert (log.events, log.stats["bad_requests"]) == ([], 2)


async def test_a_wait_that_sees_no_matching_event_returns_none_after_its_timeout(nova_app):
    client, _ = nova_app
    reply = await client.get("/sandbox/events", params={"after": 0, "tag": "port-1", "timeout": 0.2})
    assert reply.json()["events"] == []


# -- the process `sandbox up` starts, fed by dfflow's own Nova notifier -------------------------------------
@pytest.fixture
def nova_process(tmp_path):
    sandbox_dir = os.path.realpath(tmp_path)
    state.save(sandbox_dir, {"vms": {"M": {"uuid": ON_HOST, "vifs": [{"chassis": "chassis-1", "up": True}]}}})
    port = free_port()
    proc = nova_events.start(sandbox_dir, port)
    try:
        nova_events.wait_ready(proc, nova_events.url_of(port))
        assert nova_events.is_ours(proc.pid, sandbox_dir) and procs.alive(proc.pid)
        yield nova_events.url_of(port)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_sandbox_s_nova_takes_the_notifier_s_events_and_a_waiter_gets_them(nova_process):
    nova = NovaEvents(nova_process)
    cursor = await nova.cursor()
    sender = NovaSender(NovaConfig(url=nova_process, batch_window=0.0))
    task = asyncio.ensure_future(sender.run())
    try:
        sender.submit([nova_event(PLUGGED, ON_HOST, "port-1"), nova_event(PLUGGED, UNKNOWN, "port-9")])
        got = await nova.wait_vif_plugged(ON_HOST, "port-1", "chassis-1", cursor, 5.0, "test")
        assert (got["server_uuid"], got["tag"], got["host"]) == (ON_HOST, "port-1", "chassis-1")
        while sender.stats["batches"] < 1:
            await asyncio.sleep(0.01)
        assert (sender.stats["sent"], sender.stats["event_failures"], sender.last_error) == (2, 1, None)
        with pytest.raises(VifPluggingFailed, match="no network-vif-plugged event for port port-1 on host "
                                                    "chassis-1 within 0.3s"):
            await nova.wait_vif_plugged(ON_HOST, "port-1", "chassis-1", got["seq"], 0.3, "boot of M")
        sender.submit([nova_event(PLUGGED, ON_HOST, "port-1") | {"status": "failed"}])
        with pytest.raises(VifPluggingFailed, match="reported network-vif-plugged failed for port port-1"):
            await nova.wait_vif_plugged(ON_HOST, "port-1", "chassis-1", got["seq"], 5.0, "boot of M")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
