"""The shell around the migration state machine (`controller.migration`) on one chassis.

It turns what this chassis sees (a VIF plugged or unplugged, a RARP/GARP from a
pending VIF, a binding change, time passing) into protocol events, applies the
resulting record to its own flows at once (the chassis that saw the event does
not wait for its own publish to come back), and writes the record to the NB db
with compare-and-set, which publishes it to every other chassis following the
port's topic. Each transition is stamped in the migration's timeline.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from controller.engine import Engine
from controller.flowstate import Plan
from controller.migration import NO_CHANGE, Event, Step, transition
from dfflow.errors import NotFound
from dfflow.models import LogicalPort
from dfflow.nb.store import NbApi
from dfflow.nb.timeline import Timelines

LOG = logging.getLogger(__name__)
ETH_TYPE_ARP, ETH_TYPE_RARP = 0x0806, 0x8035
FAULT_DROP_PUBLISH = "drop_migration_publish"
FAULT_IGNORE_ANNOUNCEMENTS = "ignore_announcements"


class Migrator:
    def __init__(self, chassis: str, engine: Engine, nb: NbApi, emit: Callable[[Plan], None],
                 strategy: str = "unplug"):
        self.chassis, self.engine, self.nb, self.emit, self.strategy = chassis, engine, nb, emit, strategy
        self.timelines = Timelines(nb.redis, nb.keys)
        self.stats: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- what this chassis sees ----------------------------------------------------
    async def vif_online(self, port_id: str) -> None:
        await self._run(port_id, Event.DEST_PLUGGED)

    async def vif_offline(self, port_before: LogicalPort | None) -> None:
        """Called with the port as it was before its VIF left this chassis."""
        if port_before is None or port_before.migration is None:
            return
        mig = port_before.migration
        if mig.source == self.chassis and mig.chassis != self.chassis:
            if await self._fault(FAULT_DROP_PUBLISH):
                self._count("publishes_dropped")
                LOG.warning("fault injection: dropping the step-2 publish of port %s", port_before.id)
                return
            await self._run(port_before.id, Event.SOURCE_UNPLUGGED)
        elif mig.chassis == self.chassis:
            await self._run(port_before.id, Event.DEST_UNPLUGGED)

    async def packet_in(self, ofport: int, data: bytes) -> None:
        """A pending VIF's RARP or GARP: the VM runs here now."""
        if not is_announcement(data):
            self._count("packet_in_ignored")
            return
        if await self._fault(FAULT_IGNORE_ANNOUNCEMENTS):
            self._count("announcements_ignored")
            return
        for vif in self.engine.view.vifs.values():
            if vif.ofport == ofport:
                port = self.engine.view.port(vif.iface_id)
                if port is not None and self.engine.view.is_pending(port):
                    await self._run(port.id, Event.ANNOUNCED)
                return

    async def port_changed(self, port: LogicalPort) -> None:
        """An NB update of a port: step 3 (binding = destination) ends the migration here."""
        mig = port.migration
        if mig is not None and mig.chassis == self.chassis and port.binding_chassis == mig.chassis:
            await self._run(port.id, Event.BINDING_UPDATED, local_first=False)

    async def housekeeping(self, now: float | None = None) -> None:
        """Finish what events cannot: unplugs that happened while this controller was away, and
        records that waited too long."""
        view = self.engine.view
        for port in list(view.ports()):
            mig = port.migration
            if mig is None:
                continue
            here = port.id in view.vifs
            if mig.source == self.chassis and mig.state == "requested" and not here \
                    and view.location(port) == self.chassis:
                await self.vif_offline(port)
            elif mig.chassis == self.chassis:
                if mig.state == "requested" and not here:
                    await self._run(port.id, Event.DEST_UNPLUGGED)
                elif port.binding_chassis == mig.chassis:
                    await self._run(port.id, Event.BINDING_UPDATED, local_first=False)
                else:
                    await self._run(port.id, Event.EXPIRED, now=now, local_first=False)

    # -- running a transition --------------------------------------------------------
    async def _run(self, port_id: str, event: Event, now: float | None = None,
                   local_first: bool = True) -> Step:
        now = time.time() if now is None else now
        view_port = self.engine.view.port(port_id)
        if view_port is None:
            return NO_CHANGE
        step = transition(view_port, event, self.chassis, now, self.strategy)
        if step.port is None:
            return NO_CHANGE  # decided on this chassis' view: no NB round trip (housekeeping runs every second)
        if local_first:
            # Apply here at once: this chassis' bundle goes out before the publish round trip.
            self.emit(self.engine.nb_event({"table": LogicalPort.table, "action": "update", "id": port_id,
                                            "object": step.port.to_dict()}))
        written: list[Step] = []

        def change(current: LogicalPort) -> LogicalPort | None:
            step = transition(current, event, self.chassis, now, self.strategy)
            written[:] = [step]
            return step.port

        try:
            await self.nb.modify(LogicalPort.table, port_id, change)
        except NotFound:
            return NO_CHANGE  # deleted meanwhile: its flows go with the delete event
        step = written[0] if written else NO_CHANGE
        if step.outcome:
            self._count(step.outcome)
            LOG.info("port %s migration %s: %s (%s -> %s, %s)", port_id, step.record.id, step.outcome,
                     step.record.source, step.record.chassis, step.record.strategy)
            asyncio.get_running_loop().create_task(self._stamp(port_id, step, now))
        return step

    async def _stamp(self, port_id: str, step: Step, now: float) -> None:
        try:
            await self.timelines.record(port_id, step.record, step.outcome, now)
        except Exception:
            self._count("timeline_errors")
            LOG.exception("could not stamp migration %s", step.record.id)

    async def _fault(self, name: str) -> bool:
        return bool(await self.nb.redis.hget(f"{self.nb.keys.prefix}:faults", name))


def is_announcement(data: bytes) -> bool:
    """QEMU's RARP, or a gratuitous ARP (sender IP == target IP)."""
    if len(data) < 14:
        return False
    eth_type = int.from_bytes(data[12:14], "big")
    if eth_type == ETH_TYPE_RARP:
        return True
    return eth_type == ETH_TYPE_ARP and len(data) >= 42 and data[28:32] == data[38:42]


async def set_fault(nb: NbApi, name: str, on: bool) -> None:
    """Fault injection for tests and benchmarks (e.g. drop_migration_publish)."""
    key = f"{nb.keys.prefix}:faults"
    if on:
        await nb.redis.hset(key, name, "1")
    else:
        await nb.redis.hdel(key, name)


__all__ = ["Migrator", "is_announcement", "set_fault", "FAULT_DROP_PUBLISH", "FAULT_IGNORE_ANNOUNCEMENTS"]
