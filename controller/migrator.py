"""The shell around the migration state machine (`controller.migration`) on one chassis.

It turns what this chassis sees (a VIF plugged or unplugged, a RARP/GARP from a
pending VIF, a binding change, time passing) into protocol events, applies the
resulting record to its own flows at once (the chassis that saw the event does
not wait for its own publish to come back), and writes the record to the NB db
with compare-and-set, which publishes it to every other chassis following the
port's topic. Each transition is stamped in the migration's timeline.

The step-2 (source unplugged) transition also goes out on the migration-event
channel (`dfflow.nb.migration_events`), published before the NB write starts.
Every chassis that follows the port runs the same pure transition on its own view
and applies it at once, as the chassis that saw the event does; the NB write's
event follows a few milliseconds later and, being the same port, changes no flow.
The message is only a head start: a chassis that misses it, or whose view does
not hold that migration, converges from the NB event as before. An `announce`
activation has no such head start: while the migration is in flight every chassis
sends the port's traffic to the destination already, whose datapath opened the
VM's gates at its announcement, so no other chassis changes how a packet for the
port is forwarded at the activation (the source drops what a tunnel still brings
instead of handing it to the VIF of a VM that stopped; floods reach the
destination). They follow the NB write, a few milliseconds after the
destination's own change, instead of all waking with it on the same cores.

A transition applied here ahead of its NB write stays applied until that write settles: an NB
event of the port meanwhile (typically Nova's own write, committed just before ours, which our
compare-and-set re-reads and builds on) gets the same transition laid on it -- what the write's
retry will store anyway -- instead of taking this chassis' flows back for a few milliseconds.
The write's own event (or any later version) ends that; a failed or abandoned write drops it
and the NB's version is taken. A transition told by another chassis' migration event is laid on
likewise, until an NB version shows it (or moved past it), or for TOLD_HOLD at most.

A write that found nothing left to store (another write stored it first: often this chassis' own
second announcement, the VM's GARP after its RARP) returns the version it read, which can be ahead
of this chassis' NB events (they run seconds behind while a host is evacuated): that version is
what this chassis shows, and an NB event of an older version of the port arriving after it is not
news -- until the events catch up, or for KNOWN_HOLD at most. (Otherwise a destination whose
held activation found the record activated already, by its own second announcement's write, fell
back to "pending" on Nova's older version, gated the VM it hosts and dropped its traffic until the
record's own events arrived: up to seconds in a 25-VM evacuation.)
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from controller.engine import Engine
from controller.flowstate import Plan
from controller.migration import NO_CHANGE, Event, Step, transition
from controller.supervise import OneShots
from dfflow.errors import NotFound
from dfflow.models import LogicalPort
from dfflow.nb.migration_events import MigrationEvent, MigrationEvents
from dfflow.nb.store import NbApi
from dfflow.nb.timeline import Timelines

LOG = logging.getLogger(__name__)
ETH_TYPE_ARP, ETH_TYPE_RARP = 0x0806, 0x8035
# Events every related chassis can apply to its own view at once, told by the chassis that saw them
# (not an announce's activation: see the module's doc).
FAST_EVENTS = (Event.SOURCE_UNPLUGGED,)
# s a transition told by another chassis stays laid on this one's NB versions without the NB showing it
TOLD_HOLD = 5.0
# s a version a write's reply showed stays laid on older NB events of the port (an NB event bus that
# far behind is caught by its own checks)
KNOWN_HOLD = 30.0


@dataclass(eq=False)
class _InFlight:
    """A transition applied here whose NB write has not settled."""

    event: Event
    now: float
    told_by: str | None = None  # the chassis whose migration event it is (None: this chassis' own write)
    wanted: LogicalPort | None = None  # what the write's latest try stores
    written: int | None = None  # the NB version it stored, once the write returned


@dataclass
class _Overlay:
    nb_port: LogicalPort  # the port's newest NB version seen here, without what is in flight
    writes: list[_InFlight] = field(default_factory=list)
    known: LogicalPort | None = None  # a newer version than the events have shown, from a write's reply
    known_at: float = 0.0

    def idle(self) -> bool:
        return not self.writes and self.known is None


class Migrator:
    def __init__(self, chassis: str, engine: Engine, nb: NbApi, emit: Callable[[Plan], None],
                 strategy: str = "unplug", activation_settle: float = 0.0):
        self.chassis, self.engine, self.nb, self.emit, self.strategy = chassis, engine, nb, emit, strategy
        self.activation_settle = activation_settle  # s between an announcement and its activation
        self.timelines = Timelines(nb.redis, nb.keys)
        self.events = MigrationEvents(nb, self._count)
        self.stats: dict[str, int] = {}
        self._overlays: dict[str, _Overlay] = {}  # port id -> transitions in flight on it
        self.one_shots = OneShots()  # timeline stamps under way
        engine.port_overlay = self._overlay

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # -- what this chassis sees ----------------------------------------------------
    async def vif_online(self, port_id: str) -> None:
        await self._run(port_id, Event.DEST_PLUGGED)

    async def vif_offline(self, port_before: LogicalPort | None, timing: dict[str, float] | None = None) -> None:
        """Called with the port as it was before its VIF left this chassis (`timing`: when that was seen)."""
        if port_before is None or port_before.migration is None:
            return
        mig = port_before.migration
        if mig.source == self.chassis and mig.chassis != self.chassis:
            await self._run(port_before.id, Event.SOURCE_UNPLUGGED, timing=timing)
        elif mig.chassis == self.chassis:
            await self._run(port_before.id, Event.DEST_UNPLUGGED)

    async def packet_in(self, ofport: int, data: bytes) -> None:
        """A pending VIF's RARP or GARP: the VM runs here now."""
        if not is_announcement(data):
            self._count("packet_in_ignored")
            return
        # Its gates opened in the datapath already (the learn actions): the activation's flow changes
        # wait `activation_settle`, so that this chassis' vswitchd does not hold the VM's first packets
        # behind them.
        if self.activation_settle:
            await asyncio.sleep(self.activation_settle)
        await self.announced(ofport)

    async def announced(self, ofport: int) -> None:
        """The VM behind this VIF announced itself (its packet-in, or its gate found open in OVS)."""
        for vif in self.engine.view.vifs.values():
            if vif.ofport == ofport:
                port = self.engine.view.port(vif.iface_id)
                if port is not None and self.engine.view.is_pending(port):
                    await self._run(port.id, Event.ANNOUNCED)
                return

    async def port_changed(self, port: LogicalPort) -> None:
        """An NB update of a port: step 3 (binding = destination, Nova's activation or update_port)
        ends the migration here; Nova preparing or withdrawing the destination marks or aborts it."""
        mig = port.migration
        if mig is not None and mig.chassis == self.chassis and port.binding_chassis == mig.chassis:
            await self._run(port.id, Event.BINDING_UPDATED, local_first=False)
        elif mig is not None and mig.state == "requested" and self.chassis in (mig.chassis, mig.source):
            await self._run(port.id, Event.NOVA_CHANGED, local_first=False)

    # -- the migration-event channel ---------------------------------------------------
    async def listen(self) -> None:
        """Follow the migration-event channel for as long as the controller runs."""
        await self.events.follow(self._on_migration_event)

    def _on_migration_event(self, data: bytes, received: float) -> None:
        try:
            msg = MigrationEvent.decode(data)
            if msg.chassis == self.chassis:
                return  # ours: applied here already
            event = Event(msg.event)
            port = self.engine.view.port(msg.port)
            if port is None or port.migration is None or port.migration.id != msg.migration \
                    or event not in FAST_EVENTS:
                self._count("events_not_applicable")  # not ours to follow, or this view moved on
                return
            step = transition(port, event, msg.chassis, msg.now, self.strategy)
            if step.port is None:
                self._count("events_not_applicable")
                return
            self._hold(port, _InFlight(event, msg.now, told_by=msg.chassis))
            self._apply_here(port.id, step, event, {"event_ts": msg.ts, "received": received,
                                                    "bus_ms": (received - msg.ts) * 1e3})
            self._count("events_applied")
        except Exception:
            self._count("event_errors")
            LOG.exception("migration event %r not applied (the NB event will be)", data[:200])

    async def housekeeping(self, now: float | None = None) -> None:
        """Finish what events cannot: unplugs that happened while this controller was away, and
        records that waited too long."""
        view = self.engine.view
        self._drop_told_ones_not_written(time.time() if now is None else now)
        for port in view.migrating_ports():
            mig = port.migration
            here = port.id in view.vifs
            if mig.state == "requested" and self.chassis in (mig.chassis, mig.source):
                step = await self._run(port.id, Event.NOVA_CHANGED, now=now, local_first=False)
                if step.outcome == "aborted":
                    continue  # Nova's rollback, missed as an event (this controller was away)
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
                   local_first: bool = True, timing: dict[str, float] | None = None) -> Step:
        now = time.time() if now is None else now
        view_port = self.engine.view.port(port_id)
        if view_port is None:
            return NO_CHANGE
        step = transition(view_port, event, self.chassis, now, self.strategy)
        if step.port is None:
            return NO_CHANGE  # decided on this chassis' view: no NB round trip (housekeeping runs every second)
        written: list[Step] = []
        in_flight = _InFlight(event, now)

        def change(current: LogicalPort) -> LogicalPort | None:
            step = transition(current, event, self.chassis, now, self.strategy)
            written[:] = [step]
            in_flight.wanted = step.port
            return step.port

        if local_first and event in FAST_EVENTS:
            # The other chassis' head start goes out before anything else here: taking a pooled Redis
            # connection yields to the loop, so a publish merely started would leave only after this
            # chassis computed its own flows.
            await self.events.publish(MigrationEvent(port_id, event.value, self.chassis, now, step.record.id,
                                                     time.time()))
        # The NB write (a dozen Redis round trips before its publish) starts next; this chassis computes
        # and queues its own bundle while the write's first request is out.
        write = asyncio.ensure_future(self.nb.modify(LogicalPort.table, port_id, change))
        if local_first:
            await asyncio.sleep(0)  # let the write send its first request
            try:
                # Decided again on the view as it is now: other events may have been handled meanwhile.
                current = self.engine.view.port(port_id)
                here = transition(current, event, self.chassis, now, self.strategy) if current else NO_CHANGE
                if here.port is not None:
                    self._hold(current, in_flight)
                    self._apply_here(port_id, here, event, timing)
            except Exception:
                await asyncio.wait([write])  # the NB write still completes; then the local error is raised
                if not write.cancelled() and write.exception() is not None:
                    self._count("write_errors")
                    LOG.error("port %s: NB write of %s failed", port_id, event.value, exc_info=write.exception())
                self._settle(port_id, in_flight, write)
                raise
        try:
            await write
        except NotFound:
            return NO_CHANGE  # deleted meanwhile: its flows go with the delete event
        finally:
            self._settle(port_id, in_flight, write)
        step = written[0] if written else NO_CHANGE
        if step.outcome:
            self._count(step.outcome)
            LOG.info("port %s migration %s: %s (%s -> %s, %s)", port_id, step.record.id, step.outcome,
                     step.record.source, step.record.chassis, step.record.strategy)
            self.one_shots.start(self._stamp(port_id, step, now), f"stamp {step.record.id} {step.outcome}")
        return step

    # -- transitions applied here before their NB write settled ------------------------------
    def _hold(self, view_port: LogicalPort, in_flight: _InFlight) -> None:
        overlay = self._overlays.setdefault(view_port.id, _Overlay(view_port))
        overlay.writes.append(in_flight)

    def _overlay(self, nb_port: LogicalPort) -> LogicalPort:
        """The engine's view of an NB version of a port: with what is in flight on it laid on top."""
        overlay = self._overlays.get(nb_port.id)
        if overlay is None:
            return nb_port
        if overlay.known is not None:
            if nb_port.version >= overlay.known.version:
                overlay.known = None  # the events caught up
            else:
                self._count("stale_nb_versions")
                nb_port = overlay.known
        overlay.nb_port = nb_port
        overlay.writes = [w for w in overlay.writes if not self._settled_by(w, nb_port)]
        if overlay.idle():
            del self._overlays[nb_port.id]
            return nb_port
        port = self._laid_on(nb_port, overlay.writes)
        if port is not nb_port:
            self._count("in_flight_reapplied")
        return port

    def _laid_on(self, port: LogicalPort, writes: list[_InFlight]) -> LogicalPort:
        for w in writes:
            port = transition(port, w.event, w.told_by or self.chassis, w.now, self.strategy).port or port
        return port

    def _settled_by(self, w: _InFlight, nb_port: LogicalPort) -> bool:
        if w.told_by is not None:  # another chassis writes it: settled once the NB has it, or moved past it
            return transition(nb_port, w.event, w.told_by, w.now, self.strategy).port is None
        return ((w.written is not None and nb_port.version >= w.written)
                or (w.wanted is not None and nb_port.replace(version=0) == w.wanted.replace(version=0)))

    def _drop_told_ones_not_written(self, now: float) -> None:
        """Another chassis' transition the NB never showed (its write failed): the NB's version stands.
        A write's reply the NB events never caught up with (an NB db restored older) likewise."""
        for port_id, overlay in list(self._overlays.items()):
            if overlay.known is not None and now - overlay.known_at > KNOWN_HOLD:
                overlay.known = None
                if overlay.idle():
                    del self._overlays[port_id]
                    continue
            stale = [w for w in overlay.writes if w.told_by is not None and now - w.now > TOLD_HOLD]
            if not stale:
                continue
            self.stats["in_flight_dropped"] = self.stats.get("in_flight_dropped", 0) + len(stale)
            overlay.writes = [w for w in overlay.writes if w not in stale]
            self._take_nb_version(port_id, overlay, overlay.nb_port)

    def _settle(self, port_id: str, in_flight: _InFlight, write: asyncio.Future) -> None:
        """The write is over: once its NB event is seen, the NB's version stands alone; a write that
        failed or stored nothing leaves the NB's version as this chassis' at once."""
        overlay = self._overlays.get(port_id)
        if overlay is None or in_flight not in overlay.writes:
            return  # settled by its NB event already
        if not write.done():  # this task was cancelled; the write goes on
            write.add_done_callback(lambda _: self._settle(port_id, in_flight, write))
            return
        result = None if write.cancelled() or write.exception() is not None else write.result()
        if result is not None and in_flight.wanted is not None:
            in_flight.written = result.version
            if not self._settled_by(in_flight, overlay.nb_port):
                return  # its NB event is still on its way: laid on what comes before it
        overlay.writes.remove(in_flight)
        if in_flight.wanted is not None and result is not None:
            if overlay.idle():
                del self._overlays[port_id]
            return
        self._count("in_flight_dropped")
        nb_port = overlay.nb_port
        if result is not None and result.version > nb_port.version:
            nb_port = result  # the version the write found, with nothing to store on it
            overlay.nb_port, overlay.known, overlay.known_at = result, result, time.time()
        if write.cancelled() or not isinstance(write.exception(), NotFound):
            self._take_nb_version(port_id, overlay, nb_port)
        elif overlay.idle():
            del self._overlays[port_id]

    def _take_nb_version(self, port_id: str, overlay: _Overlay, nb_port: LogicalPort) -> None:
        """Flows for the NB's version of the port, with what is still in flight laid on it."""
        if overlay.idle():
            del self._overlays[port_id]
        if self.engine.view.port(port_id) is None:
            self._overlays.pop(port_id, None)
            return  # deleted meanwhile: its flows went with the delete event
        plan = self.engine.object_written(self._laid_on(nb_port, overlay.writes))
        plan.cause = f"in_flight_dropped:{port_id}"
        self.emit(plan)

    def _apply_here(self, port_id: str, step: Step, event: Event, timing: dict[str, float] | None) -> None:
        """This chassis' part of the transition, as if its NB event had come in already.

        `timing`: event_ts (when the event happened), received (when this loop got it), and what the
        hops before took; compute_ms is added."""
        plan = self.engine.object_written(step.port)
        if timing:
            timing = dict(timing)
            received = timing.pop("received", timing["event_ts"])
            plan.timing.update(timing, compute_ms=(time.time() - received) * 1e3)
        plan.cause = f"{event.value}:{port_id}"
        self.emit(plan)

    async def _stamp(self, port_id: str, step: Step, now: float) -> None:
        try:
            await self.timelines.record(port_id, step.record, step.outcome, now)
        except Exception:
            self._count("timeline_errors")
            LOG.exception("could not stamp migration %s", step.record.id)


def is_announcement(data: bytes) -> bool:
    """QEMU's RARP, or a gratuitous ARP (sender IP == target IP)."""
    if len(data) < 14:
        return False
    eth_type = int.from_bytes(data[12:14], "big")
    if eth_type == ETH_TYPE_RARP:
        return True
    return eth_type == ETH_TYPE_ARP and len(data) >= 42 and data[28:32] == data[38:42]


__all__ = ["Migrator", "is_announcement"]
