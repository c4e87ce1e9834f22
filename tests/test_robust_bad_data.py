"""Malformed events and objects written straight into a running sandbox's Redis: every other port is
still programmed, traffic is unaffected, the controllers count and show what they skipped.

Before, one malformed event stopped the subscriber of every controller on the topic (later ports
got no flows), and a port with a bad field stopped later ports of its network on remote chassis."""
from __future__ import annotations

import json

import pytest

from dfflow.sandbox.cloud import DEFAULT_TOPIC
from dfflow.models import LogicalPort
from controller_fixtures import controller_status, network_with_vms, pings, running_cloud, wait_until
from nb_corrupt import publish_raw, write_object

pytestmark = pytest.mark.ovs


def test_bad_events_and_objects_are_skipped_and_counted_and_everything_else_is_programmed():
    with running_cloud(3) as cloud:
        sb = cloud.sb
        network_with_vms(cloud, {"A1": ("chassis-1", "10.0.0.11"), "B1": ("chassis-2", "10.0.0.21"),
                                 "C1": ("chassis-3", "10.0.0.31")})
        c1_port = sb.vm("C1").vifs[0].port_id

        async def corrupt(nb):
            await publish_raw(nb.redis, DEFAULT_TOPIC, "{this is not json")
            await publish_raw(nb.redis, DEFAULT_TOPIC, json.dumps({
                "table": "lport", "action": "update", "id": c1_port, "topic": DEFAULT_TOPIC,
                "version": 10**9}))  # an update without its object
            await write_object(nb.redis, "lport", {   # a port of net1 with a malformed MAC
                "id": "p-bad-mac", "topic": DEFAULT_TOPIC, "lswitch": "net1", "mac": "fa:16:3e:zz:00:01",
                "ips": ["10.0.0.99"], "binding_chassis": "chassis-3"})
            # C1's port as a newer dfflow would write it: a field this one does not know
            current = (await nb.get("lport", c1_port)).to_dict()
            await write_object(nb.redis, "lport", dict(current, qos_policy_id="gold"))
        cloud.with_nb(corrupt)

        # A port created after the bad data is programmed everywhere, and the old ones still are.
        # (Written to the NB directly: the API's allocation lists the network's ports, and names the
        # malformed one in a 500; and without the project's default group the API would give it, so without
        # port security, which with no group would let nothing in.)
        cloud.nb("create", LogicalPort(id="p-d1", topic=DEFAULT_TOPIC, lswitch="net1", mac="fa:16:3e:00:00:41",
                                       ips=["10.0.0.41"], binding_chassis="chassis-3", port_security=False))
        sb.plug_vm("D1", "chassis-3", "p-d1", "fa:16:3e:00:00:41", ip="10.0.0.41/24")
        wait_until(lambda: pings(sb, "A1", "10.0.0.41"), 15, what="A1 -> D1 (created after the bad data)")
        wait_until(lambda: pings(sb, "B1", "10.0.0.41"), 15, what="B1 -> D1")
        for src, dst in (("A1", "10.0.0.21"), ("A1", "10.0.0.31"), ("B1", "10.0.0.31")):
            assert pings(sb, src, dst, count=3), f"{src} -> {dst}"
        for ch in ("chassis-1", "chassis-2", "chassis-3"):
            status = controller_status(sb, ch)
            assert status["bus"].get("bad_events", 0) >= 2, (ch, status["bus"])
            assert status["bus"].get("bad_objects", 0) >= 1, (ch, status["bus"])
            assert any(b["key"] == "lport:p-bad-mac" and "mac" in b["problem"] for b in status["bad_data"])
            assert not any(b["key"] == f"lport:{c1_port}" and b["kind"] == "bad_objects"
                           for b in status["bad_data"]), "a field from a newer writer was refused"
            assert status["stats"].get("task_crashes", 0) == 0
        assert all(ch["controller_alive"] for ch in sb.status()["chassis"])
