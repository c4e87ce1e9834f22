"""The controller's pure core: events in, flow plans out.

The daemon (the shell) owns Redis, OVSDB, the OpenFlow socket and the clock; it
feeds this engine NB events and local facts, and sends the plans it returns.
For every port whose role on this chassis changes, the engine calls the apps'
blueprint interface: remove_local/remove_remote for the old role, then
add_local/add_remote for the new one; the union of every app's answer for
every affected object is one plan, applied as one bundle.

A port's flows are its apps' port programs (controller.templates), run by the
compiled core only: the port's facts are a row of typed columns
(controller.compiler.PortTable, their one owner here), and the core makes the flow
mods of every role change of a plan in one call (its facts changes in two) as rows,
without a Python object per flow. A failure of the core is an error (logged,
counted, kept for status): the port it fails on keeps its flows until its next change.
An app whose port flows do not fit a port program (the security groups) makes them
as rows itself (App.port_rows); the engine keeps the rows each port has installed
and sends the difference, as rows too. The network, router and pipeline flows are
held per owner in FlowState.
"""
from __future__ import annotations

import logging
import traceback
from collections import Counter
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from controller import compiler
from controller.apps.base import App
from controller.flowstate import FlowState, Owner, Plan
from controller.pipeline import check_flow
from controller.templates import PortFacts, PortRole
from controller.view import LOCAL, REMOTE, View, Vif
from dfflow.flowbatch import FLOW_DTYPE, FlowBatch
from dfflow.flows import Flow
from dfflow.models import LogicalPort, LogicalRouter, LogicalSwitch, Model, model_for

LOG = logging.getLogger(__name__)
PORT, SWITCH, ROUTER, STATIC = "port", "switch", "router", "static"
# A port update that changes only these moves the port and nothing else: no other port's flows.
WHERE_FIELDS = frozenset({"binding_chassis", "migration", "version", "inactive_bindings", "binding_profile"})
REVISION_FIELDS = frozenset({"version"})
# NB tables no flow depends on (the chassis' VIF reports for Neutron's port status): never in the view.
IGNORED_TABLES = frozenset({"lport_status"})
ERRORS_KEPT = 20
Place = tuple[PortRole, "str | None"]  # a port's role here and the chassis hosting it
NO_ROWS = np.zeros(0, FLOW_DTYPE)


class _PortChange(NamedTuple):
    """A port whose role or facts here change (its flows made by one compile call with the others')."""
    port_id: str
    row: int  # in the PortTable
    old: PortRole | None
    new: PortRole | None
    known: bool  # its facts were in the table before
    gone: bool  # it has no role here any more: its facts leave the table once compiled
    facts: PortFacts | None = None  # a facts change's new facts (None: a role change over the same facts)


class Engine:
    def __init__(self, chassis: str, apps: Iterable[App]):
        self.view = View(chassis)
        self.apps = list(apps)
        self.flows = FlowState()
        self.stats: Counter[str] = Counter()
        self.errors: list[str] = []  # the last failures, with their tracebacks (status shows them)
        # Every app's port program, compiled into one; the port flows of the others are Python's.
        programs = [app.port_program for app in self.apps if app.port_program is not None]
        self.program = compiler.compile_program(*programs) if programs else None
        self.row_port_apps = [app for app in self.apps if app.port_program is None and app.makes_port_rows]
        self.python_port_apps = [app for app in self.apps if app.port_program is None and not app.makes_port_rows]
        self.app_rows: dict[tuple[str, str], np.ndarray] = {}  # (app, port id) -> the rows it made, installed
        self.table = compiler.PortTable()  # the facts of every port with flows here
        self.placed: dict[str, Place] = {}  # port id -> what its installed flows are for
        self.windows_ending: list[str] = []  # arrivals whose migration ended: the daemon closes them later
        self._closes_due: Counter[str] = Counter()  # port id -> closes handed to the daemon, not yet run
        self._narrowed: set[str] = set()  # ports whose allowing flows the plan being made deletes
        self._narrowed_arriving: set[str] = set()  # ... while they arrive: swept when their window closes
        # What this chassis applied to a port ahead of its own NB write, laid on each NB version of
        # the port until that write settles (controller.migrator sets it).
        self.port_overlay: Callable[[LogicalPort], LogicalPort] | None = None
        # Start-up: events only fill the view until `loaded()` computes every flow once (a first
        # snapshot of N ports, then N-1 tunnels, would otherwise recompute the network per event).
        self.loading = False

    def loaded(self) -> Plan:
        """The start-up's snapshot and tunnels are in: every flow, computed once; events compute again."""
        self.loading = False
        return self.everything()

    # -- inputs ------------------------------------------------------------------
    def nb_event(self, event: dict[str, Any]) -> Plan:
        return self.nb_events([event])

    def nb_events(self, events: Iterable[dict[str, Any]]) -> Plan:
        """A burst of NB events as one plan: each changes the view in its turn, and every owner any
        of them touched is recomputed once, from the view after the last (what applying them one by
        one ends with, as one bundle)."""
        owners: set[Owner] = set()
        for event in events:
            owners |= self.take_event(event)
        return self.plan_owners(owners)

    def take_event(self, event: dict[str, Any]) -> set[Owner]:
        """Put one NB event into the view; the owners whose flows it may change (for `plan_owners`)."""
        if event["table"] in IGNORED_TABLES:
            self.stats["ignored_events"] += 1
            return set()
        if event["action"] == "delete":
            return self._changed(event["table"], event["id"], None)
        obj = event.get("model") or model_for(event["table"]).from_dict(event["object"])  # the bus parsed it
        if self.port_overlay is not None and isinstance(obj, LogicalPort):
            obj = self.port_overlay(obj)
        # what the bus found differing from the version it delivered before, if that is the view's
        changed_from = event.get("changed_from") if obj is event.get("model") else None
        return self._changed(obj.table, obj.id, obj, changed_from)

    def plan_owners(self, owners: set[Owner]) -> Plan:
        """The plan that gives `owners` the flows the view wants now."""
        return self._recompute(owners) if owners else Plan()

    def object_written(self, obj: Model) -> Plan:
        """An NB object as written (the migrator's own step, applied before its NB event arrives)."""
        return self.plan_owners(self._changed(obj.table, obj.id, obj))

    def _changed(self, table: str, obj_id: str, new: Model | None,
                 changed_from: tuple[Model, list[str]] | None = None) -> set[Owner]:
        """`changed_from`: (a version of the object, the fields in which `new` may differ from it)."""
        if table == LogicalPort.table:
            self._track_arrival(obj_id, new)
        # (while loading, no index is asked for: they are built once, when everything is computed)
        needed, flood = (None, 0) if self.loading else (self.view.needed_switches(), self.view.flood_version())
        old = self.view.drop(table, obj_id) if new is None else self.view.put(new)
        if changed_from is not None and changed_from[0] is old:
            differing: frozenset[str] | None = frozenset(changed_from[1])  # (those whose raw values differed)
        else:
            differing = _differing(old, new)
        if differing is not None and differing <= REVISION_FIELDS:
            # The same object but for its NB revision: typically the NB event of a migration step this
            # chassis applied from the migration event. No flow can differ.
            self.stats["unchanged_writes"] += 1
            return set()
        if self.loading:
            self._deferred()
            return set()
        if self.view.needed_switches() != needed:
            return self._everything()
        return self._affected(old, new, self.view.flood_version() != flood, differing)

    def _track_arrival(self, port_id: str, port: Model | None) -> None:
        mig = getattr(port, "migration", None)
        if mig is not None and mig.chassis == self.view.chassis:
            self.view.arrivals.add(port_id)
        elif port_id in self.view.arrivals and port_id not in self.windows_ending:
            self.windows_ending.append(port_id)

    def take_windows_ending(self) -> list[str]:
        """Ports whose arrival window the daemon closes ARRIVAL_WINDOW from now (arrival_window_closed)."""
        ending, self.windows_ending = self.windows_ending, []
        self._closes_due.update(ending)
        return ending

    def arrival_window_closed(self, port_id: str) -> Plan:
        """The port's migration here ended a while ago: its connections are this chassis' own now.

        Only the port's last close closes it: a close handed out for an earlier migration (the port
        left and came back since) would end the new arrival's window early."""
        self._closes_due[port_id] -= 1
        if self._closes_due[port_id] > 0:
            return Plan()
        del self._closes_due[port_id]
        port = self.view.port(port_id)
        mig = port.migration if port is not None else None
        if mig is not None and mig.chassis == self.view.chassis:
            return Plan()  # migrating here again meanwhile
        self.view.arrivals.discard(port_id)
        if self.loading:
            return self._deferred()
        plan = self._recompute({(PORT, port_id, "")})
        plan.arrived.add(port_id)
        if port_id in self._narrowed_arriving:
            self._narrowed_arriving.discard(port_id)
            plan.narrowed.add(port_id)
        return plan

    def zones_lost(self) -> None:
        """The switch came back holding none of our flows (ovs-vswitchd restarted): with a userspace datapath its
        conntrack zones lost every connection, so every local port is treated as arriving here again, its
        established TCP admitted for the arrival window (windows_ending), as after a migration. The port flows
        this changes are made and kept as installed: the caller sends everything (desired_plan)."""
        ports = [p.id for p in self.view.ports() if self.view.role(p) == LOCAL]
        for port_id in ports:
            self.view.arrivals.add(port_id)
            if port_id not in self.windows_ending:
                self.windows_ending.append(port_id)
        self.commit(self._recompute({(PORT, port_id, "") for port_id in ports}))

    def vif_online(self, vif: Vif) -> Plan:
        if self.view.vifs.get(vif.iface_id) == vif:
            return Plan()
        if self.loading:
            self.view.set_vif(vif)
            return self._deferred()
        needed = self.view.needed_switches()
        self.view.set_vif(vif)
        return self._recompute(self._affected_by_port_id(vif.iface_id, needed))

    def vif_offline(self, iface_id: str) -> Plan:
        needed = None if self.loading else self.view.needed_switches()
        if self.view.remove_vif(iface_id) is None:
            return Plan()
        if needed is None:
            return self._deferred()
        return self._recompute(self._affected_by_port_id(iface_id, needed))

    def tunnels_changed(self, tunnels: dict[str, int]) -> Plan:
        if tunnels == self.view.tunnels:
            return Plan()
        self.view.set_tunnels(tunnels)
        return self._deferred() if self.loading else self._recompute(self._everything())

    def _deferred(self) -> Plan:
        self.stats["events_while_loading"] += 1
        return Plan()

    def everything(self) -> Plan:
        """Recompute every owner: start-up, and a check that nothing drifted."""
        return self._recompute(self._everything())

    def desired(self) -> dict[tuple, Flow]:
        """Every flow this chassis wants, by key (reconcile, status, tests)."""
        return {f.key: f for f in self.port_flows()} | self.flows.all_flows()

    def desired_plan(self) -> Plan:
        """Every flow this chassis wants, as one plan of adds for a switch that holds none of ours: the
        port flows as the compiled core's rows (not made into Flows to be compared), the others after
        them (a flow of both by key is the others', as in `desired`)."""
        rows = np.ascontiguousarray(self._port_rows())
        plan = Plan(adds=list(self.flows.all_flows().values()))
        if len(rows):
            plan.rows = [(FlowBatch.of_rows(rows[:0]), FlowBatch.of_rows(rows))]
        return plan

    def port_flows(self) -> list[Flow]:
        """The flows the compiled core made for the ports' programs, as they are installed."""
        return compiler.flows_of_rows(self._port_rows())

    def flow_cookies(self) -> list[int]:
        """The cookie of every flow this chassis wants (status), without making the port flows."""
        rows = self._port_rows()
        return (rows["cookie"][compiler.distinct_keys(rows)].tolist()
                + [f.cookie for f in self.flows.all_flows().values()])

    def _port_rows(self) -> Any:
        placed = [] if self.program is None else [(self.table.index[p], role) for p, (role, _) in self.placed.items()]
        return np.concatenate([compiler.role_rows(self.program, self.table, placed), *self.app_rows.values()])

    def commit(self, plan: Plan) -> None:
        self.flows.commit(plan)

    # -- what an event touches ------------------------------------------------------
    def _affected(self, old: Model | None, new: Model | None, flood_changed: bool = True,
                  differing: frozenset[str] | None = None) -> set[Owner]:
        """`differing`: the fields in which `old` and `new` differ (None: not two versions of one object)."""
        obj = new or old
        if isinstance(new, LogicalPort) and differing is not None and differing <= WHERE_FIELDS:
            # A migration step or a binding change: the port itself, and its network's flooding if
            # that changed (not when the port moves between two chassis that host others of its ports).
            return {(PORT, new.id, ""), (SWITCH, new.lswitch, "")} if flood_changed else {(PORT, new.id, "")}
        if isinstance(obj, LogicalPort) and (old is None or new is None):
            # A port created or deleted: its own flows and its network's. No other port's flows depend on
            # it but through security groups (below): a start-up's resync of a network of N ports costs N
            # port computations, not N^2.
            return {(PORT, obj.id, ""), (SWITCH, obj.lswitch, "")} | self._filtered_by_membership(old, new)
        if isinstance(obj, LogicalPort):
            switches = {p.lswitch for p in (old, new) if p is not None}
            return self._switches_and_their_ports(switches) | self._filtered_by_membership(old, new)
        if isinstance(obj, LogicalSwitch):
            return self._switches_and_their_ports({obj.id})
        if obj is not None and obj.table == "chassis":
            return set()  # the daemon turns chassis into tunnels; tunnels_changed recomputes
        return self._everything()  # subnets, routers, floating IPs: rare, and they touch many objects

    def _filtered_by_membership(self, old: LogicalPort | None, new: LogicalPort | None) -> set[Owner]:
        """A port's groups or addresses changed: the local ports whose security-group flows may name
        them (a rule's remote group expands into its members' addresses)."""
        if _membership(old) == _membership(new):
            return set()
        return {(PORT, p.id, "") for p in self.view.ports() if p.security_groups and self.view.role(p) == LOCAL}

    def _affected_by_port_id(self, port_id: str, needed_before: frozenset[str]) -> set[Owner]:
        if self.view.needed_switches() != needed_before:
            return self._everything()
        port = self.view.port(port_id)
        if port is None:
            return set()
        return self._switches_and_their_ports({port.lswitch})

    def _switches_and_their_ports(self, switches: set[str]) -> set[Owner]:
        owners: set[Owner] = set()
        for switch_id in switches:
            owners.add((SWITCH, switch_id, ""))
            owners |= {(PORT, p.id, "") for p in self.view.ports_on(switch_id)}
        # a port deleted from the view still has installed flows: include it too
        owners |= {(PORT, port_id, "") for port_id in self.placed if self.view.port(port_id) is None}
        return owners

    def _everything(self) -> set[Owner]:
        owners: set[Owner] = {(STATIC, "", "")}
        owners |= {(SWITCH, s, "") for s in self.view.objects[LogicalSwitch.table]}
        owners |= {(ROUTER, r, "") for r in self.view.objects[LogicalRouter.table]}
        owners |= {(PORT, p.id, "") for p in self.view.ports()}
        owners |= {(kind, obj_id, "") for _, kind, obj_id in self.flows.installed}  # deleted objects
        owners |= {(PORT, port_id, "") for port_id in self.placed}
        return owners

    # -- recomputation -----------------------------------------------------------
    def _recompute(self, targets: set[Owner]) -> Plan:
        ordered = sorted(targets)
        changes, placed, failed = self._compile_ports([obj_id for kind, obj_id, _ in ordered if kind == PORT])
        rows: list[tuple[FlowBatch, FlowBatch]] = []
        wanted: dict[Owner, list[Flow]] = {}
        for kind, obj_id, _ in ordered:
            apps = self.apps
            if kind == PORT:
                if obj_id in failed:
                    continue  # the port keeps its flows (and its place) until its next change
                apps = self.python_port_apps
                rows += self._app_port_rows(obj_id)
            for app in apps:
                owner = (app.name, kind, obj_id)
                try:
                    wanted[owner] = [check_flow(f) for f in self._flows_for(app, kind, obj_id)]
                except Exception:
                    # One bad object must not stop the others: keep its current flows, count it.
                    self._failed("app_errors", f"app {app.name} failed computing flows for {kind} {obj_id}")
                    wanted[owner] = self.flows.flows_of(owner)
        plan = self.flows.plan(wanted)
        plan.changes, plan.rows = changes, rows
        plan.moved = {port_id for port_id, place in placed.items() if self._place(port_id, place)}
        narrowed, self._narrowed = self._narrowed, set()
        self._narrowed_arriving |= narrowed & self.view.arrivals
        plan.narrowed = narrowed - self.view.arrivals
        return plan

    def _failed(self, counter: str, what: str) -> None:
        self.stats[counter] += 1
        LOG.exception("%s", what)
        self.errors = (self.errors + [f"{what}: {traceback.format_exc()}"])[-ERRORS_KEPT:]

    def _compile_ports(self, port_ids: list[str]) -> tuple[list[compiler.ChangeRows],
                                                          dict[str, Place | None], set[str]]:
        """The flow mods of the ports' role and facts changes, made by the compiled core: every role
        change in one call, every facts change in two (before and after). Returns them, where each
        port's flows are now for, and the ports the core failed on (counted and kept in `errors`;
        they keep their flows and places)."""
        rows: list[compiler.ChangeRows] = []
        placed: dict[str, Place | None] = {}
        failed: set[str] = set()
        role_changes: list[_PortChange] = []
        facts_changes: list[_PortChange] = []
        for port_id in port_ids:
            port = self.view.port(port_id)
            if port is not None and self.view.switch(port.lswitch) is None:
                # Its network is in a topic this chassis does not follow (or has not arrived yet).
                self.stats["ports_without_switch"] += 1
                LOG.warning("port %s is on network %s, which this chassis does not know", port.id, port.lswitch)
            role = self.view.port_role(port) if port is not None else None
            placed[port_id] = (role, self.view.location(port)) if role is not None else None
            if self.program is None:
                continue
            old_role = self.placed[port_id][0] if port_id in self.placed else None
            facts = self.view.port_facts(port) if role is not None else None
            old_facts = self.table.facts.get(port_id)
            if old_role == role and old_facts == facts:
                continue
            if old_role is not None and role is not None and old_facts != facts:
                self.stats["port_facts_changed"] += 1
                facts_changes.append(_PortChange(port_id, self.table.index[port_id], old_role, role, True, False, facts))
                continue
            known = port_id in self.table.index
            row = self.table.set(port_id, facts if facts is not None else old_facts)
            role_changes.append(_PortChange(port_id, row, old_role, role, known, facts is None))
        if facts_changes:
            rows += self._compile_together(facts_changes, self._compile_facts_changes, failed)
        if role_changes:
            rows += self._compile_together(role_changes, self._compile_role_changes, failed)
        for port_id in failed:
            placed.pop(port_id, None)
        return [c for c in rows if c], placed, failed  # (a ChangeRows: true if it sends)

    def _compile_role_changes(self, changes: list[_PortChange]) -> compiler.ChangeRows:
        return compiler.compile_port_changes(self.program, self.table, [(c.row, c.old, c.new) for c in changes])

    def _compile_facts_changes(self, changes: list[_PortChange]) -> compiler.ChangeRows:
        return compiler.compile_facts_changes(self.program, self.table,
                                              [(c.port_id, c.facts, c.old, c.new) for c in changes])

    def _compile_together(self, changes: list[_PortChange],
                          compile_: Callable[[list[_PortChange]], compiler.ChangeRows],
                          failed: set[str]) -> list[compiler.ChangeRows]:
        """The ports' changes in one call of the core. If it fails on several, each is compiled
        alone: the error is counted against the ports it fails on, and the others get their flows."""
        try:
            made = [compile_(changes)]
        except Exception:
            if len(changes) == 1:
                self._failed("compiler_errors", f"the compiled core failed computing the flows of port "
                                                f"{changes[0].port_id}")
                failed.add(changes[0].port_id)
                if not changes[0].known:
                    self.table.drop(changes[0].port_id)
                return []
            LOG.warning("the compiled core failed on %d ports together: compiling each alone", len(changes),
                        exc_info=True)
            before = len(failed)
            made = [rows for change in changes for rows in self._compile_together([change], compile_, failed)]
            if len(failed) == before:
                self._failed("compiler_errors", f"the compiled core failed on {len(changes)} ports together, "
                                                "though on none alone")
            return made
        if made[0].key_conflicts:
            self._flag_key_conflicts(changes, made[0].key_conflicts)
        for change in changes:
            if change.gone:
                self.table.drop(change.port_id)
            self.stats["compiled_ports"] += 1
        return made

    def _flag_key_conflicts(self, changes: list[_PortChange], conflicts: int) -> None:
        """The ports' programs made different flows under one flow key (bad facts, e.g. two ports
        with one MAC on a network): the switch keeps the later, so it is an error (counted, kept
        for status), not a silent choice."""
        what = (f"the flows of port(s) {', '.join(sorted(c.port_id for c in changes))}: {conflicts} flow(s) with "
                "the key (table, priority, match) of another, different one; the switch keeps the later")
        self.stats["flow_key_conflicts"] += conflicts
        LOG.error("%s", what)
        self.errors = (self.errors + [what])[-ERRORS_KEPT:]

    def _app_port_rows(self, port_id: str) -> list[tuple[FlowBatch, FlowBatch]]:
        """The flow mods of the rows the apps without a port program make for the port: what they
        make now against what it has installed. An app's failure is an error (counted, kept for
        status): the port keeps that app's flows until its next change."""
        port = self.view.port(port_id)
        changes = []
        for app in self.row_port_apps:
            installed = (app.name, port_id)
            try:
                rows = app.port_rows(port, self.view) if port is not None else NO_ROWS
                dels, adds = compiler.diff_rows(self.app_rows.get(installed, NO_ROWS), rows)
            except Exception:
                self._failed("app_errors", f"app {app.name} failed computing flows for port {port_id}")
                continue
            if len(rows):
                self.app_rows[installed] = rows
            else:
                self.app_rows.pop(installed, None)
            if len(dels) or len(adds):
                changes.append((FlowBatch.of_rows(dels), FlowBatch.of_rows(adds)))
            if len(dels) and len(rows) and app.narrows(dels):  # (no rows left: not filtered here any more)
                self._narrowed.add(port_id)
        return changes

    def _place(self, port_id: str, place: Place | None) -> bool:
        """Record what the port's installed flows are for; whether its role or location changed."""
        before = self.placed.pop(port_id, None)
        if place is not None:
            self.placed[port_id] = place
        was, now = _kind_and_where(before), _kind_and_where(place)
        if was == now:
            return False
        self.stats[f"port_{was[0]}_to_{now[0]}"] += 1
        return True

    def _flows_for(self, app: App, kind: str, obj_id: str) -> list[Flow]:
        if kind == STATIC:
            return app.static_flows()
        if kind == SWITCH:
            switch = self.view.switch(obj_id)
            return app.switch_flows(switch, self.view) if switch is not None else []
        if kind == ROUTER:
            router = self.view.get(LogicalRouter.table, obj_id)
            return app.router_flows(router, self.view) if router is not None else []
        port = self.view.port(obj_id)
        old_role = _kind_and_where(self.placed.get(obj_id))[0]
        new_role = self.view.role(port) if port is not None else None
        installed = self.flows.flows_of((app.name, kind, obj_id))
        removed: list[Flow] = []
        if old_role == LOCAL:
            removed = app.remove_local_port(port, installed)
        elif old_role == REMOTE:
            removed = app.remove_remote_port(port, installed)
        added: list[Flow] = []
        if new_role == LOCAL:
            added = app.add_local_port(port, self.view)
        elif new_role == REMOTE:
            added = app.add_remote_port(port, self.view)
        # What the app did not name for removal stays, unless the new role re-declares its key.
        removed_keys = {f.key for f in removed}
        added_keys = {f.key for f in added}
        kept = [f for f in installed if f.key not in removed_keys and f.key not in added_keys]
        return kept + added


def _kind_and_where(place: Place | None) -> tuple[str | None, str | None]:
    if place is None:
        return None, None
    role, where = place
    return (LOCAL if role.local else REMOTE), where


def _differing(old: Model | None, new: Model | None) -> frozenset[str] | None:
    """The fields in which two versions of an object differ (None: not two versions of one kind)."""
    if old is None or new is None or type(old) is not type(new):
        return None
    after = vars(new)
    return frozenset(name for name, value in vars(old).items() if after[name] != value)


def _membership(port: LogicalPort | None) -> tuple | None:
    """What a port contributes to the remote groups it is a member of."""
    if port is None or not port.security_groups:
        return None
    return tuple(port.security_groups), tuple(port.ips), tuple(port.allowed_address_pairs)

