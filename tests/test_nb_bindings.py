"""dfflow.nb.bindings: a port's bindings (binding-extended) on the NB port, without HTTP."""
from __future__ import annotations

import asyncio

import pytest

from dfflow.errors import NotFound, ValidationError
from dfflow.models import Chassis, InactiveBinding, LogicalPort, MigrationRecord
from dfflow.nb import bindings
from dfflow.nb.neutron import bind
from tests.nbtopo import network


def _port(**changes) -> LogicalPort:
    base = LogicalPort(id="p1", topic="t", lswitch="net1", mac="fa:16:3e:00:00:01", binding_chassis="src",
                       device_owner="compute:nova", binding_profile={"migrating_to": "dst"})
    return base.replace(**changes)


def test_activation_swaps_the_active_and_the_inactive_binding():
    port = bindings.add_inactive(_port(), InactiveBinding("dst", "normal", {"pci": "x"}))
    assert port.inactive_bindings == [InactiveBinding("dst", "normal", {"pci": "x"})]
    active = bindings.activate(port, "dst")
    assert (active.binding_chassis, active.binding_profile, active.migrating_to) == ("dst", {"pci": "x"}, None)
    assert active.inactive_bindings == [InactiveBinding("src", "normal", {"migrating_to": "dst"})]
    active.check()
    assert [b.host for b in bindings.bindings_of(active)] == ["dst", "src"]
    assert bindings.remove(active, "src").inactive_bindings == []


def test_refusals():
    port = bindings.add_inactive(_port(), InactiveBinding("dst"))
    with pytest.raises(bindings.BindingExists):
        bindings.add_inactive(port, InactiveBinding("dst"))
    with pytest.raises(bindings.BindingExists):
        bindings.add_inactive(port, InactiveBinding("src"))
    with pytest.raises(bindings.BindingAlreadyActive):
        bindings.activate(port, "src")
    with pytest.raises(bindings.BindingNotFound):
        bindings.activate(port, "elsewhere")
    with pytest.raises(bindings.BindingNotFound):
        bindings.remove(port, "elsewhere")
    with pytest.raises(bindings.NotAComputePort):
        bindings.add_inactive(_port(device_owner="network:dhcp"), InactiveBinding("dst"))
    for args, field in ((("a b",), "host"), (("h", "direct"), "vnic_type"), (("h", "normal", [1]), "profile")):
        with pytest.raises(ValidationError) as caught:
            bindings.check_binding(*args)
        assert caught.value.field == field


def test_an_unbound_port_is_bound_by_activation_and_deleting_the_active_binding_unbinds():
    port = bindings.add_inactive(_port(binding_chassis=None, binding_profile={}), InactiveBinding("dst"))
    active = bindings.activate(port, "dst")
    assert (active.binding_chassis, active.inactive_bindings) == ("dst", [])
    kept = bindings.add_inactive(active, InactiveBinding("other"))
    unbound = bindings.remove(kept, "dst")
    assert (unbound.binding_chassis, unbound.inactive_bindings) == (None, [InactiveBinding("other")])


def test_a_host_update_onto_an_inactive_binding_drops_it():
    port = bindings.add_inactive(_port(), InactiveBinding("dst"))
    moved = bind(port, "dst")
    assert (moved.binding_chassis, moved.inactive_bindings) == ("dst", [])
    moved.check()


async def _nb_port(nb) -> LogicalPort:
    await network(nb, "net1", "10.1.0.0/24", 101, topic="t")
    for name in ("src", "dst"):
        await nb.create(Chassis(id=name, topic="chassis", tunnel_ip="192.0.2.1"))
    return await nb.create(_port(ips=["10.1.0.5"]))


async def test_nb_writes_and_refusals_that_write_nothing(nb):
    before = await _nb_port(nb)
    with pytest.raises(bindings.BindingFailed):
        await bindings.create_binding(nb, "p1", "nowhere")
    with pytest.raises(NotFound):
        await bindings.create_binding(nb, "ghost", "dst")
    with pytest.raises(NotFound):
        await bindings.create_binding(nb, "ghost", "nowhere")
    assert await nb.get("lport", "p1") == before
    created = await bindings.create_binding(nb, "p1", "dst", profile={"k": 1})
    assert created.inactive_bindings == [InactiveBinding("dst", "normal", {"k": 1})]
    active = await bindings.activate_binding(nb, "p1", "dst")
    assert active == await nb.get("lport", "p1") and active.binding_chassis == "dst"
    assert (await bindings.delete_binding(nb, "p1", "src")).inactive_bindings == []


async def test_activation_keeps_a_concurrent_migration_record_write(nb):
    """Activation is a compare-and-set on the port: the controller's racing writes are retried around."""
    await _nb_port(nb)
    await bindings.create_binding(nb, "p1", "dst")

    async def controller(i):
        def change(p):
            return p.replace(migration=MigrationRecord(chassis="dst", source="src", timestamps={"requested": i}))
        await nb.modify("lport", "p1", change)

    await asyncio.gather(bindings.activate_binding(nb, "p1", "dst"), *(controller(float(i)) for i in range(5)))
    final = await nb.get("lport", "p1")
    assert (final.binding_chassis, final.migration.chassis) == ("dst", "dst")
    assert final.inactive_bindings == [InactiveBinding("src", "normal", {"migrating_to": "dst"})]
