"""Live migration of a port: the blueprint's protocol, as one explicit state machine.

The port's `migration` record in the NB db (the blueprint's port-migration field)
is the shared state; every transition is a compare-and-set write of the port,
and that write's NB event is the publish every related chassis acts on.

    (no record) --dest plugged--> requested --source unplugged--> switched --binding = dest--> (done)
                                     |  \\--announced (RARP/GARP at dest)--> activated --source unplugged--> switched
                                     |                                          \\--binding = dest--> (done)
                                     \\--dest unplugged--> (aborted)
    requested too long --> (aborted);  activated/switched too long --> binding set to dest, (done)
    requested, Nova prepared dest (inactive binding or migrating_to) --Nova withdrew it--> (aborted)

Nova's calls (binding-extended: an inactive binding for the destination before the
plug, activated after the memory copy and before the source unplug; legacy:
binding:profile.migrating_to after the plug, update_port(binding:host_id) at the
end) are read from the port itself. Activation makes the destination the port's
binding, so it is step 3, in whichever order it comes relative to step 2. A
record started (or, while requested, later found) with Nova's preparation of the
destination is marked `prepared`; Nova withdrawing it (deleting the inactive
binding and clearing migrating_to: its rollback) while the port is not bound
there aborts the migration -- also when the destination's unplug never comes.

Where the port is, for every chassis' flows, follows from the record
(`controller.view.View.location`): the source while `requested`, the destination
once `activated` or `switched` or once the binding names it, and the binding when
there is no record. Step 3 (`update_port(binding:host_id=dest)`) ends the
migration; had step 2's publish been lost, that binding event alone moves the port
on every chassis.

`transition()` is pure: (port, event, now) -> the port to write, or None for no
change. The daemon runs it inside `NbApi.modify`, so a concurrent writer makes it
re-read and re-decide instead of overwriting.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from dfflow.models import LogicalPort, MigrationRecord
from dfflow.nb.bindings import activate

REQUEST_TIMEOUT = 600.0  # s a destination may wait for the source's unplug
COMPLETE_TIMEOUT = 600.0  # s after switching without update_port before the destination binds itself


class Event(enum.Enum):
    DEST_PLUGGED = "dest_plugged"  # a VIF for the port came online on `chassis`
    ANNOUNCED = "announced"  # the VM's RARP/GARP seen on `chassis`' pending VIF
    SOURCE_UNPLUGGED = "source_unplugged"  # the VIF went offline on `chassis`, where the port was
    DEST_UNPLUGGED = "dest_unplugged"  # the VIF went offline on `chassis`, the destination
    BINDING_UPDATED = "binding_updated"  # the port's binding is now `chassis` (step 3)
    EXPIRED = "expired"  # housekeeping on `chassis` found the record too old
    NOVA_CHANGED = "nova_changed"  # the port's inactive bindings or binding:profile changed (seen by `chassis`)


@dataclass(frozen=True)
class Step:
    """One transition's result: the port to write (None: nothing), and what it was."""

    port: LogicalPort | None
    outcome: str  # requested, activated, switched, done, aborted, or "" for no change
    record: MigrationRecord | None  # the record the outcome concerns (the old one when cleared)


NO_CHANGE = Step(None, "", None)


def current_location(port: LogicalPort) -> str | None:
    """Where the port lives: same rule as View.location (kept here so the protocol is self-contained)."""
    mig = port.migration
    if mig is None:
        return port.binding_chassis
    if mig.state in ("activated", "switched") or step3_arrived(port):
        return mig.chassis  # switched, or step 3 arrived before (or without) step 2
    return mig.source


def step3_arrived(port: LogicalPort) -> bool:
    """The binding moved to the destination since the migration started."""
    mig = port.migration
    return port.binding_chassis == mig.chassis and mig.bound != mig.chassis


def nova_prepared(port: LogicalPort, dest: str) -> bool:
    """Nova has told Neutron that the port is migrating to `dest`: an inactive binding for it
    (binding-extended), or binding:profile.migrating_to (both paths set it at pre-live-migration)."""
    return port.inactive_binding(dest) is not None or port.migrating_to == dest


def _record(port: LogicalPort, dest: str, source: str | None, strategy: str, now: float) -> MigrationRecord:
    return MigrationRecord(chassis=dest, source=source, state="requested", strategy=strategy,
                           id=f"{port.id}@{int(now * 1000)}", bound=port.binding_chassis,
                           timestamps={"requested": now}, prepared=nova_prepared(port, dest))


def _advance(port: LogicalPort, state: str, now: float) -> Step:
    mig = port.migration
    new = dataclasses.replace(mig, state=state, timestamps={**mig.timestamps, state: now})
    return Step(port.replace(migration=new), state, new)


def _clear(port: LogicalPort, outcome: str, **changes: object) -> Step:
    return Step(port.replace(migration=None, **changes), outcome, port.migration)


def transition(port: LogicalPort, event: Event, chassis: str, now: float,
               strategy: str = "unplug") -> Step:
    """Apply `event` (seen by `chassis`) to `port`'s migration."""
    mig = port.migration
    state = mig.state if mig is not None else None
    handler = TRANSITIONS.get((state, event))
    return handler(port, chassis, now, strategy) if handler is not None else NO_CHANGE


def _start(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    here = current_location(port)
    if here is None or here == chassis:
        return NO_CHANGE  # a first plug, or the VIF coming back where the port already is
    record = _record(port, chassis, here, port.activation_strategy or strategy, now)
    return Step(port.replace(migration=record), "requested", record)


def _restart(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    """A plug while a migration is in flight: a duplicate, or a new destination (the newest wins).

    The source's own VIF is not a plug until the source has let go of it (switched)."""
    mig = port.migration
    if chassis == mig.chassis or (chassis == mig.source and mig.state != "switched"):
        return NO_CHANGE
    record = _record(port, chassis, current_location(port), port.activation_strategy or strategy, now)
    return Step(port.replace(migration=record), "requested", record)


def _announced(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    mig = port.migration
    if chassis != mig.chassis or mig.strategy != "announce":
        return NO_CHANGE
    return _advance(port, "activated", now)


def _source_unplugged(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    if chassis != port.migration.source or step3_arrived(port):
        return NO_CHANGE  # not the source; or bound to dest already (Nova activates before unplugging)
    return _advance(port, "switched", now)


def _dest_unplugged(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    if chassis != port.migration.chassis:
        return NO_CHANGE
    return _clear(port, "aborted")


def _binding_updated(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    """Step 3, or a switched migration back to where the port is bound anyway: done."""
    mig = port.migration
    if port.binding_chassis != mig.chassis or (mig.state == "requested" and not step3_arrived(port)):
        return NO_CHANGE
    return _clear(port, "done")


def _expired(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    mig = port.migration
    started = mig.timestamps.get(mig.state, mig.timestamps.get("requested", now))
    if mig.state == "requested":
        return _clear(port, "aborted") if now - started > REQUEST_TIMEOUT else NO_CHANGE
    if now - started > COMPLETE_TIMEOUT:
        # Bound there as Nova's activation would (an inactive binding for dest becomes the active one,
        # the source's the inactive one), or as update_port would without one.
        bound = activate(port, mig.chassis) if port.inactive_binding(mig.chassis) is not None \
            else port.replace(binding_chassis=mig.chassis)
        return Step(bound.replace(migration=None), "done", mig)
    return NO_CHANGE


def _nova_changed(port: LogicalPort, chassis: str, now: float, strategy: str) -> Step:
    """Nova prepared the destination (mark the record), or withdrew that before binding the port
    there (its rollback: abort). Run by either end of the migration; the other's run then finds
    nothing to do."""
    mig = port.migration
    if chassis not in (mig.chassis, mig.source):
        return NO_CHANGE
    prepared = nova_prepared(port, mig.chassis)
    if prepared and not mig.prepared:
        new = dataclasses.replace(mig, prepared=True)
        return Step(port.replace(migration=new), "", new)
    if mig.prepared and not prepared and port.binding_chassis != mig.chassis:
        return _clear(port, "aborted")
    return NO_CHANGE


TRANSITIONS = {
    (None, Event.DEST_PLUGGED): _start,
    ("requested", Event.DEST_PLUGGED): _restart,
    ("activated", Event.DEST_PLUGGED): _restart,
    ("switched", Event.DEST_PLUGGED): _restart,
    ("requested", Event.ANNOUNCED): _announced,
    ("requested", Event.SOURCE_UNPLUGGED): _source_unplugged,
    ("activated", Event.SOURCE_UNPLUGGED): _source_unplugged,
    ("requested", Event.DEST_UNPLUGGED): _dest_unplugged,
    ("requested", Event.BINDING_UPDATED): _binding_updated,
    ("activated", Event.BINDING_UPDATED): _binding_updated,
    ("switched", Event.BINDING_UPDATED): _binding_updated,
    ("requested", Event.EXPIRED): _expired,
    ("activated", Event.EXPIRED): _expired,
    ("switched", Event.EXPIRED): _expired,
    ("requested", Event.NOVA_CHANGED): _nova_changed,
}
