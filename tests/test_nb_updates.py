"""An update of an object the subscriber holds: the fields it changes are checked, the others are the held
version's (checked when it came); a bad value in a changed field is refused as in a whole object."""
from __future__ import annotations

import asyncio
import weakref

import pytest

import dfflow.models.port as port_module
from dfflow.models import LogicalPort
from dfflow.nb.bus import Subscriber
from nb_corrupt import write_object
from nbtopo import TOPIC, network
from test_nb_bus import eventually

CHECKERS = ("check_id", "check_optional_id", "check_mac", "check_ip", "check_str", "check_bool", "check_choice",
            "check_profile")


def port_dict(**change):
    return {**LogicalPort(id="p1", topic=TOPIC, lswitch="net1", mac="fa:16:3e:00:00:01", ips=["10.1.0.5"],
                          binding_chassis="c1", binding_profile={"k": "v"}, security_groups=[],
                          inactive_bindings=[]).to_dict(), **change}


@pytest.fixture
def fields_checked(monkeypatch):
    """The names of the port fields the port's checkers are called on."""
    names: list[str] = []
    for checker in CHECKERS:
        real = getattr(port_module, checker)

        def spy(name, *args, _real=real, **kwargs):
            names.append(name)
            return _real(name, *args, **kwargs)
        monkeypatch.setattr(port_module, checker, spy)
    real_pairs = port_module.check_address_pairs
    monkeypatch.setattr(port_module, "check_address_pairs",
                        lambda pairs, *args: names.append("allowed_address_pairs") or real_pairs(pairs, *args))
    return names


async def test_an_update_checks_only_the_fields_it_changes_and_takes_the_others_from_the_held_version(
        nb, nb_url, fields_checked):
    await network(nb, "net1", "10.1.0.0/24", 101)
    got = []
    sub = Subscriber(nb_url, callback=got.append)
    await sub.start()
    await sub.add_topic(TOPIC)
    await write_object(nb.redis, "lport", port_dict(mac="FA:16:3E:00:00:01"))
    await eventually(lambda: any(e["id"] == "p1" for e in got))
    held = got[-1]["model"]
    assert {"mac", "ips[0]", "binding_profile", "binding_chassis", "allowed_address_pairs"} <= set(fields_checked)
    fields_checked.clear()
    await write_object(nb.redis, "lport", port_dict(mac="fa:16:3e:00:00:01", binding_chassis="c2"))
    await eventually(lambda: got[-1]["model"].binding_chassis == "c2")
    moved = got[-1]["model"]
    assert fields_checked == ["binding_chassis"]  # (and the version, by `check_int`: not spied on)
    assert moved is not held and held.binding_chassis == "c1"
    assert moved == LogicalPort.from_dict(port_dict(binding_chassis="c2", version=moved.version))
    assert moved.ips is held.ips and moved.binding_profile is held.binding_profile  # the checked values kept
    # the handler is told what was compared (the engine need not compare them again); a first version: nothing
    assert "changed_from" not in next(e for e in got if e["id"] == "p1")
    assert got[-1]["changed_from"][0] is held and set(got[-1]["changed_from"][1]) == {"version", "binding_chassis"}
    assert sub.stats["bad_objects"] == 0
    await sub.stop()


async def test_a_bad_value_in_a_changed_field_of_an_update_is_logged_counted_and_skipped(nb, nb_url, caplog):
    await network(nb, "net1", "10.1.0.0/24", 101)
    got = []
    sub = Subscriber(nb_url, callback=got.append)
    await sub.start()
    await sub.add_topic(TOPIC)
    inactive = [{"host": "c2", "vnic_type": "normal", "profile": {}}]
    await write_object(nb.redis, "lport", port_dict(inactive_bindings=inactive))
    await eventually(lambda: any(e["id"] == "p1" for e in got))
    bad = {"binding_chassis": "not an id!",  # the changed field itself
           "binding_profile": {"k": "x" * 5000},  # too big
           "enabled": 1}  # 1 == True in Python, not in JSON
    for name, value in bad.items():
        await write_object(nb.redis, "lport", port_dict(inactive_bindings=inactive, **{name: value}))
    # the unchanged inactive binding's host now the active one: a rule across fields, checked again
    await write_object(nb.redis, "lport", port_dict(inactive_bindings=inactive, binding_chassis="c2"))
    await write_object(nb.redis, "lport", port_dict(inactive_bindings=inactive, binding_chassis="c3"))
    await eventually(lambda: got[-1]["model"].binding_chassis == "c3")
    assert [e["model"].binding_chassis for e in got if e["id"] == "p1"] == ["c1", "c3"]
    assert sub.stats["bad_objects"] == 4
    problems = [b["problem"] for b in sub.bad if b["key"] == "lport:p1"]
    for problem, field in zip(problems, ("lport.binding_chassis", "lport.binding_profile", "lport.enabled",
                                         "lport.inactive_bindings[0].host")):
        assert field in problem, problems
    assert sum("skipped a malformed NB object lport:p1" in r.getMessage() for r in caplog.records) == 4
    await sub.stop()


async def test_the_version_an_update_replaced_is_released_once_delivered_not_when_the_next_event_comes(nb, nb_url):
    await network(nb, "net1", "10.1.0.0/24", 101)
    delivered, first = [], []

    def handler(event):  # keeps no event
        delivered.append((event["id"], event["model"].binding_chassis))
        if not first:
            first.append(weakref.ref(event["model"]))
    sub = Subscriber(nb_url, callback=handler)
    await sub.start()
    await sub.add_topic(TOPIC)
    await write_object(nb.redis, "lport", port_dict())
    await eventually(lambda: ("p1", "c1") in delivered)
    await write_object(nb.redis, "lport", port_dict(binding_chassis="c2"))
    await eventually(lambda: ("p1", "c2") in delivered)
    await asyncio.sleep(0.05)  # the subscriber back waiting for the next burst; none comes
    assert first[0]() is None  # the replaced version (the update's `changed_from`) is gone
    await sub.stop()
