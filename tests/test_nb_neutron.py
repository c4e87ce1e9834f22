"""update_port_binding: Neutron's binding:host_id onto the NB port, compare-and-set, without HTTP."""
from __future__ import annotations

import asyncio

import pytest

from dfflow.errors import NotFound, ValidationError, VersionConflict
from dfflow.models import MigrationRecord
from dfflow.nb.neutron import update_port_binding
from tests.nbtopo import network, port


async def _port(nb, chassis="chassis-1"):
    await network(nb, "net1", "10.1.0.0/24", 101)
    return await port(nb, "p1", "net1", "fa:16:3e:00:00:01", ["10.1.0.5"], chassis=chassis)


async def test_binds_unbinds_and_skips_no_op_writes(nb):
    before = await _port(nb)
    moved = await update_port_binding(nb, "p1", "chassis-2")
    assert moved.binding_chassis == "chassis-2" and moved.version > before.version
    assert await nb.get("lport", "p1") == moved
    again = await update_port_binding(nb, "p1", "chassis-2")
    assert again.version == moved.version  # nothing written
    assert (await update_port_binding(nb, "p1", "")).binding_chassis is None
    assert (await update_port_binding(nb, "p1", None)).binding_chassis is None
    assert (await update_port_binding(nb, "p1", "chassis-3")).binding_chassis == "chassis-3"


async def test_refusals_write_nothing(nb):
    before = await _port(nb)
    with pytest.raises(ValidationError) as caught:
        await update_port_binding(nb, "p1", "not a host")
    assert caught.value.field == "binding:host_id"
    with pytest.raises(NotFound):
        await update_port_binding(nb, "ghost", "chassis-2")
    with pytest.raises(VersionConflict):
        await update_port_binding(nb, "p1", "chassis-2", expect_version=before.version - 1)
    assert await nb.get("lport", "p1") == before
    done = await update_port_binding(nb, "p1", "chassis-2", expect_version=before.version)
    assert done.binding_chassis == "chassis-2"


async def test_concurrent_migration_record_writes_are_kept(nb):
    """The binding change is a read-modify-write on one field: racing writers of the migration record
    (the controller) are retried around, never overwritten."""
    await _port(nb)

    async def controller(i):
        def change(p):
            return p.replace(migration=MigrationRecord(chassis="chassis-2", source="chassis-1",
                                                       timestamps={"requested": float(i)}))
        await nb.modify("lport", "p1", change)

    await asyncio.gather(update_port_binding(nb, "p1", "chassis-2"), *(controller(i) for i in range(5)))
    final = await nb.get("lport", "p1")
    assert final.binding_chassis == "chassis-2" and final.migration is not None
    assert final.migration.chassis == "chassis-2"
