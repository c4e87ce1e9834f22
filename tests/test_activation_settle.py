"""The destination activates an announced port `activation_settle` after its VM's RARP: the datapath
delivers from the RARP on meanwhile (the gates' learn actions), the activation's flow changes come after
(no Redis or OVS needed: helpers of test_migration_inflight)."""
import asyncio

from controller.migration import Event, transition
from dfflow.sandbox.switchover import rarp_frame
from test_migration_inflight import B1_OFPORT_HERE, destination_a, event, gated

B1_MAC = bytes.fromhex("fa163e000002")


def pending_destination(settle):
    engine, nb, migrator = destination_a()
    nb.go.set()  # NB writes land at once
    migrator.activation_settle = settle
    requested = nb.store(transition(nb.ports["b1"], Event.DEST_PLUGGED, "A", now=100.0, strategy="announce").port)
    engine.commit(engine.nb_event(event(requested)))
    assert engine.view.is_pending(engine.view.port("b1")) and gated(engine)
    return engine, nb, migrator


async def test_the_activation_waits_the_settle_after_the_rarp_and_then_happens():
    engine, nb, migrator = pending_destination(0.05)
    rarp = asyncio.create_task(migrator.packet_in(B1_OFPORT_HERE, rarp_frame(B1_MAC)))
    await asyncio.sleep(0.02)
    assert nb.ports["b1"].migration.state == "requested" and gated(engine)  # still the gated flows, delivering
    await rarp
    assert nb.ports["b1"].migration.state == "activated" and not engine.view.is_pending(engine.view.port("b1"))


async def test_without_a_settle_the_rarp_activates_at_once():
    engine, nb, migrator = pending_destination(0.0)
    rarp = asyncio.create_task(migrator.packet_in(B1_OFPORT_HERE, rarp_frame(B1_MAC)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert nb.ports["b1"].migration.state == "activated"
    await rarp
