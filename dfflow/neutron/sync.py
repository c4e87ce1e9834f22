"""The NB db made to match Neutron's database: what differs (drift), and its repair.

`NeutronState` (built by `neutron_state.read` from Neutron's plugins) holds the NB objects Neutron's
resources make, each as the fields Neutron owns; the NB db is compared with it table by table:
- missing: Neutron has it, the NB does not (created);
- drifted: a Neutron-owned field differs (rewritten with `NbClient.put`, which keeps NB-only fields such as a
  port's migration record and activation strategy; deleted and created anew if the field is one the NB
  never changes, such as a port's switch);
- extra: the NB has it, Neutron does not (deleted, compare-and-set on the version seen, so an object
  written meanwhile is left for the next run). The `chassis` table is the controllers' and never touched;
  an `lport_status` is extra only when Neutron has no such port.

Only these tables and `lport_status` are read or written. Repairs delete in reverse reference order, then
create and update in reference order (switches, subnets, security groups, their rules, ports, routers,
floating IPs), so no write refers
to an object not yet there. Nothing here imports Neutron.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Iterable

from dfflow.errors import DfflowError, InUse, NotFound, VersionConflict
from dfflow.models import (FloatingIP, LogicalPort, LogicalRouter, LogicalSwitch, Model, PortStatus,
                           SecurityGroup, SecurityGroupRule, Subnet)
from dfflow.nb.rules import IMMUTABLE
from dfflow.neutron import nb_reset
from dfflow.neutron.nbclient import NbClient

LOG = logging.getLogger(__name__)

# Written in this order, deleted in the reverse one (a later table refers to the earlier ones).
SYNCED: tuple[type[Model], ...] = (LogicalSwitch, Subnet, SecurityGroup, SecurityGroupRule, LogicalPort, LogicalRouter,
                                   FloatingIP)
MODES = ("log", "repair")


@dataclasses.dataclass(frozen=True)
class Wanted:
    """One NB object as Neutron's resource makes it: the fields Neutron owns."""
    model: type[Model]
    id: str
    topic: str
    fields: dict[str, Any]


@dataclasses.dataclass
class NeutronState:
    """What Neutron holds, as NB objects. `tables` are the tables Neutron owns here (without a router
    plugin of dfflow's, routers and floating IPs are not Neutron's to decide and are left alone)."""
    objects: dict[str, dict[str, Wanted]]
    tables: tuple[str, ...]
    refused: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (table, id, reason)

    @classmethod
    def of(cls, wanted: Iterable[Wanted], tables: Iterable[str] | None = None,
           refused: Iterable[tuple[str, str, str]] = ()) -> "NeutronState":
        tables = tuple(tables) if tables is not None else tuple(m.table for m in SYNCED)
        objects: dict[str, dict[str, Wanted]] = {table: {} for table in tables}
        for item in wanted:
            objects[item.model.table][item.id] = item
        return cls(objects, tables, list(refused))


@dataclasses.dataclass
class TableDrift:
    missing: list[Wanted] = dataclasses.field(default_factory=list)
    drifted: list[tuple[Wanted, Model, list[str]]] = dataclasses.field(default_factory=list)  # + changed fields
    extra: list[Model] = dataclasses.field(default_factory=list)
    fixed: int = 0
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (id, error)

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.drifted) + len(self.extra)


@dataclasses.dataclass
class Drift:
    tables: dict[str, TableDrift]
    refused: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    followers_resynced: int | None = None  # set when the NB had lost its history (see nb_reset)

    @property
    def count(self) -> int:
        return sum(t.count for t in self.tables.values())

    @property
    def failed(self) -> int:
        return sum(len(t.failed) for t in self.tables.values()) + len(self.refused)

    def summary(self) -> str:
        lines = [f"{'table':<14}{'missing':>8}{'drifted':>8}{'extra':>8}{'fixed':>8}{'failed':>8}"]
        for table, t in self.tables.items():
            lines.append(f"{table:<14}{len(t.missing):>8}{len(t.drifted):>8}{len(t.extra):>8}{t.fixed:>8}"
                         f"{len(t.failed):>8}")
        return "\n".join(lines)

    def details(self) -> list[str]:
        out = []
        for table, t in self.tables.items():
            out += [f"missing {table} {w.id}" for w in t.missing]
            out += [f"drifted {table} {w.id}: {', '.join(names)}" for w, _, names in t.drifted]
            out += [f"extra {table} {obj.id}" for obj in t.extra]
            out += [f"failed {table} {obj_id}: {error}" for obj_id, error in t.failed]
        out += [f"refused {table} {obj_id}: {reason}" for table, obj_id, reason in self.refused]
        return out


def changed_fields(current: Model, fields: dict[str, Any]) -> list[str]:
    """The Neutron-owned fields whose NB value differs (compared as the NB stores them: normalised)."""
    wanted = type(current).from_dict(current.replace(**fields).to_dict())
    try:
        wanted.check()
    except DfflowError:
        pass  # the NB will refuse it: its repair fails and says why
    stored, normalised = current.to_dict(), wanted.to_dict()
    return sorted(name for name in fields if stored[name] != normalised[name])


def compare(state: NeutronState, nb_objects: dict[str, list[Model]]) -> Drift:
    """The drift between Neutron (`state`) and the NB objects of each table (`nb_objects`)."""
    tables: dict[str, TableDrift] = {}
    for table in state.tables:
        drift = tables[table] = TableDrift()
        wanted = state.objects[table]
        present = {obj.id: obj for obj in nb_objects.get(table, [])}
        for obj_id, item in sorted(wanted.items()):
            current = present.get(obj_id)
            if current is None:
                drift.missing.append(item)
            elif names := changed_fields(current, item.fields) + (["topic"] if current.topic != item.topic else []):
                drift.drifted.append((item, current, names))
        drift.extra = [present[obj_id] for obj_id in sorted(set(present) - set(wanted))]
    if LogicalPort.table in state.tables:  # a status outlives no port; a port's status is the chassis'
        ports = state.objects[LogicalPort.table]
        tables[PortStatus.table] = TableDrift(extra=[s for s in nb_objects.get(PortStatus.table, [])
                                                     if s.id not in ports])
    return Drift(tables, list(state.refused))


def read_nb(nb: NbClient) -> dict[str, list[Model]]:
    return {table: nb.list(table) for table in (*(m.table for m in SYNCED), PortStatus.table)}


def repair(nb: NbClient, drift: Drift) -> Drift:
    """Delete the extra, create the missing and rewrite the drifted NB objects; each failure is logged
    with its traceback and recorded in the drift (`failed`), and the others still go ahead.

    Extras go first (a stale object restored from a backup may hold a MAC or an address a Neutron
    port now has); a delete refused because a drifted object still referred to it is tried again last.
    The NB's revision counter is raised first, and followers of a flushed NB resynchronised last (`nb_reset`)."""
    if not drift.count:
        return drift
    history_lost = nb_reset.raise_revision(nb)
    order = [m.table for m in SYNCED if m.table in drift.tables]
    deletes = [(table, obj, obj in t.extra) for table in [PortStatus.table, *reversed(order)]
               if (t := drift.tables.get(table)) for obj in [*t.extra, *recreated(table, t)]]
    retry = [(table, obj, is_extra) for table, obj, is_extra in deletes
             if not _deleted(nb, drift.tables[table], obj, is_extra, wait_if_in_use=True)]
    for table in order:
        t = drift.tables[table]
        for item in [*t.missing, *(w for w, _, _ in t.drifted)]:
            _attempt(t, table, item.id, lambda item=item: nb.put(item.model, item.id, item.topic, item.fields))
    for table, obj, is_extra in retry:
        _deleted(nb, drift.tables[table], obj, is_extra, wait_if_in_use=False)
    if history_lost:
        drift.followers_resynced = nb_reset.resync_followers(nb)
    return drift


def recreated(table: str, drift: TableDrift) -> list[Model]:
    """Drifted objects whose difference is in a field the NB never changes (their topic, a port's switch,
    a subnet's CIDR ...): deleted, then written anew."""
    fixed_fields = {"topic", *IMMUTABLE.get(table, ())}
    return [current for _, current, names in drift.drifted if fixed_fields & set(names)]


def _deleted(nb: NbClient, drift: TableDrift, obj: Model, is_extra: bool, wait_if_in_use: bool) -> bool:
    """Delete `obj` (a recreated one counts as fixed once written anew); False if it is still in use and
    `wait_if_in_use` (tried again after the writes); any other failure is recorded."""
    try:
        _delete_seen(nb, obj)
        drift.fixed += is_extra
    except InUse as exc:
        if wait_if_in_use:
            return False
        _failed(drift, obj.table, obj.id, exc)
    except Exception as exc:
        _failed(drift, obj.table, obj.id, exc)
    return True


def _delete_seen(nb: NbClient, obj: Model) -> None:
    """Delete the object as it was seen: one written since (a Neutron create racing the sync) stays."""
    async def delete(api: Any) -> None:
        try:
            await api.delete(obj.table, obj.id, version=obj.version)
        except NotFound as exc:
            if (exc.table, exc.id, exc.field) != (obj.table, obj.id, None):
                raise
    nb.run(delete)


def _attempt(drift: TableDrift, table: str, obj_id: str, write: Callable[[], Any]) -> None:
    try:
        write()
        drift.fixed += 1
    except Exception as exc:
        _failed(drift, table, obj_id, exc)


def _failed(drift: TableDrift, table: str, obj_id: str, exc: Exception) -> None:
    if isinstance(exc, VersionConflict):
        drift.failed.append((obj_id, f"changed while syncing, left for the next run ({exc})"))
        LOG.warning("neutron-sync: %s %s changed while syncing; left for the next run", table, obj_id)
    else:
        drift.failed.append((obj_id, str(exc) or type(exc).__name__))
        LOG.error("neutron-sync: repairing %s %s failed", table, obj_id, exc_info=exc)


def run(nb: NbClient, read_neutron: Callable[[], NeutronState], mode: str) -> Drift:
    """Compare the NB db with what Neutron holds; in mode `repair`, also repair what differs.

    The NB is read first: an object Neutron creates meanwhile is then at worst "missing" (and its
    rewrite a no-op), never "extra"."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    nb_objects = read_nb(nb)
    drift = compare(read_neutron(), nb_objects)
    for line in drift.details():
        LOG.warning("neutron-sync: %s", line)
    return repair(nb, drift) if mode == "repair" else drift
