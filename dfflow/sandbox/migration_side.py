"""What one live migration holds beside the VM, and its one teardown: nova-compute's os-vif on the source
and on the destination, and the VM's switchover helper (`nova.Switchover` or a stand-in for it).

Both clouds' migrations (`nova.migrate`, `ovn_cloud.migrate`) run inside `migration_side`: however the
migration's calls end the os-vif agents are closed, and if they fail the switchover helper is killed
(a VM never switched must not be left waiting for `go`). After the unplug, `finish_switchover` does the
emulation's housekeeping.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator

from .osvif import OsVifHost
from .topology import Sandbox


@dataclass
class MigrationSide:
    source_osvif: OsVifHost
    dest_osvif: OsVifHost
    switchover: Any = None  # set by the migration once it has started the helper


@contextlib.asynccontextmanager
async def migration_side(sb: Sandbox, source: str, dest: str) -> AsyncIterator[MigrationSide]:
    """os-vif on `source` and `dest` (connected before the migration starts, as nova-compute's are);
    closed when the block ends, and the switchover helper cancelled if the block raises."""
    source_osvif = await asyncio.to_thread(OsVifHost, sb, source)
    try:
        dest_osvif = await asyncio.to_thread(OsVifHost, sb, dest)
    except BaseException:
        source_osvif.close()
        raise
    side = MigrationSide(source_osvif, dest_osvif)
    try:
        yield side
    except BaseException:
        if side.switchover is not None:
            side.switchover.cancel()
        raise
    finally:
        source_osvif.close()
        dest_osvif.close()


async def finish_switchover(sb: Sandbox, vm: str, source_ifname: str, dest_ifname: str, switchover: Any) -> None:
    """After the source's unplug: the sandbox's record of the source VIF dropped (os-vif deleted the tap
    already), the switchover helper reaped (only now: its exit must not delay the unplug), the VM's
    destination VIF marked up."""
    sb.unplug_vif(vm, source_ifname)
    await asyncio.to_thread(switchover.cancel)
    sb.set_vif_up(vm, dest_ifname, True)
