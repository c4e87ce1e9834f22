"""VifEvents: which Nova events the NB's changes call for (pure: NB events in, Nova events out)."""
from __future__ import annotations

from dfflow.nova.events import PLUGGED, UNPLUGGED, VifEvents


def port(active="src", inactive=(), migrating_to=None, device_id="vm-1"):
    return {"table": "lport", "action": "update", "id": "p1", "object": {
        "binding_chassis": active, "device_id": device_id,
        "inactive_bindings": [{"host": h, "vnic_type": "normal", "profile": {}} for h in inactive],
        "binding_profile": {"migrating_to": migrating_to} if migrating_to else {}}}


def status(**up):
    return {"table": "lport_status", "action": "update", "id": "p1", "object": {"up": up}}


def names(found):
    assert all(e["server_uuid"] == "vm-1" and e["tag"] == "p1" and e["status"] == "completed" for e in found)
    return [e["name"] for e in found]


def test_plugged_and_unplugged_on_the_active_host():
    vif = VifEvents()
    assert vif.apply(port()) == []
    assert names(vif.apply(status(src=1.0))) == [PLUGGED]
    assert vif.apply(status(src=1.0)) == []  # the same report again
    assert names(vif.apply(status())) == [UNPLUGGED]
    assert names(vif.apply(status(src=2.0))) == [PLUGGED]
    assert names(vif.apply(status(src=3.0))) == [PLUGGED]  # plugged anew (a new `since`) without a gap seen
    assert names(vif.apply({"table": "lport_status", "action": "delete", "id": "p1", "object": None})) == [
        UNPLUGGED]


def test_binding_extended_migration():
    vif = VifEvents()
    vif.apply(port())
    vif.apply(status(src=1.0))
    assert vif.apply(port(inactive=["dst"])) == []  # the conductor's inactive binding
    assert names(vif.apply(status(src=1.0, dst=2.0))) == [PLUGGED]  # what Nova waits for
    assert vif.apply(port(active="dst", inactive=["src"])) == []  # activation: both hosts stay bound
    assert names(vif.apply(status(dst=2.0))) == [UNPLUGGED]  # the source's unplug
    assert vif.apply(port(active="dst")) == []  # clean-up


def test_legacy_migration_destination_plugs_before_migrating_to():
    vif = VifEvents()
    vif.apply(port())
    vif.apply(status(src=1.0))
    assert vif.apply(status(src=1.0, dst=2.0)) == []  # not bound there yet
    assert names(vif.apply(port(migrating_to="dst"))) == [PLUGGED]  # now it is, and the VIF is up
    assert vif.apply(port(migrating_to="dst")) == []
    assert names(vif.apply(status(dst=2.0))) == [UNPLUGGED]  # the source unplugs before update_port
    assert vif.apply(port(active="dst")) == []


def test_hosts_without_a_binding_and_ports_without_a_server_send_nothing():
    vif = VifEvents()
    vif.apply(port())
    assert vif.apply(status(elsewhere=1.0)) == []
    assert vif.apply(status()) == []
    other = VifEvents()
    other.apply(port(device_id=""))
    assert other.apply(status(src=1.0)) == [] and other.apply(status()) == []
    assert VifEvents().apply(status(src=1.0)) == []  # no port known (an orphan status)
    vif.apply({"table": "lport", "action": "delete", "id": "p1", "object": None})
    assert vif.apply(status(src=5.0)) == []
    assert vif.apply({"table": "chassis", "action": "create", "id": "src", "object": {}}) == []


def test_the_state_found_at_start_is_recorded_not_announced():
    vif = VifEvents()
    vif.baseline = True
    assert vif.apply(port()) == [] and vif.apply(status(src=1.0)) == []
    vif.baseline = False
    assert vif.apply(status(src=1.0)) == []
    assert names(vif.apply(status())) == [UNPLUGGED]
